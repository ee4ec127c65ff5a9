"""Every training setting (DINOv2 / MAD pretraining, the mixer, AB-MIL) is range-checked before any job runs,
and the error names the config key, or the runs sheet's line and column, that holds the bad value."""

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from magflow.aggregate.settings import MILConfig, MixerTrainConfig, aggregation_wanted, check_mixer_sweep
from magflow.config import check_config, requested_targets
from magflow.errors import ConfigError
from magflow.pretrain.mad_config import check_mad_runs
from magflow.pretrain.train_config import TrainConfig, check_run_columns
from test_workflow import copy_project

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
NAN = math.nan

# (field, bad value): each refused on its own, whatever the other settings
BAD_TRAIN = [
    ("base_lr", -1), ("base_lr", NAN), ("base_lr", math.inf), ("base_lr", "fast"), ("base_lr", [0.001]),
    ("min_lr", -1e-6), ("min_lr", NAN),
    ("student_temp", 0), ("student_temp", NAN), ("teacher_temp", -1), ("teacher_temp", 0),
    ("warmup_teacher_temp", -0.04), ("teacher_temp_warmup_iters", -1),
    ("momentum", 2), ("momentum", -0.1), ("momentum", NAN), ("momentum_end", 1.5),
    ("global_size", 0), ("global_size", -224), ("global_size", 100), ("local_size", 0), ("local_size", 90),
    ("patch_size", 0), ("source_size", 0), ("n_local_crops", -1),
    ("global_crops_scale", [0.0, 1.0]), ("global_crops_scale", [0.5, 1.2]), ("global_crops_scale", [0.9, 0.3]),
    ("local_crops_scale", [NAN, 0.3]), ("local_crops_scale", [0.05]),
    ("clip_grad", -1), ("clip_grad", 0), ("clip_grad", NAN),
    ("layer_decay", 0), ("layer_decay", 1.5), ("layer_decay", -0.9), ("patch_embed_lr_mult", -0.2),
    ("weight_decay", -0.04), ("weight_decay_end", NAN),
    ("batch_size", 0), ("batch_size", 1), ("iterations", 0), ("iterations", 2.5), ("reference_batch", 0),
    ("warmup_iters", -1), ("freeze_last_layer_iters", -1),
    ("drop_path", 1.0), ("drop_path", -0.1), ("reg_tokens", -1),
    ("prototypes", 0), ("head_hidden_dim", 0), ("head_bottleneck_dim", 0),
    ("mask_probability", 1.5), ("mask_ratio", [0.5, 0.1]), ("mask_ratio", [0.1, 1.5]),
    ("ibot_weight", -1), ("koleo_weight", NAN),
    ("seed", -1), ("checkpoint_every", 0), ("log_every", 0), ("num_workers", -1), ("ibot", 1),
]
# rules between fields: validate(), which the workflow runs on the config's blocks
BAD_TRAIN_BUDGET = [
    ({"iterations": 100, "warmup_iters": 101}, "warmup_iters"),
    ({"iterations": 100, "warmup_iters": 0, "teacher_temp_warmup_iters": 200}, "teacher_temp_warmup_iters"),
    ({"iterations": 100, "warmup_iters": 0, "teacher_temp_warmup_iters": 0, "freeze_last_layer_iters": 101},
     "freeze_last_layer_iters"),
    ({"views": "dinov2", "global_size": 224, "source_size": 192}, "source_size"),
    ({"views": "dinov2", "global_size": 96, "local_size": 112, "source_size": 128}, "local_size"),
]
BAD_MIXER = [
    ("base_lr", -1), ("base_lr", 0), ("base_lr", NAN), ("min_lr", -1), ("tau", 0), ("tau", NAN),
    ("mask_ratio", 1.0), ("mask_ratio", NAN), ("context", 0), ("width", 0), ("width", 33), ("depth", 0),
    ("heads", 0), ("mlp_ratio", 0), ("n_cls", 0), ("max_grid", 0), ("decoder_depth", -1), ("decoder_width", 33),
    ("projector_hidden", 0), ("projector_dim", 0), ("contrastive_weight", -1), ("batch_size", 0),
    ("iterations", 0), ("warmup_iters", -1), ("reference_batch", 0), ("weight_decay", -0.05),
    ("betas", [0.9, 1.0]), ("betas", [NAN, 0.95]), ("clip_grad", 0), ("clip_grad", -3), ("seed", -1),
    ("checkpoint_every", 0), ("log_every", 0), ("num_workers", -1), ("contrastive_loss", "infonce"),
]
BAD_ABMIL = [
    ("lr", -1e-5), ("lr", 0), ("lr", NAN), ("weight_decay", -1), ("label_smoothing", 1.0), ("epochs", 0),
    ("freeze_epochs", -1), ("layer_decay", 0), ("layer_decay", 2), ("groups_per_batch", 0), ("hidden_dim", 0),
    ("attn_dim", 0), ("dropout", 1.0), ("dropout", NAN), ("seeds", []), ("seeds", [0, 0]), ("seeds", [-1]),
    ("test_fraction", 0), ("val_fraction", 0.9), ("aggregator", "mean"), ("attention", "softmax"),
]
BAD_MAD = [("standalone_p", 1.5), ("standalone_p", NAN), ("children", 0), ("transition_weights", [-0.5, 0.5]),
           ("transition_weights", [NAN, 0.5]), ("transition_weights", [0.5, 0.5, 0.5]), ("children", 17)]


