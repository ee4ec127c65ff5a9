# magflow: from raw whole-slide images to magnification-robust foundation models and their reports.
# Wiring only: configuration, validation, rule files and the final targets. Logic lives in src/magflow.
import re

from snakemake.utils import min_version, validate

from magflow.config import load_config

min_version("8.20")


configfile: "config/config.yaml"


# --config strings typed, every schema default filled in, every problem named by its key: once, here
load_config(config, workflow.source_path("workflow/schemas/config.schema.yaml"))


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/sampling.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/embed.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/mad.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/benchmark.smk"
include: "workflow/rules/report.smk"


wildcard_constraints:
    slide_id="|".join(map(re.escape, SLIDE_IDS)),
    tileset="|".join(map(re.escape, TILESETS)) or "[A-Za-z0-9_-]+",
    run="|".join(map(re.escape, RUNS)),
    model="|".join(map(re.escape, MODEL_NAMES)),
    mixer="|".join(map(re.escape, MIXER_RUNS)) or "[^/]+",
    method="|".join(map(re.escape, SLIDE_METHODS)) or "[^/]+",
    benchmark="|".join(map(re.escape, BENCHMARKS)) or "[^/]+",


rule all:
    input:
        preprocess_targets(),
        sampler_jsons(),
        sampler_figures(),
        pretrain_targets(),
        embed_targets(),
        evaluation_targets(),
        mad_targets(),
        aggregate_targets(),
        benchmark_targets(),
    default_target: True
