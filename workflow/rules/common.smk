# Helpers for every stage: the slide sheet (read and validated once) and the target lists.
import os
import sys

import pandas as pd

from snakemake.utils import Paramspace

from magflow.embed.control import CONTROL_KEY, control_name
from magflow.embed.external import external_models
from magflow.embed.labels import sidecar_path
from magflow.aggregate.methods import MIXER_COLUMNS, check_mixer_runs, slide_methods
from magflow.benchmark.config import benchmark_specs
from magflow.aggregate.settings import MILConfig, aggregation_wanted, check_mixer_sweep, check_tasks
from magflow.config import requested_targets
from magflow.errors import ConfigError
from magflow.evaluate.registry import CONTROL_METRICS, METRIC_NAMES
from magflow.evaluate.mad_eval import MadEvalSettings, check_mad_scales
from magflow.evaluate.settings import EvalSettings
from magflow.pretrain.train_config import TrainConfig, check_run_columns
from magflow.pretrain.mad_config import check_mad_runs
from magflow.preemption import ignore_warning_signal
from magflow.pretrain.runs import RUN_COLUMNS, check_runs, is_mad, mad_settings, match_sampler
from magflow.report.names import FIGURES, TABLES
from magflow.sampling.sweep import SWEEP_COLUMNS, check_sweep, sampler_config
from magflow.sheet import read_sheet
from magflow.phantom.phantom import PHANTOM_SHEET_COLUMNS
from magflow.sheet_lines import data_lines, row_lines
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


SLIDE_ENTRIES = read_sheet(config["slides"], extra_columns=[*(config.get("aggregate", {}).get("tasks") or ()),
                                                             *PHANTOM_SHEET_COLUMNS])  # task columns, cross_scale
SLIDES = pd.DataFrame([entry.as_dict() for entry in SLIDE_ENTRIES]).set_index("slide_id", drop=False)
validate(SLIDES.astype(object).where(SLIDES.notna(), None), "../schemas/slides.schema.yaml")
SLIDE_IDS = list(SLIDES.index)


def slide_entry(slide_id):
    return SLIDES.loc[slide_id]


def slide_path(wildcards):
    return slide_entry(wildcards.slide_id)["path"]


def slide_input(wildcards):
    """The slide as a tracked input when it exists or a rule makes it (phantoms). A missing file is not
    an input, so it fails only its own job, with a message naming it, and --keep-going runs the rest."""
    path = slide_path(wildcards)
    return path if path.startswith("results/phantom/") or os.path.exists(path) else []


def slide_mpp(wildcards):
    mpp = slide_entry(wildcards.slide_id)["mpp"]
    return None if pd.isna(mpp) else float(mpp)


def slide_brightfield_check(wildcards):
    return bool(slide_entry(wildcards.slide_id)["brightfield_check"])


def slide_label(wildcards):
    label = slide_entry(wildcards.slide_id)["label"]
    return None if pd.isna(label) else str(label)


def slide_cross_scale(wildcards):
    """The sheet's `cross_scale` column (a phantom's planted cross-scale label), None when empty or absent."""
    return next(e.value("cross_scale") for e in SLIDE_ENTRIES if e.slide_id == wildcards.slide_id)


TILESETS = list(config["tilesets"])


def rule_resources(key, **fixed):
    """The cluster resources of a rule: the entry `key` of config `resources` (the rule's name, or
    `evaluate` for all evaluate_* rules) and `fixed`, the values that the rule's own settings decide (a GPU
    count its command also uses). Keys left out come from the profile's default-resources; CPUs come from
    the rule's threads."""
    chosen = dict(config["resources"].get(key, {}))
    for name, value in fixed.items():
        if chosen.setdefault(name, value) != value:
            raise ConfigError(f"config key 'resources.{key}.{name}': {chosen[name]!r} contradicts {value!r} "
                              f"set by the rule's own settings; remove it from resources.{key}.")
    return chosen