def _config(name="config.yaml") -> dict:
    return yaml.safe_load((REPO / "config" / name).read_text())


def _refused(check, key: str) -> str:
    with pytest.raises(ConfigError) as caught:
        check()
    message = str(caught.value)
    assert message.startswith(key) or f"{key}:" in message or f"{key} " in message, message
    return message


@pytest.mark.parametrize("name, value", BAD_TRAIN)
def test_a_bad_training_value_is_refused_naming_its_key(name, value):
    train = {**_config()["pretrain"]["train"], name: value}
    message = _refused(lambda: TrainConfig.from_config(train), f"pretrain.train.{name}")
    assert message.count("\n") == 0  # one line


@pytest.mark.parametrize("values, name", BAD_TRAIN_BUDGET)
def test_a_warm_up_or_view_size_beyond_its_bound_is_refused(values, name):
    _refused(lambda: TrainConfig.from_config(values), f"pretrain.train.{name}")


@pytest.mark.parametrize("name, value", BAD_MIXER)
def test_a_bad_mixer_value_is_refused_naming_its_key(name, value):
    aggregate = _config()["aggregate"]
    runs = {"objective~mem_mask_ratio~0.5_context~3": {"objective": "mem", "mask_ratio": 0.5, "context": 3}}
    pretrain = {**aggregate["pretrain"], name: value}
    where = "aggregate.runs: mixer_runs.tsv, line 2" if name in ("mask_ratio", "context") else f"aggregate.pretrain.{name}"
    if name in ("mask_ratio", "context"):  # sheet columns: the row's value is the one used
        runs = {key: {**row, name: value} for key, row in runs.items()}
        pretrain = aggregate["pretrain"]
    message = _refused(lambda: check_mixer_sweep(pretrain, runs, "mixer_runs.tsv", 3, [2.0, 1.0, 0.5]), where)
    assert name in message


