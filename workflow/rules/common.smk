# Look-ups for every stage: the plan (magflow.plan, every decision made and checked once) read by the rules.
import sys

from magflow.config import requested_targets
from magflow.embed.labels import sidecar_path
from magflow.evaluate.registry import CONTROL_METRICS, METRIC_NAMES
from magflow.plan import build_plan
from magflow.plan import rule_resources as plan_rule_resources
from magflow.plan.slides import is_mask
from magflow.preemption import ignore_warning_signal
from magflow.report.names import FIGURES, TABLES
from magflow.writable import check_writable, folder_problems

# Every output goes under results/ and logs/: a run stops before any job when they cannot be written;
# a dry run (snakemake -n) writes nothing, so it only warns.
OUTPUT_FOLDERS = ["results", "logs"]
if workflow.is_main_process:
    for _problem in folder_problems(OUTPUT_FOLDERS):
        print(f"magflow: warning: cannot write the outputs: {_problem}", file=sys.stderr)


onstart:
    check_writable(OUTPUT_FOLDERS)


# Slurm's warning signal (profiles/slurm, "Pre-emption") reaches every process of a job step. Snakemake,
# the shell that runs a job's script, and scripts that cannot checkpoint ignore it; the training loops
# install their own handler, checkpoint and exit.
ignore_warning_signal()


def rule_resources(key, **fixed):
    """config `resources.<key>`, checked against what the rule itself fixes (magflow.plan.rule_resources)."""
    return plan_rule_resources(config["resources"], key, **fixed)


PLAN = build_plan(config, requested_targets(sys.argv))
for _warning in PLAN.warnings:
    print(f"Warning: {_warning}", file=sys.stderr)
validate(PLAN.slides.table(), "../schemas/slides.schema.yaml")

# -- slides ----------------------------------------------------------------------------------------------
SLIDE_IDS = PLAN.slides.ids
TILESETS = list(config["tilesets"])


def slide_entry(wildcards):
    return PLAN.slides.entry(wildcards.slide_id)


def slide_path(wildcards):
    return slide_entry(wildcards).path


def slide_input(wildcards):
    return PLAN.slides.tracked_input(wildcards.slide_id) or []


def slide_mpp(wildcards):
    return slide_entry(wildcards).mpp


def slide_brightfield_check(wildcards):
    return slide_entry(wildcards).brightfield_check


def slide_label(wildcards):
    return slide_entry(wildcards).value("label")


def slide_cross_scale(wildcards):
    """The sheet's `cross_scale` column (a phantom's planted cross-scale label), None when empty or absent."""
    return slide_entry(wildcards).value("cross_scale")


def preprocess_targets():
    return (
        expand(["results/masks/{slide_id}.h5", "results/masks/{slide_id}.qc.png"], slide_id=SLIDE_IDS)
        + ["results/qc/slides.html"]
        + expand("results/tiles/{tileset}/{slide_id}.h5", tileset=TILESETS, slide_id=SLIDE_IDS)
        + expand("results/tiles/{tileset}/manifest.html", tileset=TILESETS)
    )


# -- magnification samplers: one job per row of the sweep TSV ----------------------------------
# Names read like results/samplers/kernel~abs/strategy~cu_maxavg_lam~0.1_mpp~NA.json
SAMPLERS = PLAN.runs.samplers


def sampler_jsons(kernel=None):
    """The sampler JSONs of the sweep, all or those of one kernel."""
    return expand("results/samplers/{name}.json", name=PLAN.runs.sampler_names(kernel))


def sampler_figures():
    """One comparison figure per kernel of the sweep."""
    return expand("results/samplers/kernel~{kernel}/comparison.png", kernel=PLAN.runs.kernels())


# -- pretraining runs: one job per row of the runs TSV (strategy x seed) ------------------------------
PRETRAIN = config["pretrain"]
RUNS = PLAN.runs.runs


