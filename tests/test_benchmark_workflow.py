"""The benchmark fan-out in the workflow (every benchmark x every model, the demo's generated fixture, the
per-benchmark panel and table in the report) and the report builder on hand-made records."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from matplotlib.colors import to_rgba
from PIL import Image

from magflow.benchmark.config import FIXTURE_SIZES, BenchmarkSpec, benchmark_specs
from magflow.benchmark.paths import PROFILE_MPPS, STANDARD_MPPS
from magflow.errors import ConfigError
from magflow.report.benchmark_report import (
    draw_benchmark,
    read_benchmark_records,
    split_means,
    table_rows,
    write_benchmark_report,
)
from magflow.report.report_index import _benchmarks
from test_workflow import REPO, copy_project

SNAKEMAKE = [sys.executable, "-m", "snakemake"]
DEMO = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
RUN = "kernel~abs_strategy~cu_minmax_lam~NA_mpp~NA_seed~0"


def snakemake(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(SNAKEMAKE + args, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def n_runs(root: Path) -> int:
    """The pretraining runs of the project's sweep, read as the workflow reads it."""
    return len(pd.read_csv(root / "config" / "pretrain_runs.tsv", sep="\t", comment="#"))


def jobs(out: str) -> dict[str, int]:
    return {name: int(count) for name, count in re.findall(r"^(\w+)\s+(\d+)$", out, re.M)}


# -- the workflow ---------------------------------------------------------------------------------------

def test_dry_run_plans_every_model_on_the_demo_fixture_and_its_panel(tmp_path):
    root = copy_project(tmp_path)
    result = snakemake(["-n"], root)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    runs = n_runs(root)
    # every run and its {run}~init control on the one demo benchmark, written first by its fixture rule
    assert {k: jobs(out).get(k) for k in ("benchmark_fixture", "benchmark", "benchmark_report", "report_index")} == \
        {"benchmark_fixture": 1, "benchmark": 2 * runs, "benchmark_report": 1, "report_index": 1}, out[-2500:]
    for model in (RUN, f"{RUN}~init"):
        assert f"results/benchmarks/tcga_ms_fixture/{model}.json" in out
    assert "output: results/benchmark_fixture/tcga_ms_fixture\n" in out
    index = re.search(r"rule report_index:\n\s+input: (.*)", out).group(1)  # the index shows the panel
    assert "results/report/benchmarks/tcga_ms_fixture.png" in index
    assert "results/report/benchmarks/tcga_ms_fixture.tsv" in index


def test_a_missing_benchmark_root_stops_the_run_at_parse_naming_benchmark_and_path(tmp_path):
    root = copy_project(tmp_path)
    result = snakemake(["-n", "--config", "benchmarks={'tcga_ms': {'layout': 'tcga-ms', 'root': 'data/TCGA-MS'}}"],
                       root)
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "benchmark 'tcga_ms' (tcga-ms layout): the benchmark root is not a folder: data/TCGA-MS" in out
    assert "Expected layout: ROOT/mpp_{m}" in out
    assert "Job stats" not in out and not (root / "results").exists()