def preprocess_targets():
    return (
        expand(["results/masks/{slide_id}.h5", "results/masks/{slide_id}.qc.png"], slide_id=SLIDE_IDS)
        + ["results/qc/slides.html"]
        + expand("results/tiles/{tileset}/{slide_id}.h5", tileset=TILESETS, slide_id=SLIDE_IDS)
        + expand("results/tiles/{tileset}/manifest.html", tileset=TILESETS)
    )


# -- magnification samplers: one job per row of the sweep TSV ----------------------------------
SAMPLER_SETTINGS = config["samplers"]
_sampler_sweep = pd.read_csv(SAMPLER_SETTINGS["sweep"], sep="\t", comment="#")
check_sweep(_sampler_sweep.to_dict("records"), SAMPLER_SETTINGS, source=SAMPLER_SETTINGS["sweep"],
            lines=data_lines(SAMPLER_SETTINGS["sweep"]))

# Names read like results/samplers/kernel~abs/strategy~cu_maxavg_lam~0.1_mpp~NA.json
SAMPLER_SPACE = Paramspace(
    _sampler_sweep[list(SWEEP_COLUMNS)],
    filename_params=["strategy", "lam", "mpp"],
    single_wildcard="name",
)


def sampler_jsons(kernel=None):
    """The sampler JSONs of the sweep, all or those of one kernel."""
    return [
        f"results/samplers/{name}.json"
        for name, row_kernel in zip(SAMPLER_SPACE.instance_patterns, SAMPLER_SPACE.dataframe["kernel"])
        if kernel is None or row_kernel == kernel
    ]


def sampler_figures():
    """One comparison figure per kernel of the sweep."""
    kernels = SAMPLER_SPACE.dataframe["kernel"].unique()
    return [f"results/samplers/kernel~{k}/comparison.png" for k in kernels]


# -- pretraining runs: one job per row of the runs TSV (strategy x seed) ------------------------------
PRETRAIN = config["pretrain"]
# unknown or out-of-range training keys stop the run before any job, each named (pretrain.train.base_lr)
_TRAIN = TrainConfig.from_config(PRETRAIN["train"])
if PRETRAIN["tileset"] not in config["tilesets"]:
    raise ConfigError(f"pretrain.tileset: '{PRETRAIN['tileset']}' is not a tile set; tilesets: {', '.join(config['tilesets'])}")
_runs = pd.read_csv(PRETRAIN["runs"], sep="\t", comment="#")
_run_lines = row_lines(data_lines(PRETRAIN["runs"]), len(_runs))  # errors name a row by its line in the file
check_runs(_runs.to_dict("records"), source=PRETRAIN["runs"], lines=_run_lines)
RUN_SPACE = Paramspace(_runs[list(RUN_COLUMNS)], filename_params="*", single_wildcard="run")
check_run_columns(_TRAIN, dict(zip(RUN_SPACE.instance_patterns, _runs.to_dict("records"))), PRETRAIN["runs"],
                  lines=_run_lines)
_RUN_SAMPLERS = {
    pattern: list(SAMPLER_SPACE.instance_patterns)[
        match_sampler(row, SAMPLER_SPACE.dataframe.to_dict("records"), SAMPLER_SETTINGS,
                      f"{PRETRAIN['runs']}, line {line}")
    ]
    for line, pattern, row in zip(_run_lines, RUN_SPACE.instance_patterns, _runs.to_dict("records"))
    if not is_mad(row)
}
# strategy `mad` rows (magnification-aware distillation) and `dinov2_mad` rows (its DINOv2-on-the-same-data
# baseline): the pretrain.mad tile set, no sampler
_MAD_RUNS = {p: row for p, row in zip(RUN_SPACE.instance_patterns, _runs.to_dict("records")) if is_mad(row)}
MAD_SETTINGS = dict(PRETRAIN.get("mad") or {})
MAD_TILESET = MAD_SETTINGS.pop("tileset", "mad")
MAD_TRAIN = {**PRETRAIN["train"], **MAD_SETTINGS.pop("train", {})}  # whole keys of pretrain.train replaced
if _MAD_RUNS:
    # unknown or invalid MAD keys, and their training settings, stop the run before any job
    check_mad_runs(MAD_SETTINGS, PRETRAIN["train"], (PRETRAIN.get("mad") or {}).get("train") or {},
                   config["tilesets"], MAD_TILESET)