def run_sampler(wildcards):
    sampler = RUNS[wildcards.run].sampler
    return f"results/samplers/{sampler}.json" if sampler else []


def run_mad(wildcards):
    """The MadConfig fields of a `mad` or `dinov2_mad` run, None for a run with a sampler."""
    return RUNS[wildcards.run].mad


def run_train(wildcards):
    """The TrainConfig fields of a run: pretrain.train, with pretrain.mad.train on top for a `mad` run."""
    return RUNS[wildcards.run].train


def run_seed(wildcards):
    return RUNS[wildcards.run].seed


def train_stores(wildcards):
    """Self-supervised training sees only the train split, so val/test slides stay unseen."""
    return expand("results/tiles/{tileset}/{slide_id}.h5", tileset=RUNS[wildcards.run].tileset,
                  slide_id=PLAN.slides.train_ids())


def pretrain_targets():
    return expand("results/models/{run}/model_card.json", run=list(RUNS))


# -- embeddings: every slide's stores of one tile set, embedded by each run and each external baseline ---
EMBED = config["embed"]
MODELS = PLAN.models
EMBED_MODELS = MODELS.embed_models
# Every run's control, {run}~init: its network at initialisation (same architecture and seed), rebuilt from the
# run's model card at embed time, evaluated on the profile families only and drawn dashed beside the run.
CONTROLS = MODELS.controls
MODEL_NAMES = MODELS.names  # every value of the {model} wildcard


def embed_model(wildcards):
    """A run's model directory, a control's run, or an external baseline's settings (magflow.embed.model_source)."""
    return MODELS.source(wildcards.model)


def embed_model_files(wildcards):
    return MODELS.files(wildcards.model)


def label_files(paths):
    """Label files as inputs: each mask with its JSON sidecar, each CSV."""
    return [f for path in paths if path for f in ((path, str(sidecar_path(path))) if is_mask(path) else (path,))]


def embed_label_files(wildcards):
    return label_files(PLAN.slides.label_sources().values()) + ([EMBED["label_csv"]] if EMBED["label_csv"] else [])


def embed_targets():
    return expand("results/embeddings/{model}/{tileset}.h5", model=MODEL_NAMES, tileset=EMBED["tileset"])


# -- benchmarks: every benchmark folder x every model (runs, external models and the runs' controls) -------
BENCHMARKS = PLAN.benchmarks
BENCHMARK_MODELS = MODEL_NAMES  # every profile shows each run's control


def benchmark_settings(wildcards):
    """The entry benchmarks.<benchmark> (magflow.benchmark.config.BenchmarkSpec.from_config)."""
    return dict(config["benchmarks"][wildcards.benchmark])


def benchmark_files(wildcards):
    return str(BENCHMARKS[wildcards.benchmark].input_path)


def benchmark_records(wildcards):
    return expand("results/benchmarks/{benchmark}/{model}.json", benchmark=wildcards.benchmark,
                  model=BENCHMARK_MODELS)


def benchmark_panels():
    """Benchmark → its panel (PNG) and table (TSV), as the report index shows them."""
    return {name: {"figure": f"results/report/benchmarks/{name}.png", "table": f"results/report/benchmarks/{name}.tsv"}
            for name in BENCHMARKS}


def benchmark_report_files():
    return [path for panel in benchmark_panels().values() for path in panel.values()]


def benchmark_targets():
    records = expand("results/benchmarks/{benchmark}/{model}.json", benchmark=list(BENCHMARKS),
                     model=BENCHMARK_MODELS)
    return records + expand("results/report/benchmarks/{benchmark}.{ext}", benchmark=list(BENCHMARKS),
                            ext=["png", "html", "tsv"])


# -- evaluation: every embedded model, one job per model and metric family ---------------------------------
EVALUATE = config["evaluate"]
EVAL_METRICS = list(METRIC_NAMES)


def eval_embeddings(wildcards):
    return f"results/embeddings/{wildcards.model}/{EMBED['tileset']}.h5"