def test_no_benchmark_plans_no_benchmark_job(tmp_path):
    root = copy_project(tmp_path)
    config = yaml.safe_load((root / "config" / "config.yaml").read_text())
    config["benchmarks"] = {}
    (root / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(["-n"], root)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert not {"benchmark_fixture", "benchmark", "benchmark_report"} & set(jobs(out)), out[-2500:]


# -- the config entry of a fixture ------------------------------------------------------------------------

def test_the_demo_benchmark_is_a_fixture_written_by_the_workflow():
    specs = benchmark_specs(DEMO["benchmarks"], check_paths=True)  # a fixture's paths are not checked
    assert list(specs) == ["tcga_ms_fixture"]
    spec = specs["tcga_ms_fixture"]
    assert spec.fixture and spec.layout == "tcga-ms" and spec.mpps == PROFILE_MPPS
    assert spec.root == Path("results/benchmark_fixture/tcga_ms_fixture") and spec.labels == spec.root / "labels.csv"
    # the demo runs' input size: the fixture's images go to the demo networks unresized
    assert FIXTURE_SIZES["tcga-ms"]["tile_px"] == DEMO["pretrain"]["train"]["global_size"]


def test_a_bracs_ms_fixture_reads_the_patient_sheet_its_writer_puts_beside_the_images(tmp_path):
    spec = BenchmarkSpec.from_config("b", {"layout": "bracs-ms", "root": "results/benchmark_fixture/b", "fixture": True})
    assert spec.patients == Path("results/benchmark_fixture/b/BRACS.csv") and spec.labels is None
    from magflow.benchmark.benchmark_fixture import write_fixture

    assert write_fixture("bracs-ms", tmp_path / "b", mpps=(0.25, 0.5), n_patients=7, rois_per_wsi=1,
                         tile_px=16).name == spec.patients.name
    with pytest.raises(ConfigError, match="a tcga-ms fixture has no size n_patients"):
        write_fixture("tcga-ms", tmp_path / "t", n_patients=3)


@pytest.mark.parametrize("settings, message", [
    ({"layout": "tcga-ms", "root": "data/mine", "fixture": True},
     r"benchmarks.f.root: a fixture is written by the workflow to results/benchmark_fixture/f \(under results/\), "
     r"got data/mine"),
    ({"layout": "generic", "root": "results/benchmark_fixture/f", "fixture": True},
     "benchmarks.f.fixture: magflow writes fixtures in the tcga-ms and bracs-ms layouts, not generic"),
    ({"layout": "tcga-ms", "root": "results/benchmark_fixture/f", "labels": "x.csv", "fixture": True},
     "benchmarks.f: a fixture writes its own labels.csv; remove labels"),
    ({"layout": "tcga-ms", "root": "results/benchmark_fixture/f", "fixture": "yes"},
     "benchmarks.f.fixture: true or false"),
])
def test_a_fixture_entry_is_refused_where_it_could_stand_for_real_data(settings, message):
    with pytest.raises(ConfigError, match=message):
        BenchmarkSpec.from_config("f", settings)


def test_a_null_entry_is_off_so_a_configfile_can_remove_the_demo_benchmark():
    from snakemake.utils import update_config

    config = copy.deepcopy(DEMO)
    update_config(config, yaml.safe_load((REPO / "config" / "paper.yaml").read_text()))
    assert config["benchmarks"] == {"tcga_ms_fixture": None}
    assert benchmark_specs(config["benchmarks"]) == {}


def test_the_cli_writes_a_fixture_the_benchmark_reads(tmp_path):
    result = subprocess.run([sys.executable, "-m", "magflow.cli", "benchmark-fixture", str(tmp_path / "t"),
                             "--layout", "tcga-ms", "--n-slides", "5", "--regions-per-slide", "2", "--tile-px", "32"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    table = BenchmarkSpec.from_config("t", {"layout": "tcga-ms", "root": str(tmp_path / "t")}).read()
    assert len(table) == 5 * 2 * len(PROFILE_MPPS)
    with Image.open(table["path"].iloc[0]) as image:
        assert image.size == (32, 32)


# -- the panel and the table on hand-made records ---------------------------------------------------------

def make_record(model: str, base: float, slope: float, robustness: float | None, ks: list[int],
                cs: list[float], rankme_paper: float = 30.0) -> dict:
    """A record of magflow.benchmark.record's shape: balanced accuracy base - slope * |log2(mpp / 0.5)|,
    0.1 lower at the intermediate mpps (a model that has only seen the standard ones)."""
    def cells(mpp: float, shift: float) -> dict:
        value = base + shift - slope * abs(np.log2(mpp / 0.5)) - (0.0 if mpp in STANDARD_MPPS else 0.1)
        return {metric: {"mean": value, "std": 0.02, "n": 5} for metric in ("balanced_accuracy", "accuracy",
                                                                          "macro_f1")}
    return {
        "step": "benchmark", "benchmark": "tcga_ms_fixture", "layout": "tcga-ms", "model": model, "protocol": "cms",
        "mpps": list(PROFILE_MPPS), "standard_mpps": list(STANDARD_MPPS),
        "probes": {"knn": {"per_mpp": {f"{m:g}": cells(m, 0.0) for m in PROFILE_MPPS},
                           "folds": [{"fold": i, "k": k} for i, k in enumerate(ks)]},
                   "linear": {"per_mpp": {f"{m:g}": cells(m, 0.05) for m in PROFILE_MPPS},
                              "folds": [{"fold": i, "C": c} for i, c in enumerate(cs)]}},
        "rankme": {"paper": {f"{m:g}": rankme_paper + i for i, m in enumerate(PROFILE_MPPS)},
                   "covariance": {f"{m:g}": 10.0 for m in PROFILE_MPPS}, "n_per_mpp": 40},
        "robustness": {"index": robustness, "k": 5}, "input_px": 64, "resized": False,
        "model_card": {}, "provenance": {},
    }


@pytest.fixture
def records(tmp_path) -> list[Path]:
    made = [make_record(RUN, 0.8, 0.05, 0.62, [5, 10, 5, 3, 20], [1.0, 10.0, 0.1, 1.0, 1.0]),
            make_record(f"{RUN}~init", 0.5, 0.0, 0.31, [1, 1, 3, 1, 5], [0.0001, 0.001, 0.01, 0.1, 1.0], 12.0),
            make_record("uni", 0.9, 0.02, None, [40, 40, 80, 40, 40], [10.0] * 5)]
    paths = []
    for record in made:
        path = tmp_path / f"{record['model']}.json"
        path.write_text(json.dumps(record))
        paths.append(path)
    return paths


def test_standard_and_intermediate_means_are_the_records_per_mpp_means(records):
    record = json.loads(records[0].read_text())
    knn = record["probes"]["knn"]["per_mpp"]
    means = split_means(record, "knn")
    assert means["standard"] == pytest.approx(np.mean([knn[k]["balanced_accuracy"]["mean"]
                                                       for k in ("0.25", "0.5", "1", "2")]))
    assert means["intermediate"] == pytest.approx(np.mean([knn[k]["balanced_accuracy"]["mean"]
                                                           for k in ("0.375", "0.75", "1.5")]))
    # the constructed 0.1 drop at the intermediate mpps, seen through the slope's different weights
    slope = lambda ms: np.mean([0.05 * abs(np.log2(m / 0.5)) for m in ms])  # noqa: E731
    assert means["standard"] - means["intermediate"] == pytest.approx(
        0.1 + slope((0.375, 0.75, 1.5)) - slope(STANDARD_MPPS))


def test_the_table_holds_the_records_numbers_and_the_control(records, tmp_path):
    rows = write_benchmark_report(records, tmp_path / "b.png", tmp_path / "b.html", tmp_path / "b.tsv")
    by_model = {row["model"]: row for row in rows}
    assert list(by_model) == [RUN, f"{RUN}~init", "uni"]  # the control is a row, beside its run
    assert by_model[f"{RUN}~init"]["control of"] == RUN and by_model[RUN]["control of"] == ""
    loaded = read_benchmark_records(records)
    for model, row in by_model.items():
        record = loaded[model]
        for probe, column in (("knn", "kNN"), ("linear", "linear")):
            means = split_means(record, probe)
            assert row[f"{column} bal. acc., standard mpps"] == f"{means['standard']:.3f}"
            assert row[f"{column} bal. acc., intermediate mpps"] == f"{means['intermediate']:.3f}"
        assert row["k per fold"] == ", ".join(f"{f['k']:g}" for f in record["probes"]["knn"]["folds"])
        assert row["C per fold"] == ", ".join(f"{f['C']:g}" for f in record["probes"]["linear"]["folds"])
        assert row["protocol"] == "cms" and row["RankMe images per mpp"] == "40"
        paper = [c for c in row if c.startswith("RankMe, paper (singular values, uncentred)")]
        covariance = [c for c in row if c.startswith("RankMe, covariance (eigenvalues of the covariance")]
        assert len(paper) == len(covariance) == 1  # both definitions, each named
        assert row[paper[0]] == f"{np.mean(list(record['rankme']['paper'].values())):.2f}"
        assert row[covariance[0]] == "10.00"
    assert by_model[RUN]["Magnification Robustness Index"] == "0.620"
    assert by_model["uni"]["Magnification Robustness Index"] == ""  # none computed: an empty cell, not 0
    assert by_model[RUN]["k per fold"] == "5, 10, 5, 3, 20"
    assert by_model[f"{RUN}~init"]["C per fold"] == "0.0001, 0.001, 0.01, 0.1, 1"
    tsv = (tmp_path / "b.tsv").read_text().splitlines()
    assert len(tsv) == 4 and tsv[2].split("\t")[0] == f"{RUN}~init"
    assert "0.620" in (tmp_path / "b.html").read_text()
    with Image.open(tmp_path / "b.png") as image:
        assert image.size[0] > image.size[1] > 300  # two panels side by side


def test_the_panel_draws_every_model_with_standard_mpps_filled_and_the_control_dashed(records):
    fig = draw_benchmark(read_benchmark_records(records))
    knn, linear = fig.axes
    assert knn.get_xscale() == "log" and "balanced accuracy" in knn.get_ylabel()
    assert [t.get_text() for t in knn.get_xticklabels()] == [f"{m:g}" for m in PROFILE_MPPS]
    for ax in (knn, linear):
        lines = [line for line in ax.get_lines() if len(line.get_xdata()) == len(PROFILE_MPPS)]
        assert len(lines) == 3  # the run, its control, the external model
        styles = {line.get_linestyle() for line in lines}
        assert styles == {"-", "--"}
        run_line, control_line = lines[0], lines[1]
        assert control_line.get_linestyle() == "--" and run_line.get_linestyle() == "-"
        assert to_rgba(control_line.get_color()) == to_rgba(run_line.get_color())  # in its run's colour
        assert to_rgba(lines[2].get_color()) != to_rgba(run_line.get_color())
        # the per-mpp markers: filled at the standard mpps, open (white) at the intermediate ones
        markers = [line for line in ax.get_lines() if len(line.get_xdata()) == 1
                   and to_rgba(line.get_color()) == to_rgba(run_line.get_color()) and line.get_marker() == "o"]
        filled = {float(m.get_xdata()[0]): to_rgba(m.get_markerfacecolor()) != to_rgba("white") for m in markers}
        assert filled == {m: m in STANDARD_MPPS for m in PROFILE_MPPS}
        # the plotted means are the records' (linear panel: the linear probe's)
        probe = "knn" if ax is knn else "linear"
        record = json.loads(records[0].read_text())
        assert np.allclose(run_line.get_ydata(), [record["probes"][probe]["per_mpp"][f"{m:g}"]["balanced_accuracy"]
                                                  ["mean"] for m in PROFILE_MPPS])
        assert len(ax.collections) == 3  # a mean ± std band per model


def test_the_index_section_embeds_each_panel_and_its_table(records, tmp_path):
    write_benchmark_report(records, tmp_path / "b.png", tmp_path / "b.html", tmp_path / "b.tsv")
    section = "".join(_benchmarks({"tcga_ms_fixture": {"figure": tmp_path / "b.png", "table": tmp_path / "b.tsv"}}))
    assert "id='benchmarks'" in section and "<h3>tcga_ms_fixture</h3>" in section
    assert "data:image/png;base64," in section and f"<td>{RUN}~init</td>" in section and "0.620" in section
    assert _benchmarks({}) == []


def test_a_record_of_another_step_is_refused_naming_the_file(records, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"step": "probes"}))
    with pytest.raises(ConfigError, match=re.escape(str(bad))):
        read_benchmark_records([records[0], bad])
    other = json.loads(records[1].read_text())
    other["benchmark"] = "bracs_ms"
    mixed = tmp_path / "mixed.json"
    mixed.write_text(json.dumps(other))
    with pytest.raises(ConfigError, match="several benchmarks"):
        read_benchmark_records([records[0], mixed])
    twin = tmp_path / "twin.json"
    twin.write_text(records[0].read_text())  # the same model twice would silently drop one of the two
    with pytest.raises(ConfigError, match=re.escape(f"two records of model '{json.loads(twin.read_text())['model']}'")):
        read_benchmark_records([records[0], twin])


# -- end to end: the fixture rule and one model's benchmark job -------------------------------------------

@pytest.mark.slow
def test_the_fixture_and_a_local_dir_models_benchmark_job_run_in_the_workflow(tmp_path):
    """`snakemake results/benchmarks/tcga_ms_fixture/tiny.json` in a copy of the project: the fixture rule
    writes the demo's TCGA-MS folder, the benchmark job embeds it with a timm local-dir model and writes a
    record the report builder reads."""
    timm = pytest.importorskip("timm")
    torch = pytest.importorskip("torch")
    from timm.models import save_for_hf

    from embed_fixtures import TINY_VIT

    torch.manual_seed(0)
    px = FIXTURE_SIZES["tcga-ms"]["tile_px"]
    vit = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, img_size=px, **TINY_VIT)
    save_for_hf(vit.eval(), str(tmp_path / "tiny"))
    root = copy_project(tmp_path / "project")
    shutil.copy2(REPO / "environment.yml", root / "environment.yml")  # the rules' conda file, hashed per job
    config = yaml.safe_load((root / "config" / "config.yaml").read_text())
    config["embed"]["external"] = {"tiny": {"timm_name": f"local-dir:{tmp_path / 'tiny'}", "feature": "pooled"}}
    (root / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(["--cores", "1", "results/benchmarks/tcga_ms_fixture/tiny.json"], root, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    fixture = root / "results" / "benchmark_fixture" / "tcga_ms_fixture"
    sizes = FIXTURE_SIZES["tcga-ms"]
    assert len(list(fixture.glob("mpp_0.375/*.png"))) == sizes["n_slides"] * sizes["regions_per_slide"]
    record_path = root / "results" / "benchmarks" / "tcga_ms_fixture" / "tiny.json"
    record = json.loads(record_path.read_text())
    assert (record["benchmark"], record["model"], record["protocol"]) == ("tcga_ms_fixture", "tiny", "cms")
    assert record["input_px"] == px and not record["resized"]
    assert (root / "results" / "benchmarks" / "tcga_ms_fixture" / "tiny.h5").stat().st_size > 0
    assert "tcga_ms_fixture" in (root / "logs" / "benchmarks" / "tcga_ms_fixture" / "tiny.log").read_text()
    rows = write_benchmark_report([record_path], tmp_path / "b.png", tmp_path / "b.html", tmp_path / "b.tsv")
    assert rows[0]["model"] == "tiny"
    assert rows[0]["linear bal. acc., standard mpps"] == f"{split_means(record, 'linear')['standard']:.3f}"
    assert len(rows[0]["k per fold"].split(", ")) == 5


def readme_benchmark_commands() -> list[str]:
    """The README's three commands that evaluate a local-dir model on a TCGA-MS folder."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Benchmarks"):]
    block = section[section.index("```bash\n") + len("```bash\n"):]
    return block[:block.index("```")].strip().splitlines()


def test_the_readmes_benchmark_commands_plan_the_model_on_the_folder(tmp_path):
    """Commands 1 and 2 of the README (the config file, then Snakemake with it, dry) in a copy of the
    project holding a local-dir model and a TCGA-MS folder where the README puts them."""
    timm = pytest.importorskip("timm")
    from timm.models import save_for_hf

    from embed_fixtures import TINY_VIT
    from magflow.benchmark.benchmark_fixture import write_tcga_ms

    write_config, run, open_report = readme_benchmark_commands()
    assert run.startswith("snakemake ") and "webbrowser results/report/index.html" in open_report
    root = copy_project(tmp_path)
    save_for_hf(timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, img_size=32,
                                  **TINY_VIT), str(root / "models" / "my_vit"))
    write_tcga_ms(root / "data" / "TCGA-MS" / "tcga_ms", n_slides=5, regions_per_slide=1, tile_px=16)
    subprocess.run(write_config, shell=True, cwd=root, check=True)
    result = snakemake(run.split()[1:] + ["-n"], root)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert "results/benchmarks/tcga_ms/my_vit.json" in out and "results/report/benchmarks/tcga_ms.png" in out
    assert "tcga_ms_fixture" not in out  # the README's config drops the demo's fixture
    runs = n_runs(root)
    assert jobs(out)["benchmark"] == 2 * runs + 1  # every run, its control and the local-dir model
