"""The workflow plans the MAD evaluation: MAD runs first, each run with its control, evaluate.mad.max_models of them."""

import re
import subprocess
import sys

import yaml

from test_workflow import copy_project

MAD_RUN = "kernel~NA_strategy~mad_lam~NA_mpp~NA_seed~0"


def dry_run(root, **mad) -> tuple[dict[str, int], str]:
    copy_project(root)
    if mad:
        config = yaml.safe_load((root / "config" / "config.yaml").read_text())
        config["evaluate"]["mad"].update(mad)
        (root / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run([sys.executable, "-m", "snakemake", "-n"], cwd=root, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout + result.stderr
    return {name: int(count) for name, count in re.findall(r"^(\w+)\s+(\d+)$", out, re.M)}, out


def test_the_demo_evaluates_its_mad_run_beside_its_control_and_max_models_adds_the_next_run(tmp_path):
    jobs, out = dry_run(tmp_path / "demo")
    assert jobs["mad_embed"] == jobs["mad_eval"] == 2 and jobs["mad_report"] == 1
    for model in (MAD_RUN, f"{MAD_RUN}~init"):
        assert f"results/mad/{model}/tiles.h5" in out and f"results/report/{model}/mad_pca.png" in out
    assert "results/report/mad_tables.tsv" in out and "results/mad/kernel~abs_strategy~du_lam" not in out
    jobs, out = dry_run(tmp_path / "two", max_models=2)
    assert jobs["mad_embed"] == jobs["mad_eval"] == 4
    for model in (MAD_RUN, f"{MAD_RUN}~init", "kernel~abs_strategy~du_lam~NA_mpp~NA_seed~0~init"):
        assert f"results/mad/{model}/tiles.h5" in out
    assert "results/mad/kernel~abs_strategy~cu_lam" not in out


def test_max_models_zero_turns_the_mad_evaluation_off(tmp_path):
    jobs, out = dry_run(tmp_path, max_models=0)
    assert "mad_embed" not in jobs and "mad_report" not in jobs and jobs["report_index"] == 1
