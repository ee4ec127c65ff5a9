"""The workflow plans every run's init control: its embedding and its RankMe and probe records (a dry run in a copy)."""

import re
import subprocess
from collections import Counter
import sys
from pathlib import Path

import pandas as pd
import yaml

from test_workflow import REPO, copy_project


def dry_run(root: Path, **tilesets) -> str:
    """``snakemake -n`` in a copy of the project at ``root``, with tile sets of the config replaced."""
    copy_project(root)
    if tilesets:
        config = yaml.safe_load((root / "config" / "config.yaml").read_text())
        config["tilesets"].update(tilesets)
        (root / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run([sys.executable, "-m", "snakemake", "-n"], cwd=root, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


def test_every_run_has_its_init_control_embedded_and_evaluated(tmp_path):
    out = dry_run(tmp_path)
    jobs = {name: int(count) for name, count in re.findall(r"^(\w+)\s+(\d+)$", out, re.M)}
    rows = pd.read_csv(REPO / "config" / "pretrain_runs.tsv", sep="\t", comment="#")
    runs = len(rows)
    assert jobs["pretrain"] == runs
    assert jobs["embed"] == 2 * runs  # each run and its control
    families = Counter(re.findall(r"^\s+wildcards: .*\bmetric=(\w+)$", out, re.M))  # evaluation jobs per family
    assert families["rankme"] == families["probes"] == families["robustness"] == 2 * runs
    for family in ("cross_mpp", "clustering", "centroids", "consistency", "segmentation"):
        assert families[family] == runs, family  # controls: the profile families and the RI only
    assert jobs["evaluation_figures"] == runs  # a control is drawn in its run's figures
    run = "kernel~abs_strategy~cu_minmax_lam~NA_mpp~NA_seed~0"
    for path in (f"results/embeddings/{run}~init/eval.h5", f"results/eval/{run}~init/rankme.json",
                 f"results/eval/{run}~init/probes.json", f"results/eval/{run}~init/robustness.json"):
        assert path in out, path
    assert f"results/eval/{run}~init/cross_mpp.json" not in out
    assert "Warning: embed.resample" not in out  # the default eval tile set holds the finest path's windows


def test_an_eval_tile_set_too_small_for_the_finest_path_is_named(tmp_path):
    out = dry_run(tmp_path, eval={"scales": [0.25, 0.5, 1.0, 2.0], "source_px": 512, "nested": True})
    assert "Warning: embed.resample 'finest'" in out and "source_px >= 1792" in out