def run_sampler(wildcards):
    if wildcards.run in _MAD_RUNS:
        return []
    return f"results/samplers/{_RUN_SAMPLERS[wildcards.run]}.json"


def run_mad(wildcards):
    """The MadConfig fields of a `mad` or `dinov2_mad` run, None for a run with a sampler."""
    return mad_settings(_MAD_RUNS[wildcards.run], MAD_SETTINGS) if wildcards.run in _MAD_RUNS else None


def run_train(wildcards):
    """The TrainConfig fields of a run: pretrain.train, with pretrain.mad.train on top for a `mad` run."""
    return MAD_TRAIN if wildcards.run in _MAD_RUNS else PRETRAIN["train"]


def run_seed(wildcards):
    return int(RUN_SPACE.instance(wildcards)["seed"])


def train_stores(wildcards):
    """Self-supervised training sees only the train split, so val/test slides stay unseen."""
    train_ids = [s for s in SLIDE_IDS if SLIDES.loc[s, "split"] == "train"]
    tileset = MAD_TILESET if wildcards.run in _MAD_RUNS else PRETRAIN["tileset"]
    return expand("results/tiles/{tileset}/{slide_id}.h5", tileset=tileset, slide_id=train_ids)


def pretrain_targets():
    return expand("results/models/{run}/model_card.json", run=list(RUN_SPACE.instance_patterns))


# -- embeddings: every slide's stores of one tile set, embedded by each run and each external baseline ---
EMBED = config["embed"]
EXTERNAL_MODELS = external_models(EMBED["external"])  # refuses a model whose files are not all local
if EMBED["tileset"] not in config["tilesets"]:
    raise ConfigError(f"embed.tileset: '{EMBED['tileset']}' is not a tile set; tilesets: {', '.join(config['tilesets'])}")
_clash = sorted(set(EXTERNAL_MODELS) & set(RUN_SPACE.instance_patterns))
if _clash:
    raise ConfigError(f"embed.external: {', '.join(_clash)} is also the name of a pretraining run; rename it")
EMBED_MODELS = list(RUN_SPACE.instance_patterns) + list(EXTERNAL_MODELS)
# Every run's control, {run}~init: its network at initialisation (same architecture and seed), rebuilt from the
# run's model card at embed time, evaluated on the profile families only and drawn dashed beside the run.
CONTROLS = {control_name(run): run for run in RUN_SPACE.instance_patterns}
_clash = sorted(set(EXTERNAL_MODELS) & set(CONTROLS))
if _clash:
    raise ConfigError(f"embed.external: {', '.join(_clash)} is the name of a run's init control; rename it")
MODEL_NAMES = EMBED_MODELS + list(CONTROLS)  # every value of the {model} wildcard
_eval_tiles = config["tilesets"][EMBED["tileset"]]
_window = round(_eval_tiles.get("cell_px", 224) * max(EMBED["mpps"]) / min(_eval_tiles["scales"]))
if EMBED["resample"] == "finest" and _eval_tiles.get("source_px", 224) < _window:
    print(f"Warning: embed.resample 'finest' cuts the {max(EMBED['mpps']):g} mpp view as a {_window} px window of "
          f"the {min(_eval_tiles['scales']):g} mpp scale, but tilesets.{EMBED['tileset']}.source_px is "
          f"{_eval_tiles.get('source_px', 224)}: the coarse mpps will be skipped. Give that tile set source_px >= "
          f"{_window}, or set embed.resample: nearest_scale.", file=sys.stderr)


