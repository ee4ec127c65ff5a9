"""config/paper.yaml as Snakemake sees it: merged key by key over the demo config (`--configfile`), valid,
with no demo cap or demo size left, its sweeps readable by the workflow's own parsers and its training
settings buildable."""

import copy
import fnmatch
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from snakemake.utils import Paramspace, update_config

from magflow.aggregate.methods import MIXER_COLUMNS, check_mixer_runs
from magflow.aggregate.settings import MILConfig, MixerTrainConfig
from magflow.config import load_config
from magflow.embed.external import external_models
from magflow.errors import ConfigError
from magflow.evaluate.settings import EvalSettings
from magflow.pretrain.mad_config import MadConfig
from magflow.pretrain.runs import RUN_COLUMNS, check_runs, is_mad, match_sampler
from magflow.pretrain.train_config import TrainConfig
from magflow.sampling.sweep import SWEEP_COLUMNS, check_sweep
from magflow.sampling.transforms import pick_source_scale
from magflow.sheet_lines import data_lines
from test_workflow import copy_project

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"

# Settings that are rightly the same in the demo and at paper scale (fnmatch patterns over dotted keys).
# A demo value equal in the merged paper config and not listed here is a demo setting that survived.
SAME_AT_BOTH_SCALES = [
    "slides",                       # the sheet is the user's: --config slides=<sheet>
    "read", "read.*", "tissue", "tissue.*",   # reading and tissue detection (physical units): the defaults
    "phantom.*",                    # only shapes synthetic slides (sheet rows at results/phantom/)
    "tilesets.*.scales", "tilesets.*.cell_px", "tilesets.*.min_tissue", "tilesets.*.seed", "tilesets.*.nested",
    "tilesets.eval.source_px", "tilesets.eval.jpeg_quality", "tilesets.mad.source_px", "tilesets.region.source_px",
    "tilesets.mad.max_tiles_per_scale", "tilesets.region.max_tiles_per_scale",   # null: every tile, both scales
    "samplers.range", "samplers.grid_step", "samplers.du_mpps",
    "pretrain.train.views",                                                      # DINOv2 crops in both
    "pretrain.tileset", "pretrain.mad.tileset", "pretrain.mad.transition_weights", "pretrain.mad.standalone_p",
    "pretrain.mad.children", "pretrain.mad.ibot",                                # the MAD paper's settings
    "embed.tileset", "embed.mpps", "embed.anchor_mpp", "embed.resample", "embed.mean_patch", "embed.label_csv",
    "embed.external",
    "evaluate.splits", "evaluate.seeds", "evaluate.test_fraction", "evaluate.val_fraction",  # the protocol
    "evaluate.hierarchy.*", "evaluate.segmentation.*",
    "evaluate.mad.*",                               # the MAD paper's protocol (Tables 3-5) at both scales
    "evaluate.protocol", "evaluate.rankme.*",       # named protocol and RankMe definition, chosen per study
    "benchmarks",                                   # the user's benchmark folders, none by default
    "aggregate.tileset", "aggregate.encoder", "aggregate.t", "aggregate.modes",
    "aggregate.tasks",                              # the sheet's label columns are the user's: [label] by default
    "resources.tissue_mask.*", "resources.extract_tiles.*", "resources.region_embed.runtime",  # per-slide jobs
]


def load(name: str) -> dict:
    return yaml.safe_load((REPO / "config" / name).read_text())


def merged_config() -> dict:
    """The demo config with --configfile config/paper.yaml on top, merged as Snakemake merges them."""
    config = load("config.yaml")
    update_config(config, load("paper.yaml"))
    return config


def validated(config: dict) -> dict:
    """As the Snakefile does: the one check that types --config strings, fills every default and names each problem."""
    return load_config(copy.deepcopy(config), SCHEMA)


