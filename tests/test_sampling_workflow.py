"""The sampler rules: a Snakemake dry run over a sweep TSV (bad rows: see check_sweep tests)."""

import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _dry_run(tmp_path, tsv):
    """Dry-run the workflow with a one-slide sheet and ``tsv`` as the sampler sweep."""
    (tmp_path / "config").mkdir()
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["samplers"]["sweep"] = "samplers.tsv"
    config["samplers"]["grid_step"] = 0.01
    config["aggregate"]["encoder"] = None  # no region aggregation in this sampler-only project
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "config" / "slides.tsv").write_text(
        "slide_id\tpath\tsplit\nphantom_a\tresults/phantom/phantom_a.tiff\ttrain\n")
    (tmp_path / "samplers.tsv").write_text(tsv)
    (tmp_path / "config" / "pretrain_runs.tsv").write_text(
        "kernel\tstrategy\tlam\tmpp\tseed\nabs\tcu_minmax\tNA\tNA\t0\n")
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n", "-c1", "--quiet", "rules"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_dry_run_makes_one_job_per_row_and_one_figure_per_kernel(tmp_path):
    tsv = "kernel\tstrategy\tlam\tmpp\nabs\tcu_minmax\tNA\tNA\nabs\tcu_maxavg\t0.5\tNA\narea\tsingle\tNA\t0.5\n"
    result = _dry_run(tmp_path, tsv)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout + result.stderr
    assert "optimize_sampler" in out and "plot_samplers" in out
    counts = {line.split()[0]: line.split()[1] for line in out.splitlines() if len(line.split()) == 2}
    assert counts.get("optimize_sampler") == "3"
    assert counts.get("plot_samplers") == "2"