def embed_model(wildcards):
    """A run's model directory, a control's run, or an external baseline's settings (magflow.embed.model_source)."""
    if wildcards.model in EXTERNAL_MODELS:
        return dict(EMBED["external"][wildcards.model])
    if wildcards.model in CONTROLS:
        return {CONTROL_KEY: f"results/models/{CONTROLS[wildcards.model]}"}
    return f"results/models/{wildcards.model}"


def embed_model_files(wildcards):
    if wildcards.model in EXTERNAL_MODELS:
        return {"weights": EXTERNAL_MODELS[wildcards.model].resolve().files}  # config.json and weights, all local
    if wildcards.model in CONTROLS:  # the run's card holds its training config and seed
        return {"card": f"results/models/{CONTROLS[wildcards.model]}/model_card.json"}
    return {"weights": f"results/models/{wildcards.model}/teacher_backbone.safetensors",
            "card": f"results/models/{wildcards.model}/model_card.json"}


def slide_labels(slide_id):
    """Where a slide's tile labels come from: its sheet `annotation` (label mask or CSV), else a phantom's truth."""
    entry = slide_entry(slide_id)
    if isinstance(entry["annotation"], str) and entry["annotation"]:
        return entry["annotation"]
    if entry["path"].startswith("results/phantom/"):
        return f"results/phantom/{slide_id}.labels.png"
    return None


def embed_label_files(wildcards):
    """Label files as inputs: each mask with its JSON sidecar, each CSV, and embed.label_csv."""
    files = []
    for slide_id in SLIDE_IDS:
        path = slide_labels(slide_id)
        if path and not path.lower().endswith((".csv", ".tsv")):
            files += [path, str(sidecar_path(path))]
        elif path:
            files.append(path)
    return files + ([EMBED["label_csv"]] if EMBED["label_csv"] else [])


def embed_targets():
    return expand("results/embeddings/{model}/{tileset}.h5", model=MODEL_NAMES, tileset=EMBED["tileset"])


# -- benchmarks: every benchmark folder x every model (runs, external models and the runs' controls) -------
# Checked here, before any job: a missing root, mpp folder or label file names the benchmark, the path and
# the expected layout. A `fixture: true` benchmark is written by the benchmark_fixture rule, so not checked.
BENCHMARKS = benchmark_specs(config["benchmarks"], check_paths=True)
BENCHMARK_MODELS = EMBED_MODELS + list(CONTROLS)  # every profile shows each run's control


def benchmark_settings(wildcards):
    """The entry benchmarks.<benchmark> (magflow.benchmark.config.BenchmarkSpec.from_config)."""
    return dict(config["benchmarks"][wildcards.benchmark])


def benchmark_files(wildcards):
    """A fixture's folder (its rule writes it), or the benchmark's label file / patient sheet."""
    spec = BENCHMARKS[wildcards.benchmark]
    return str(spec.root) if spec.fixture else str(spec.patients if spec.layout == "bracs-ms" else spec.labels)


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
EvalSettings.from_config(EVALUATE)  # invalid evaluation settings stop the run before any job
EVAL_METRICS = list(METRIC_NAMES)


def eval_embeddings(wildcards):
    return f"results/embeddings/{wildcards.model}/{EMBED['tileset']}.h5"


def eval_masks():
    """Slide id → label mask (a CSV is no mask): the ground truth that segmentation is scored against."""
    paths = {slide_id: slide_labels(slide_id) for slide_id in SLIDE_IDS}
    return {s: p for s, p in paths.items() if p and not p.lower().endswith((".csv", ".tsv"))}


def eval_mask_files(wildcards):
    return [f for path in eval_masks().values() for f in (path, str(sidecar_path(path)))]


EVAL_CONTEXT = {
    "settings": EVALUATE,
    "sheet_splits": dict(zip(SLIDES["slide_id"], SLIDES["split"])),
    "groups": {s: (None if pd.isna(g) else str(g)) for s, g in zip(SLIDES["slide_id"], SLIDES["group"])},
    "masks": eval_masks(),
}