def leaves(node, prefix=""):
    """(dotted key, value) of every leaf; a list or an empty mapping is one leaf."""
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from leaves(value, f"{prefix}{key}.")
    else:
        yield prefix[:-1], node


def read_tsv(path: str) -> pd.DataFrame:
    return pd.read_csv(REPO / path, sep="\t", comment="#")  # as magflow.plan.runs reads the sweeps


@pytest.fixture(scope="module")
def paper() -> dict:
    return validated(merged_config())


def test_paper_config_is_valid_where_the_workflow_checks_it(paper):
    assert paper["pretrain"]["runs"] == "config/paper_runs.tsv"


def test_no_demo_setting_survives_the_merge():
    demo = dict(leaves(load("config.yaml")))
    survived = sorted(key for key, value in leaves(merged_config())
                      if key in demo and demo[key] == value
                      and not any(fnmatch.fnmatchcase(key, pattern) for pattern in SAME_AT_BOTH_SCALES))
    assert not survived, f"demo values left in the paper config; set them in config/paper.yaml: {survived}"


def test_paper_config_stands_alone():
    """paper.yaml over the demo is paper.yaml by itself (schema defaults filled in), but for phantom."""
    over_demo = dict(leaves(validated(merged_config())))
    alone = dict(leaves(validated(load("paper.yaml"))))
    differ = sorted(key for key in over_demo.keys() | alone.keys()
                    if over_demo.get(key, "<absent>") != alone.get(key, "<absent>") and not key.startswith("phantom."))
    assert not differ, f"the paper run depends on the demo config here: {differ}"


def test_only_the_eval_tile_set_is_capped_at_paper_scale(paper):
    assert all(tileset["max_tiles_per_scale"] is None for name, tileset in paper["tilesets"].items() if name != "eval")
    assert paper["tilesets"]["eval"]["max_tiles_per_scale"] >= 1000  # a paper-scale cap, not the demo's


def test_paper_sweeps_parse_with_the_workflows_parsers(paper):
    samplers = read_tsv(paper["samplers"]["sweep"])
    check_sweep(samplers[list(SWEEP_COLUMNS)].to_dict("records"), paper["samplers"], paper["samplers"]["sweep"])

    runs = read_tsv(paper["pretrain"]["runs"])
    rows = runs.to_dict("records")
    lines = data_lines(REPO / paper["pretrain"]["runs"])
    assert len(lines) == len(rows)
    check_runs(rows, source=paper["pretrain"]["runs"], lines=lines)
    for number, row in zip(lines, rows):
        if not is_mad(row):  # every sampling run trains with a sampler of the sweep
            match_sampler(row, samplers.to_dict("records"), paper["samplers"], f"paper_runs.tsv, line {number}")
    run_names = list(Paramspace(runs[list(RUN_COLUMNS)], filename_params="*", single_wildcard="run")
                     .instance_patterns)
    assert len(run_names) == len(set(run_names)) == 36 and sum(map(is_mad, rows)) == 6
    assert sorted(str(r["strategy"]) for r in rows if is_mad(r)) == ["dinov2_mad"] * 3 + ["mad"] * 3
    assert paper["aggregate"]["encoder"] in run_names

    mixers = read_tsv(paper["aggregate"]["runs"])
    space = Paramspace(mixers[list(MIXER_COLUMNS)], filename_params="*", single_wildcard="mixer")
    typed = check_mixer_runs(dict(zip(space.instance_patterns, mixers.to_dict("records"))), paper["aggregate"]["runs"])
    assert len(typed) == 6
    for row in typed.values():
        assert MixerTrainConfig.from_dict({**paper["aggregate"]["pretrain"], **row}).width == 1536
    mil = MILConfig.from_dict(paper["aggregate"]["abmil"])
    # the paper's aggregator: Eq. 7 over the encoder outputs, attention hidden size 16, 32 groups per batch
    assert (mil.aggregator, mil.projection_dim, mil.attn_dim, mil.groups_per_batch, len(mil.seeds)) == \
        ("paper-eq7", None, 16, 32, 5)
    assert MixerTrainConfig.from_dict(paper["aggregate"]["pretrain"]).contrastive_loss == "paper-eq5"
    EvalSettings.from_config(paper["evaluate"])
    external_models(paper["embed"]["external"])