# Slide id → label mask (a CSV is no mask): the ground truth that segmentation is scored against
EVAL_MASKS = PLAN.slides.masks()


def eval_mask_files(wildcards):
    return label_files(EVAL_MASKS.values())


EVAL_CONTEXT = {
    "settings": EVALUATE,
    "sheet_splits": PLAN.slides.splits(),
    "groups": PLAN.slides.groups(),
    "masks": EVAL_MASKS,
}


def evaluation_records():
    return (expand("results/eval/{model}/{metric}.json", model=EMBED_MODELS, metric=EVAL_METRICS)
            + expand("results/eval/{model}/{metric}.json", model=list(CONTROLS), metric=CONTROL_METRICS))


def control_records(wildcards):
    """The records a model's figures draw its control from: its control's RankMe, probes and RI, if it has one."""
    control = MODELS.control(wildcards.model)
    return expand("results/eval/{model}/{metric}.json", model=control, metric=CONTROL_METRICS) if control else []


def control_eval_dir(wildcards):
    control = MODELS.control(wildcards.model)
    return f"results/eval/{control}" if control else None


def evaluation_figure_files():
    return expand("results/report/{model}/{name}", model=EMBED_MODELS, name=[*FIGURES.values(), TABLES])


def evaluation_targets():
    return (evaluation_records() + evaluation_figure_files()
            + ["results/report/rankme_profiles.png", "results/report/index.html"])


# -- the MAD paper's evaluation: the mad tile set embedded on its own grids by each model, Tables 3-5, Fig 3 ----
MAD_EVAL = PLAN.mad.settings
MAD_SLIDES = PLAN.mad.slides
MAD_MODELS = PLAN.mad.models


def mad_tables_files():
    """What the mad_report rule writes (none without a model to evaluate)."""
    if not MAD_MODELS:
        return []
    return [f"results/report/mad_{name}" for name in ("tables.html", "tables.tsv", "table3.tsv", "table5.tsv")]


def mad_targets():
    return (expand("results/mad/{model}/mad.json", model=MAD_MODELS)
            + expand("results/report/{model}/mad_pca.png", model=MAD_MODELS) + mad_tables_files())


# -- region aggregation: regions of one frozen tile encoder, mixer runs (objective x r x c), AB-MIL --------
AGGREGATE = config["aggregate"]
AGG_ENCODER = PLAN.aggregate.encoder  # None where the requested targets need no aggregation
AGG_SCALES = PLAN.aggregate.scales
MIXER_RUNS = PLAN.aggregate.mixer_runs
SLIDE_METHODS = PLAN.aggregate.methods
AGG_TASKS = PLAN.aggregate.tasks
LABELLED_SLIDES = PLAN.aggregate.labelled_slides(PLAN.slides)


def region_files(slide_ids):
    return expand("results/regions/{model}/{slide_id}.h5", model=AGG_ENCODER, slide_id=slide_ids)


def mixer_train(wildcards):
    """aggregate.pretrain with the run's objective, mask ratio and context."""
    return {**AGGREGATE["pretrain"], **MIXER_RUNS[wildcards.mixer]}


def mixer_regions(wildcards):
    """Self-supervised, as the tile encoders: the train split's slides only."""
    return region_files(PLAN.slides.train_ids())


def abmil_inputs(wildcards):
    method = SLIDE_METHODS[wildcards.method]
    inputs = {"regions": region_files(LABELLED_SLIDES)}
    if method.kind == "mixer":
        inputs["mixer"] = f"results/mixers/{wildcards.model}/{method.mixer}/model_card.json"
    return inputs


def aggregate_targets():
    if AGG_ENCODER is None:
        return []
    return (expand("results/mixers/{model}/{mixer}/model_card.json", model=AGG_ENCODER, mixer=list(MIXER_RUNS))
            + ["results/report/abmil_auroc.html", "results/report/abmil_design.png"])