def evaluation_records():
    return (expand("results/eval/{model}/{metric}.json", model=EMBED_MODELS, metric=EVAL_METRICS)
            + expand("results/eval/{model}/{metric}.json", model=list(CONTROLS), metric=CONTROL_METRICS))


def model_control(model):
    """The control of a run (None for an external baseline)."""
    name = control_name(model)
    return name if name in CONTROLS else None


def control_records(wildcards):
    """The records a model's figures draw its control from: its control's RankMe, probes and RI, if it has one."""
    control = model_control(wildcards.model)
    return expand("results/eval/{model}/{metric}.json", model=control, metric=CONTROL_METRICS) if control else []


def control_eval_dir(wildcards):
    control = model_control(wildcards.model)
    return f"results/eval/{control}" if control else None


def evaluation_figure_files():
    return expand("results/report/{model}/{name}", model=EMBED_MODELS, name=[*FIGURES.values(), TABLES])


def evaluation_targets():
    return (evaluation_records() + evaluation_figure_files()
            + ["results/report/rankme_profiles.png", "results/report/index.html"])


# -- the MAD paper's evaluation: the mad tile set embedded on its own grids by each model, Tables 3-5, Fig 3 ----
MAD_EVAL = MadEvalSettings.from_config(EVALUATE.get("mad"))  # invalid settings stop the run before any job
# on when the tile set it names is configured (a project with only a train tile set has none) and max_models != 0
MAD_EVAL_ON = MAD_EVAL.max_models != 0 and MAD_EVAL.tileset in config["tilesets"]
if MAD_EVAL_ON:
    check_mad_scales(sorted(config["tilesets"][MAD_EVAL.tileset]["scales"], reverse=True),
                     f"tilesets.{MAD_EVAL.tileset}.scales")


def mad_eval_models():
    """The models of the MAD evaluation: MAD runs first (the paper's), then the other runs and the external
    models, evaluate.mad.max_models of them, each run followed by its control."""
    runs = list(RUN_SPACE.instance_patterns)
    order = [r for r in runs if r in _MAD_RUNS] + [r for r in runs if r not in _MAD_RUNS] + list(EXTERNAL_MODELS)
    chosen = order if MAD_EVAL.max_models is None else order[:MAD_EVAL.max_models]
    return [m for model in chosen for m in (model, control_name(model)) if m == model or m in CONTROLS]