def test_paper_training_is_vit_s14_with_dinov2_views(paper):
    config = TrainConfig.from_dict(paper["pretrain"]["train"])
    assert config.arch == "vit_small_patch14_dinov2" and config.patch_size == 14
    assert config.global_size % 14 == 0 and config.local_size % 14 == 0
    assert (config.global_size, config.local_size, config.n_local_crops) == (224, 98, 8)
    assert dict(config.arch_kwargs) == {"embed_dim": 384, "depth": 12, "num_heads": 6}  # no demo size left
    assert config.views == "dinov2" and config.source_size == 256
    assert tuple(config.global_crops_scale) == (0.35, 1.0) and tuple(config.local_crops_scale) == (0.05, 0.35)
    assert config.lr(80 * paper["pretrain"]["gpus"]) == pytest.approx(1e-3)  # the paper's lr at its batch 320


def test_mad_runs_keep_their_own_backbone_and_views(paper):
    mad = dict(paper["pretrain"]["mad"])
    MadConfig.from_dict({k: v for k, v in mad.items() if k not in ("tileset", "train")})
    config = TrainConfig.from_dict({**paper["pretrain"]["train"], **mad["train"]})  # as magflow.plan.runs builds it
    assert (config.arch, config.patch_size, config.reg_tokens) == ("vit_base_patch16_224", 16, 4)
    assert (config.global_size, config.local_size) == (224, 96) and dict(config.arch_kwargs) == {}
    assert config.views == "exact"


def test_train_tiles_serve_dinov2_sources_at_every_mpp_from_the_next_finer_scale(paper):
    """Every target t in the sampler range is cut from the finest-not-coarser standard scale s <= t: a
    256 px source is a window of 256 t/s < 512 px, so 512 px stored patches serve it and 448 would not."""
    train = paper["tilesets"]["train"]
    scales = sorted(train["scales"])
    lo, hi = paper["samplers"]["range"]
    tol = 1e-9  # scales are nominal: a target within tol below a scale counts as that scale
    targets = list(np.linspace(lo, hi, 351)) + [s * (1 - 2 * tol) for s in scales if lo < s <= hi]  # just below
    size = paper["pretrain"]["train"]["source_size"]
    for t in targets:
        assert pick_source_scale(t, scales, out_size=size, source_size=train["source_px"], tol=tol) == \
            max(s for s in scales if s <= t), t
    with pytest.raises(ConfigError, match="no source scale"):
        pick_source_scale(2.0 * (1 - 2 * tol), scales, out_size=size, source_size=448, tol=tol)