def test_mixer_sweep_rows_are_named_by_line_and_column():
    aggregate = _config()["aggregate"]
    rows = {"a": {"objective": "mem", "mask_ratio": 0.5, "context": 3},
            "b": {"objective": "cmem", "mask_ratio": 0.5, "context": 1}}
    message = _refused(lambda: check_mixer_sweep(aggregate["pretrain"], rows, "config/mixer_runs.tsv", 3,
                                                 [2.0, 1.0, 0.5]), "aggregate.runs")
    assert "config/mixer_runs.tsv, line 3 (mixer run b), column context" in message and ">= aggregate.t 3" in message
    message = _refused(lambda: check_mixer_sweep({**aggregate["pretrain"], "batch_size": 1}, rows,
                                                 "config/mixer_runs.tsv", 3, [2.0, 1.0, 0.5]), "aggregate.pretrain")
    assert "aggregate.pretrain.batch_size" in message and "line 3 (mixer run b)" in message  # CMEM needs 2
    _refused(lambda: check_mixer_sweep({**aggregate["pretrain"], "iterations": 10, "warmup_iters": 20}, rows,
                                       "config/mixer_runs.tsv", 3, [2.0, 1.0, 0.5]), "aggregate.pretrain.warmup_iters")
    _refused(lambda: check_mixer_sweep({**aggregate["pretrain"], "max_grid": 8}, rows, "config/mixer_runs.tsv", 3,
                                       [2.0, 1.0, 0.5]), "aggregate.pretrain.max_grid")  # 3 regions x 4 cells


@pytest.mark.parametrize("name, value", BAD_ABMIL)
def test_a_bad_abmil_value_is_refused_naming_its_key(name, value):
    _refused(lambda: MILConfig.from_config({**_config()["aggregate"]["abmil"], name: value}), f"aggregate.abmil.{name}")


def test_abmil_frozen_epochs_fit_in_the_run():
    _refused(lambda: MILConfig.from_config({"epochs": 2, "freeze_epochs": 3}), "aggregate.abmil.freeze_epochs")


def _mad(config):
    mad = dict(config["pretrain"]["mad"])
    return mad.pop("tileset"), mad.pop("train", {}), mad


@pytest.mark.parametrize("name, value", BAD_MAD)
def test_a_bad_mad_value_is_refused_naming_its_key(name, value):
    config = _config()
    tileset, overrides, mad = _mad(config)
    _refused(lambda: check_mad_runs({**mad, name: value}, config["pretrain"]["train"], overrides,
                                    config["tilesets"], tileset), f"pretrain.mad.{name}")


def test_mad_training_values_are_named_where_they_were_set():
    config = _config()
    tileset, _, mad = _mad(config)
    train = config["pretrain"]["train"]
    _refused(lambda: check_mad_runs(mad, train, {"teacher_temp": -1}, config["tilesets"], tileset),
             "pretrain.mad.train.teacher_temp")
    message = _refused(lambda: check_mad_runs(mad, {**train, "global_size": 448, "source_size": 448}, {},
                                              config["tilesets"], tileset), "pretrain.train.global_size")
    assert "(for the mad runs)" in message and "tilesets.mad.cell_px 224" in message  # MAD never upsamples


def test_a_runs_sheet_column_is_named_by_line_and_column():
    runs = {"kernel~abs_strategy~du_lam~NA_mpp~NA_seed~0": {"kernel": "abs", "strategy": "du", "seed": 0},
            "kernel~abs_strategy~du_lam~NA_mpp~NA_seed~-1": {"kernel": "abs", "strategy": "du", "seed": -1}}
    message = _refused(lambda: check_run_columns(TrainConfig(), runs, "config/pretrain_runs.tsv"), "pretrain.runs")
    assert "config/pretrain_runs.tsv, line 3 (run kernel~abs_strategy~du_lam~NA_mpp~NA_seed~-1), column seed" in message