# Only slides with a label mask: every score reads labelled tiles (Fig 3 too draws test-slide parents), so a slide
# without one would be embedded for nothing; without any, there is no MAD evaluation.
MAD_SLIDES = [s for s in SLIDE_IDS if s in eval_masks()]
MAD_MODELS = mad_eval_models() if MAD_SLIDES and MAD_EVAL_ON else []


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
# None where the requested targets need no aggregation (e.g. only pretraining): its settings go unchecked
AGG_ENCODER = AGGREGATE["encoder"] if aggregation_wanted(AGGREGATE["encoder"], requested_targets(sys.argv)) else None
MIXER_RUNS = {}
SLIDE_METHODS = {}
AGG_TASKS = []
if AGG_ENCODER is not None:
    if AGG_ENCODER not in EMBED_MODELS:
        raise ConfigError(f"aggregate.encoder: '{AGG_ENCODER}' is neither a pretraining run nor an embed.external "
                          f"baseline; choose one of: {', '.join(EMBED_MODELS)}, or set aggregate.encoder: null (no aggregation)")
    if AGGREGATE["tileset"] not in config["tilesets"]:
        raise ConfigError(f"aggregate.tileset: '{AGGREGATE['tileset']}' is not a tile set; tilesets: {', '.join(config['tilesets'])}")
    AGG_SCALES = sorted(config["tilesets"][AGGREGATE["tileset"]]["scales"], reverse=True)
    if config["tilesets"][AGGREGATE["tileset"]].get("max_tiles_per_scale") is not None:
        raise ConfigError(f"tilesets.{AGGREGATE['tileset']}.max_tiles_per_scale: the region tile set must keep every "
                          "tissue tile (null), or regions miss tiles; use another tile set for aggregate.tileset")
    if not os.path.isfile(AGGREGATE["runs"]):
        raise ConfigError(f"aggregate.runs: {AGGREGATE['runs']} does not exist; write the mixer sweep there (columns "
                          "objective, mask_ratio, context), point aggregate.runs at it, or set aggregate.encoder: null")
    _mixer_runs = pd.read_csv(AGGREGATE["runs"], sep="\t", comment="#")
    MIXER_SPACE = Paramspace(_mixer_runs[list(MIXER_COLUMNS)], filename_params="*", single_wildcard="mixer")
    _mixer_lines = row_lines(data_lines(AGGREGATE["runs"]), len(_mixer_runs))
    MIXER_RUNS = check_mixer_runs(dict(zip(MIXER_SPACE.instance_patterns, _mixer_runs.to_dict("records"))),
                                  AGGREGATE["runs"], lines=_mixer_lines)
    # unknown or out-of-range keys stop the run before any job, named by key or by the sweep's line and column
    check_mixer_sweep(AGGREGATE["pretrain"], MIXER_RUNS, AGGREGATE["runs"], AGGREGATE["t"], AGG_SCALES,
                      lines=_mixer_lines)
    MILConfig.from_config(AGGREGATE["abmil"])
    SLIDE_METHODS = slide_methods(MIXER_RUNS, AGGREGATE["modes"], AGG_SCALES)
    AGG_TASKS = check_tasks(AGGREGATE["tasks"], {e.slide_id: e for e in SLIDE_ENTRIES}, config["slides"])


def task_labels(task):
    """A task's labels from its slide sheet column: slide -> value (None: not in the task)."""
    return {e.slide_id: e.value(task) for e in SLIDE_ENTRIES}


def labelled_slides():
    """Slides with a value in any task's column."""
    return [e.slide_id for e in SLIDE_ENTRIES if any(e.value(task) is not None for task in AGG_TASKS)]


def region_files(slide_ids=None):
    return expand("results/regions/{model}/{slide_id}.h5", model=AGG_ENCODER,
                  slide_id=SLIDE_IDS if slide_ids is None else slide_ids)


def mixer_train(wildcards):
    """aggregate.pretrain with the run's objective, mask ratio and context."""
    return {**AGGREGATE["pretrain"], **MIXER_RUNS[wildcards.mixer]}


def mixer_regions(wildcards):
    """Self-supervised, as the tile encoders: the train split's slides only."""
    return region_files([s for s in SLIDE_IDS if SLIDES.loc[s, "split"] == "train"])


def abmil_inputs(wildcards):
    method = SLIDE_METHODS[wildcards.method]
    inputs = {"regions": region_files(labelled_slides())}
    if method.kind == "mixer":
        inputs["mixer"] = f"results/mixers/{wildcards.model}/{method.mixer}/model_card.json"
    return inputs


def abmil_sheet_splits():
    """The sheet's split column where evaluate.splits says `sheet`, or `auto` and every labelled slide has one."""
    labelled = labelled_slides()
    complete = all(SLIDES.loc[s, "split"] in ("train", "val", "test") for s in labelled)
    mode = EVALUATE.get("splits", "auto")
    return {s: SLIDES.loc[s, "split"] for s in labelled} if mode == "sheet" or (mode == "auto" and complete) else None


def aggregate_targets():
    if AGG_ENCODER is None:
        return []
    return (expand("results/mixers/{model}/{mixer}/model_card.json", model=AGG_ENCODER, mixer=list(MIXER_RUNS))
            + ["results/report/abmil_auroc.html", "results/report/abmil_design.png"])