def test_backbones_build_with_layerscale_and_their_sizes(paper):
    torch = pytest.importorskip("torch")
    from magflow.pretrain.backbone import build_backbone

    train = TrainConfig.from_dict(paper["pretrain"]["train"])
    vit = build_backbone(train.arch, img_size=train.global_size, patch_size=train.patch_size,
                         reg_tokens=train.reg_tokens, **train.arch_kwargs).vit
    assert (vit.embed_dim, len(vit.blocks), vit.blocks[0].attn.num_heads) == (384, 12, 6)
    assert vit.patch_embed.patch_size == (14, 14) and vit.pos_embed.shape[1] == 1 + (224 // 14) ** 2
    assert torch.allclose(vit.blocks[0].ls1.gamma, torch.full((384,), 1e-5))  # LayerScale, init 1e-5
    mad = TrainConfig.from_dict({**paper["pretrain"]["train"], **paper["pretrain"]["mad"]["train"]})
    vit = build_backbone(mad.arch, img_size=mad.global_size, patch_size=mad.patch_size, reg_tokens=mad.reg_tokens,
                         **mad.arch_kwargs).vit
    assert (vit.embed_dim, len(vit.blocks), vit.num_reg_tokens, vit.patch_embed.patch_size) == (768, 12, 4, (16, 16))


@pytest.mark.slow
def test_dry_run_with_the_paper_overlay_plans_the_paper_sweep(tmp_path):
    """`snakemake -n --configfile config/paper.yaml` in a copy of the project (the demo's phantom sheet):
    the workflow's own parse-time checks pass and every sweep row becomes a job on a GPU node."""
    result = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", "config/paper.yaml",
                             "--profile", "profiles/slurm"], cwd=copy_project(tmp_path), capture_output=True,
                            text=True, timeout=300)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    jobs = {name: int(count) for name, count in re.findall(r"^(\w+)\s+(\d+)$", out, re.M)}
    # 33 runs (30 sampling, 3 MAD); 6 mixers; AB-MIL: 6 mixers x 2 modes, the random mixer on each of 3 scales
    # and on all x 2 modes, 3 scales and all on tiles
    expected = {"optimize_sampler": 18, "pretrain": 36, "pretrain_mixer": 6, "abmil": 24}
    assert {name: jobs.get(name) for name in expected} == expected, out[-2500:]
    warnings = [line for line in out.splitlines() if line.startswith("Warning")]
    assert not warnings, warnings  # e.g. a tile set too small for the views the paper settings cut from it
    pretrain = re.search(r"rule pretrain:\n(?:.*\n)*?\s+resources: (.*)", out).group(1)
    assert "gpu=4" in pretrain and "slurm_partition=gpu" in pretrain, pretrain


def test_paper_settings_left_to_the_schema_defaults_are_the_papers(paper):
    """config/paper.yaml leaves these to the schema's defaults, because they are the papers' settings; a
    change of a default must not move the paper run silently."""
    assert paper["tissue"]["mpp"] == 8.0 and paper["read"]["upsample_tolerance"] == 0.02
    assert paper["samplers"]["range"] == [0.25, 2.0] and paper["samplers"]["grid_step"] == 0.005
    assert paper["samplers"]["du_mpps"] == [0.25, 0.5, 1.0, 2.0]
    assert all(t["cell_px"] == 224 for t in paper["tilesets"].values())
    mad = paper["pretrain"]["mad"]
    assert (mad["transition_weights"], mad["standalone_p"], mad["children"], mad["ibot"]) == ([0.5, 0.5], 0.1, 4, False)
    train = paper["pretrain"]["train"]
    assert train["global_crops_scale"] == [0.35, 1.0] and train["local_crops_scale"] == [0.05, 0.35]
    assert train["base_lr"] == 0.001 and train["reference_batch"] == 320
    assert paper["embed"]["mpps"] == [0.25, 0.375, 0.5, 0.75, 1.0, 1.5, 2.0] and paper["embed"]["resample"] == "finest"
    evaluate = paper["evaluate"]
    assert evaluate["seeds"] == [0, 1, 2, 3, 4] and evaluate["hierarchy"] == {"coarse_mpp": 1.0, "fine_mpp": 0.25}
    assert (evaluate["mad"]["negatives_per_parent"], evaluate["mad"]["bootstrap"], evaluate["mad"]["knn_k"]) == (16, 1000, 20)
    assert paper["aggregate"]["t"] == 3 and paper["aggregate"]["pretrain"]["contrastive_loss"] == "paper-eq5"
    abmil = paper["aggregate"]["abmil"]
    assert (abmil["weight_decay"], abmil["label_smoothing"], abmil["freeze_epochs"], abmil["layer_decay"]) == \
        (0.05, 0.1, 1, 0.75)
    assert (abmil["aggregator"], abmil["attention"], abmil["attn_dim"]) == ("paper-eq7", "tanh", 16)
