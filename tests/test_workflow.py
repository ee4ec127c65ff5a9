"""The Snakemake workflow on a tiny phantom config in a temporary directory."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
pytestmark = pytest.mark.slow
# What a copy of the project needs to run Snakemake: never results/ or .snakemake/, so what a demo run
# left in the checkout cannot change what a test plans. environment.yml is every rule's `conda:` file, which
# Snakemake reads to record a finished job's metadata.
PROJECT_FILES = ("Snakefile", "workflow", "config", "profiles", "environment.yml")


def run(args, cwd, timeout=600):
    return subprocess.run(SNAKEMAKE + args, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def copy_project(root: Path) -> Path:
    """The project's workflow files (Snakefile, rules, config, profiles, environment.yml) copied into ``root``,
    where Snakemake runs."""
    root.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, root / name)
    return root


def make_project(root: Path, rows: list[str], **config_overrides) -> Path:
    """A working directory with the repo's config, a tiny phantom setting and the given sheet rows."""
    (root / "config").mkdir(parents=True)
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["phantom"].update(width_um=768, height_um=768, per_slide={"tiny_20x": {"mpp": 0.5}})
    (root / "config" / "samplers.tsv").write_text("kernel\tstrategy\tlam\tmpp\nabs\tdu\tNA\tNA\nabs\tcu_minmax\tNA\tNA\n")
    (root / "config" / "pretrain_runs.tsv").write_text("kernel\tstrategy\tlam\tmpp\tseed\nabs\tcu_minmax\tNA\tNA\t0\n")
    config["samplers"]["grid_step"] = 0.05
    # region aggregation: one CMEM mixer (its MEM branch too), AB-MIL on class tokens, one seed
    (root / "config" / "mixer_runs.tsv").write_text("objective\tmask_ratio\tcontext\ncmem\t0.5\t1\n")
    config["aggregate"].update(t=1, modes=["cls"], tasks=["label"])  # these sheets have no cross_scale column
    config["aggregate"]["pretrain"].update(iterations=4, warmup_iters=1, checkpoint_every=2, batch_size=4,
                                           reference_batch=4)
    config["aggregate"]["abmil"].update(epochs=2, seeds=[0])
    config["pretrain"]["train"].update(iterations=4, warmup_iters=1, checkpoint_every=2, log_every=2,
                                       teacher_temp_warmup_iters=2, freeze_last_layer_iters=1)
    config.update(config_overrides)
    if config["aggregate"]["tileset"] not in config["tilesets"]:
        config["aggregate"]["encoder"] = None  # a project without the region tile set runs no aggregation
    (root / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    header = "slide_id\tpath\tmpp\tsplit\tgroup\tlabel\n"
    (root / "config" / "slides.tsv").write_text(header + "".join(r + "\n" for r in rows))
    return root


PHANTOM_ROWS = [
    "tiny_a\tresults/phantom/tiny_a.tiff\t\ttrain\tp1\t1",
    "tiny_20x\tresults/phantom/tiny_20x.tiff\t\ttest\tp2\t0",
]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """Run the workflow with two phantoms, the real slide (when available) and one corrupt slide."""
    root = tmp_path_factory.mktemp("wf")
    bad = root / "bad.svs"
    bad.write_bytes(b"II*\x00" + os.urandom(5000))
    rows = PHANTOM_ROWS + [f"bad_slide\t{bad}\t\ttest\tp3\t0"]
    real = os.environ.get("MAGFLOW_TEST_SLIDE")
    if real and Path(real).is_file():
        rows.append(f"cmu_small\t{Path(real).resolve()}\t\ttrain\tp4\t")
    make_project(root, rows, tilesets={
        "train": {"scales": [0.25, 0.5, 1.0, 2.0], "source_px": 448, "max_tiles_per_scale": 6},
        "eval": {"scales": [0.25], "source_px": 1792, "max_tiles_per_scale": 6, "jpeg_quality": 90},
        "mad": {"scales": [4.0, 1.0, 0.25], "min_tissue": 0.25, "max_tiles_per_scale": 6},
        "region": {"scales": [2.0, 1.0, 0.5], "source_px": 224, "min_tissue": 0.25, "max_tiles_per_scale": None},
    })
    first = run(["-s", str(REPO / "Snakefile"), "--cores", "2", "--keep-going"], root)
    return root, first, bool(real)


def test_bad_slide_fails_alone_and_names_itself(finished_run):
    root, first, _ = finished_run
    assert first.returncode != 0, "a corrupt slide must fail its job"
    log = (root / "logs" / "tissue_mask" / "bad_slide.log").read_text()
    assert "bad_slide" in log and "corrupt" in log
    assert not (root / "results" / "masks" / "bad_slide.h5").exists()
    leftovers = [p.name for p in (root / "results").rglob("*") if ".tmp" in p.name]
    assert not leftovers, f"partial outputs left behind: {leftovers}"
    for slide_id in ("tiny_a", "tiny_20x"):  # --keep-going finished the others
        assert (root / "results" / "masks" / f"{slide_id}.qc.png").stat().st_size > 1000
        assert (root / "results" / "phantom" / f"{slide_id}.labels.png").exists()


def test_rerun_without_the_bad_slide_completes_with_summary_and_report(finished_run):
    root, _, with_real = finished_run
    sheet = root / "config" / "slides.tsv"
    sheet.write_text("".join(line + "\n" for line in sheet.read_text().splitlines() if "bad_slide" not in line))
    second = run(["-s", str(REPO / "Snakefile"), "--cores", "2"], root)
    assert second.returncode == 0, second.stderr[-3000:]
    table = (root / "results" / "qc" / "slides.tsv").read_text()
    assert "tiny_a\t0.25\topenslide.mpp" in table and "tiny_20x\t0.5\topenslide.mpp" in table
    if with_real:
        assert "cmu_small\t0.499\topenslide.mpp" in table
    assert "tiny_a" in (root / "results" / "qc" / "slides.html").read_text()
    manifest = (root / "results" / "tiles" / "train" / "manifest.tsv").read_text().splitlines()
    assert any(line.startswith("tiny_20x\ttest\t0.25\t\t0\t0") and "skipped" in line for line in manifest)
    assert any(line.startswith("tiny_a\ttrain\t0.25\t0.25\t") for line in manifest)
    assert (root / "results" / "tiles" / "mad" / "tiny_a.h5").exists()
    model = root / "results" / "models" / "kernel~abs_strategy~cu_minmax_lam~NA_mpp~NA_seed~0"
    card = json.loads((model / "model_card.json").read_text())
    assert card["strategy"] == "cu_minmax" and card["iterations"] == 4 and card["seed"] == 0
    assert (model / "teacher_backbone.safetensors").stat().st_size > 1000
    assert "iteration 4/4" in (root / "logs" / "pretrain" / f"{model.name}.log").read_text()
    with h5py.File(root / "results" / "embeddings" / model.name / "eval.h5") as h5:
        assert sorted(json.loads(h5.attrs["mpps"])) == [0.25, 0.375, 0.5, 0.75, 1.0, 1.5, 2.0]
        assert h5["mpp_0.375"]["features"].shape[0] == len(h5["tile_id"]) > 0
        assert (h5["label"][...] >= 1).any()  # phantom ground truth reached the tiles
    records = {m: json.loads((root / "results" / "eval" / model.name / f"{m}.json").read_text())
               for m in ("rankme", "probes", "consistency", "segmentation", "robustness")}
    assert records["rankme"]["status"] == "ok" and records["consistency"]["status"] == "ok"
    assert records["probes"]["status"] == "skipped"  # one slide with tiles: no split, and the record says so
    assert "split" in records["probes"]["reason"]
    # one slide: every tile's neighbours are its own slide's, so croma has none to count, and the record says so
    assert records["robustness"]["status"] == "skipped" and "robustness index" in records["robustness"]["reason"]
    index = (root / "results" / "report" / "index.html").read_text()
    assert model.name in index and "Provenance" in index and "data:image/png;base64," in index
    # region aggregation: regions of the cu_minmax encoder, a CMEM mixer, AB-MIL rows in the report
    with h5py.File(root / "results" / "regions" / model.name / "tiny_a.h5") as h5:
        assert h5.attrs["t"] == 1 and int(h5.attrs["n_tokens"]) == 1 + 4 + 16  # s(1, 3)
        assert len(h5["regions"]["grid"]) >= 1
    mixer = root / "results" / "mixers" / model.name / "objective~cmem_mask_ratio~0.5_context~1"
    assert json.loads((mixer / "model_card.json").read_text())["training"]["iterations"] == 4
    auroc = (root / "results" / "report" / "abmil_auroc.tsv").read_text()
    for row in ("CMEM r=0.5 c=1 (cls)", "Random 5× (cls)", "Random all× (cls)", "ABMIL 5× (2 mpp)",
                "ABMIL 20× (0.5 mpp)", "ABMIL all×"):
        assert row in auroc and row in index, row
    report = run(["-s", str(REPO / "Snakefile"), "--report", "report.html"], root)
    assert report.returncode == 0, report.stderr[-3000:]
    assert (root / "report.html").stat().st_size > 10000
    nothing = run(["-s", str(REPO / "Snakefile"), "-n"], root)
    assert "Nothing to be done" in nothing.stdout + nothing.stderr


def test_dry_run_of_the_default_config_plans_every_job(tmp_path):
    result = run(["-n"], copy_project(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout + result.stderr
    jobs = {name: int(count) for name, count in re.findall(r"^(\w+)\s+(\d+)$", out, re.M)}
    # 11 slides (5 phantoms and the 6 small cross-scale ones); 4 tile sets; 4 runs (du, cu, cu_minmax, mad), each
    # embedded with its {run}~init control, which is evaluated on RankMe, probes and the robustness index only;
    # the MAD tables for the MAD run and its control (evaluate.mad.max_models 1); 2 mixers; 16 AB-MIL methods (each
    # job writes both tasks): 2 mixers x 2 modes, the random mixer on each of 3 scales and on all x 2 modes,
    # 3 single scales and all scales
    expected = {"phantom": 11, "tissue_mask": 11, "slide_qc_table": 1, "extract_tiles": 44, "tile_manifest": 4,
                "optimize_sampler": 12, "pretrain": 4, "embed": 8, "evaluation_figures": 4, "rankme_comparison": 1,
                "report_index": 1, "region_embed": 11, "pretrain_mixer": 2, "abmil": 16, "abmil_table": 1,
                "mad_embed": 2, "mad_eval": 2, "mad_report": 1, "benchmark": 8}
    # evaluate: the 4 runs' records of the 7 families without label masks, and the 4 controls' 3 (rankme, probes,
    # robustness); evaluate_segmentation: the runs' segmentation
    expected.update(evaluate=4 * 7 + 4 * 3, evaluate_segmentation=4)
    for name, count in expected.items():
        assert jobs.get(name) == count, (name, out[-2500:])


def test_lint_is_clean(tmp_path):
    result = run(["--lint"], copy_project(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_config_errors_stop_before_any_job(tmp_path):
    root = make_project(tmp_path, PHANTOM_ROWS)
    result = run(["-s", str(REPO / "Snakefile"), "-n", "--config", "bogus_key=1"], root)
    assert result.returncode != 0 and "unknown config key 'bogus_key'" in result.stdout + result.stderr
    result = run(["-s", str(REPO / "Snakefile"), "-n", "--config", "tissue={'mpp': 'x'}"], root)
    assert result.returncode != 0
    assert "'tissue.mpp': 'x' is not of type 'number'" in result.stdout + result.stderr
    (root / "config" / "mixer_runs.tsv").unlink()
    result = run(["-s", str(REPO / "Snakefile"), "-n"], root)
    assert result.returncode != 0 and "aggregate.runs: config/mixer_runs.tsv does not exist" in result.stdout + result.stderr
    result = run(["-s", str(REPO / "Snakefile"), "-n", "--config", "aggregate={'encoder': 'no_such_run'}"], root)
    assert result.returncode != 0 and "aggregate.encoder: 'no_such_run'" in result.stdout + result.stderr
    assert not (root / "results").exists()


def test_missing_slide_file_fails_only_its_own_job(tmp_path):
    root = make_project(tmp_path, ["ghost\tdata/ghost.svs\t\ttest\tp9\t", PHANTOM_ROWS[0]],
                        tilesets={"train": {"scales": [1.0]}, "eval": {"scales": [1.0]}})
    result = run(["-s", str(REPO / "Snakefile"), "--cores", "2", "--keep-going"], root)
    assert result.returncode != 0
    assert (root / "results" / "tiles" / "train" / "tiny_a.h5").exists()
    log = (root / "logs" / "tissue_mask" / "ghost.log").read_text()
    assert "Slide 'ghost'" in log and "data/ghost.svs" in log and "file not found" in log


def test_cli_phantom_info_and_mask(tmp_path):
    magflow = [sys.executable, "-m", "magflow.cli"]
    made = subprocess.run(magflow + ["phantom", str(tmp_path), "--slide-id", "p", "--width-um", "512",
                                     "--height-um", "512", "--label", "1"], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    info = subprocess.run(magflow + ["info", str(tmp_path / "p.tiff")], capture_output=True, text=True)
    assert '"mpp_source": "openslide.mpp"' in info.stdout
    bad = subprocess.run(magflow + ["info", str(tmp_path / "missing.svs")], capture_output=True, text=True)
    assert bad.returncode == 2 and "file not found" in bad.stderr and "Traceback" not in bad.stderr
    shutil.rmtree(tmp_path)