@pytest.mark.parametrize("name", ["config.yaml", "paper.yaml"])
def test_the_demo_and_paper_configs_pass_every_check(name):
    config = _config() if name == "config.yaml" else _merged(_config(), _config(name))
    check_config(config, SCHEMA)
    pretrain, aggregate = config["pretrain"], config["aggregate"]
    train = TrainConfig.from_config(pretrain["train"])
    tileset, overrides, mad = _mad(config)
    check_mad_runs(mad, pretrain["train"], overrides, config["tilesets"], tileset)
    runs = _sheet(pretrain["runs"])
    check_run_columns(train, {str(i): row for i, row in enumerate(runs)}, pretrain["runs"])
    mixers = {str(i): {"objective": r["objective"], "mask_ratio": float(r["mask_ratio"]), "context": int(r["context"])}
              for i, r in enumerate(_sheet(aggregate["runs"]))}
    scales = config["tilesets"][aggregate["tileset"]]["scales"]
    check_mixer_sweep(aggregate["pretrain"], mixers, aggregate["runs"], aggregate["t"], scales)
    MILConfig.from_config(aggregate["abmil"])


def _merged(base: dict, overlay: dict) -> dict:
    """``overlay`` on ``base`` as Snakemake merges a --configfile: mappings key by key."""
    out = dict(base)
    for key, value in overlay.items():
        out[key] = _merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


def _sheet(path: str) -> list[dict]:
    lines = [line for line in (REPO / path).read_text().splitlines() if line and not line.startswith("#")]
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"))) | ({"seed": int(line.split("\t")[header.index("seed")])}
                                                   if "seed" in header else {}) for line in lines[1:]]


def test_aggregation_is_wanted_only_by_targets_that_need_it():
    encoder = "kernel~abs_strategy~cu_minmax_lam~NA_mpp~NA_seed~0"
    assert aggregation_wanted(encoder, []) and aggregation_wanted(encoder, None)  # the default target: all
    assert aggregation_wanted(encoder, ["all"]) and aggregation_wanted(encoder, ["abmil_table"])
    assert aggregation_wanted(encoder, ["results/report/index.html"])  # the index shows the AB-MIL table
    assert aggregation_wanted(encoder, ["./results/mixers/x/y/model_card.json"])
    assert not aggregation_wanted(encoder, ["results/models/x/model_card.json", "pretrain", "embed"])
    assert not aggregation_wanted(None, [])
    assert requested_targets(["/env/bin/snakemake", "-n", "--cores", "2", "results/a.json", "pretrain"]) == \
        ["results/a.json", "pretrain"]
    assert requested_targets(["/env/bin/snakemake", "--target-jobs", "abmil:model=m,method=cls"]) == ["abmil"]
    assert requested_targets(["/env/bin/snakemake", "-n"]) == [] and requested_targets(["pytest"]) is None


SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def test_snakemake_dry_run_stops_on_a_bad_lr_before_planning(tmp_path):
    root = copy_project(tmp_path)
    result = subprocess.run(SNAKEMAKE + ["-n", "--config", "pretrain={'train': {'base_lr': -1}}"], cwd=root,
                            capture_output=True, text=True, timeout=300)
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "pretrain.train.base_lr: must be >= 0 (0 trains nothing), got -1" in out.splitlines(), out[-3000:]
    assert not re.search(r"^(total|pretrain)\s+\d+$", out, re.M) and "Job stats" not in out  # nothing planned
    assert not (root / "results").exists()


def test_runs_sheet_without_the_encoder_run_plans_pretraining(tmp_path):
    """The default aggregate.encoder names a run; a sheet without it still plans the targets that need no
    aggregation (the default target, which does, still refuses it: test_aggregation_is_wanted...)."""
    root = copy_project(tmp_path)
    (root / "config" / "my_runs.tsv").write_text("kernel\tstrategy\tlam\tmpp\tseed\nabs\tdu\tNA\tNA\t0\n")
    run = "kernel~abs_strategy~du_lam~NA_mpp~NA_seed~0"
    result = subprocess.run(SNAKEMAKE + ["-n", f"results/models/{run}/model_card.json", "--config",
                                         "pretrain={'runs': 'config/my_runs.tsv'}"],
                            cwd=root, capture_output=True, text=True, timeout=300)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", out, re.M))
    assert jobs.get("pretrain") == "1" and "pretrain_mixer" not in jobs, out[-2000:]
