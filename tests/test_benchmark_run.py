"""The benchmark step end to end: synthetic TCGA-MS and BRACS-MS folders embedded by a tiny timm ViT in timm's
local-dir format, the embeddings checked against timm itself on the decoded PNGs, and the record against
independent scikit-learn, RankMe and croma computations on the saved embeddings."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from sklearn.metrics import balanced_accuracy_score
from sklearn.neighbors import KNeighborsClassifier
from timm.models import save_for_hf

from embed_fixtures import TINY_VIT
from magflow.benchmark.config import BenchmarkSpec
from magflow.benchmark.benchmark_fixture import write_bracs_ms, write_tcga_ms
from magflow.benchmark.layouts import FOLD_COLUMNS
from magflow.benchmark.output import read_benchmark_embeddings
from magflow.benchmark.paths import PROFILE_MPPS, STANDARD_MPPS
from magflow.benchmark.record import RECORD_KEYS
from magflow.benchmark.benchmark import read_record, run_benchmark
from magflow.embed.external import ExternalModel
from magflow.errors import ConfigError
from magflow.evaluate.cms import CMS_C_GRID, CMS_K_GRID
from magflow.evaluate.rankme import rankme, rankme_covariance
from magflow.evaluate.robustness import robustness_index

MODEL_PX, PATCH = 32, 8
TCGA_PX = 32  # the model's own size
BRACS_PX = 20  # not a multiple of the patch: resized to the model's 32 px
pytestmark = pytest.mark.filterwarnings("ignore:The least populated class", "ignore:y_pred contains classes not in",
                                        "ignore:A single label was found")


@pytest.fixture(scope="module")
def threads():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny random ViT in timm's own local-dir folder (pretrained_cfg mean/std 0.5, not ImageNet)."""
    torch.manual_seed(0)
    vit = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, img_size=MODEL_PX,
                            patch_size=PATCH, **TINY_VIT)
    folder = tmp_path_factory.mktemp("model")
    save_for_hf(vit.eval(), str(folder))
    return folder


def external(model_dir: Path) -> ExternalModel:
    return ExternalModel.from_config("tiny", {"timm_name": f"local-dir:{model_dir}", "feature": "pooled"})


def direct_features(model_dir: Path, paths: list[str], px: int) -> torch.Tensor:
    """What a user gets from timm itself: PNG → RGB (resized to px if needed) → [0, 1] → (x − 0.5)/0.5 → model(x)."""
    model = timm.create_model(f"local-dir:{model_dir}", pretrained=True, num_classes=0).eval()
    images = []
    for path in paths:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
            if rgb.size != (px, px):
                rgb = rgb.resize((px, px), Image.Resampling.BICUBIC)
            images.append(torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1).float() / 255)
    with torch.no_grad():
        return model((torch.stack(images) - 0.5) / 0.5)


@pytest.fixture(scope="module")
def tcga(tmp_path_factory, model_dir, threads):
    root = tmp_path_factory.mktemp("tcga_ms")
    write_tcga_ms(root, n_slides=6, regions_per_slide=2, tile_px=TCGA_PX, seed=3)
    spec = BenchmarkSpec.from_config("tcga-tiny", {"layout": "tcga-ms", "root": str(root)})
    out = tmp_path_factory.mktemp("tcga_out")
    record = run_benchmark(spec, external(model_dir), out / "tiny.h5", out / "tiny.json", name="tiny",
                           batch_size=16, workers=0, device="cpu", progress=False)
    return spec, record, read_benchmark_embeddings(out / "tiny.h5"), out


@pytest.fixture(scope="module")
def bracs(tmp_path_factory, model_dir, threads):
    root = tmp_path_factory.mktemp("bracs_ms")
    sheet = write_bracs_ms(root, rois_per_wsi=1, tile_px=BRACS_PX, seed=5)
    spec = BenchmarkSpec.from_config("bracs-tiny", {"layout": "bracs-ms", "root": str(root), "patients": str(sheet)})
    out = tmp_path_factory.mktemp("bracs_out")
    record = run_benchmark(spec, external(model_dir), out / "tiny.h5", out / "tiny.json", name="tiny",
                           batch_size=64, workers=2, device="cpu", progress=False)
    return spec, record, read_benchmark_embeddings(out / "tiny.h5")


def test_every_image_is_embedded_at_every_mpp(tcga):
    spec, record, emb, _ = tcga
    table = spec.read()
    assert emb.mpps == list(PROFILE_MPPS) == record["mpps"]
    ids = sorted(table["image_id"].unique())
    assert list(emb.image_id) == ids and record["counts"]["images"] == len(ids) == 12
    first = table[table["mpp"] == 0.25].set_index("image_id").loc[ids]
    assert list(emb.label) == list(first["label"]) and list(emb.label_id) == list(first["label_id"])
    assert list(emb.group) == list(first["slide"])
    for column in FOLD_COLUMNS:
        assert list(emb.folds[column]) == list(first[column])
    for mpp in PROFILE_MPPS:
        assert emb.features[mpp].shape == (len(ids), TINY_VIT["embed_dim"])
        assert [Path(p).parent.name for p in emb.paths[mpp]] == [f"mpp_{mpp!r}"] * len(ids)
        assert [Path(p).stem for p in emb.paths[mpp]] == ids  # row i is the same region at every mpp
        assert np.isfinite(emb.features[mpp]).all()
        assert len(np.unique(emb.features[mpp].round(5), axis=0)) == len(ids)  # no row left unwritten
    assert not np.allclose(emb.features[0.25], emb.features[2.0])


def test_features_are_timms_own_on_the_decoded_png(tcga, model_dir, tmp_path):
    spec, record, emb, _ = tcga
    assert (record["input_px"], record["native_px"], record["resized"]) == (TCGA_PX, TCGA_PX, False)
    assert record["feature"] == "pooled" and record["normalisation"] == {"mean": [0.5] * 3, "std": [0.5] * 3}
    assert record["model_card"]["source"]["format"] == "local-dir"
    for mpp in (0.25, 0.75, 2.0):
        expected = direct_features(model_dir, list(emb.paths[mpp]), TCGA_PX).numpy()
        np.testing.assert_allclose(emb.features[mpp], expected, rtol=0, atol=2e-5)
    # worker processes decode the same pixels into the same batches: the same features, bit for bit
    again = run_benchmark(spec, external(model_dir), tmp_path / "w2.h5", tmp_path / "w2.json", name="tiny",
                          batch_size=16, workers=2, device="cpu", progress=False)
    workers = read_benchmark_embeddings(tmp_path / "w2.h5")
    for mpp in PROFILE_MPPS:
        assert np.array_equal(workers.features[mpp], emb.features[mpp])
    assert again["probes"] == record["probes"] and again["rankme"] == record["rankme"]


def test_the_record_has_every_key_the_report_reads(tcga):
    _, record, emb, out = tcga
    assert read_record(out / "tiny.json") == record
    assert set(RECORD_KEYS) <= set(record)
    assert (record["step"], record["benchmark"], record["layout"], record["model"], record["protocol"]) == (
        "benchmark", "tcga-tiny", "tcga-ms", "tiny", "cms")
    assert record["standard_mpps"] == list(STANDARD_MPPS)
    keys = [f"{m:g}" for m in PROFILE_MPPS]
    assert keys == ["0.25", "0.375", "0.5", "0.75", "1", "1.5", "2"]
    for probe, choice, grid in (("knn", "k", CMS_K_GRID), ("linear", "C", CMS_C_GRID)):
        cells = record["probes"][probe]
        assert list(cells["per_mpp"]) == keys
        for key in keys:
            for metric in ("balanced_accuracy", "accuracy", "macro_f1"):
                cell = cells["per_mpp"][key][metric]
                assert 0 <= cell["mean"] <= 1 and cell["std"] >= 0 and cell["n"] == 5
        assert [f["fold"] for f in cells["folds"]] == [0, 1, 2, 3, 4]
        for fold in cells["folds"]:
            assert fold[choice] in grid and list(fold["test"]) == keys
            assert fold["rows"]["test"] == int((emb.folds[f"fold_{fold['fold']}"] == "test").sum())
    assert all(isinstance(f["k"], int) for f in record["probes"]["knn"]["folds"])
    assert set(record["rankme"]) >= {"paper", "covariance", "n_per_mpp"}
    assert list(record["rankme"]["paper"]) == keys == list(record["rankme"]["covariance"])
    assert record["folds"]["source"].startswith("the label file's fold columns")
    assert record["provenance"]["benchmark"] == "tcga-tiny" and "git" in record["provenance"]
    broken = {k: v for k, v in record.items() if k != "rankme"}
    (out / "broken.json").write_text(json.dumps(broken))
    with pytest.raises(ConfigError, match=r"broken.json: no `rankme`.*rerun it"):
        read_record(out / "broken.json")


def independent_knn(emb, fold: str) -> tuple[int, dict[float, float]]:
    """k chosen on the pooled dev rows of the standard mpps, kNN fit on their pooled train rows, scored per mpp."""
    part, y = emb.folds[fold], emb.label_id
    train, dev, test = part == "train", part == "dev", part == "test"
    tx = np.concatenate([emb.features[m][train] for m in STANDARD_MPPS]).astype(np.float64)
    ty = np.concatenate([y[train]] * len(STANDARD_MPPS))
    dx = np.concatenate([emb.features[m][dev] for m in STANDARD_MPPS]).astype(np.float64)
    dy = np.concatenate([y[dev]] * len(STANDARD_MPPS))
    best_k, best = None, -1.0
    for k in (k for k in CMS_K_GRID if k <= len(ty)):
        score = balanced_accuracy_score(dy, KNeighborsClassifier(k, metric="cosine").fit(tx, ty).predict(dx))
        if score > best:
            best_k, best = k, score
    knn = KNeighborsClassifier(best_k, metric="cosine").fit(tx, ty)
    return best_k, {m: balanced_accuracy_score(y[test], knn.predict(emb.features[m][test].astype(np.float64)))
                    for m in PROFILE_MPPS}


def test_knn_scores_equal_an_independent_sklearn_computation(tcga):
    _, record, emb, _ = tcga
    per_fold = [independent_knn(emb, column) for column in FOLD_COLUMNS]
    for (k, scores), fold in zip(per_fold, record["probes"]["knn"]["folds"]):
        assert fold["k"] == k
        for mpp, score in scores.items():
            assert fold["test"][f"{mpp:g}"]["balanced_accuracy"] == pytest.approx(score, abs=1e-12)
    for mpp in PROFILE_MPPS:
        values = [scores[mpp] for _, scores in per_fold]
        cell = record["probes"]["knn"]["per_mpp"][f"{mpp:g}"]["balanced_accuracy"]
        assert cell["mean"] == pytest.approx(np.mean(values), abs=1e-12)
        assert cell["std"] == pytest.approx(np.std(values), abs=1e-12)


def test_rankme_both_ways_on_the_saved_embeddings(tcga):
    _, record, emb, _ = tcga
    ranks = record["rankme"]
    assert ranks["n_per_mpp"] == len(emb.image_id) and ranks["dim"] == TINY_VIT["embed_dim"]
    for mpp in PROFILE_MPPS:
        assert ranks["paper"][f"{mpp:g}"] == pytest.approx(rankme(emb.features[mpp]).score, rel=1e-12)
        assert ranks["covariance"][f"{mpp:g}"] == pytest.approx(rankme_covariance(emb.features[mpp]).score, rel=1e-12)
    assert ranks["paper"] != ranks["covariance"]
    assert ranks["constants"]["paper"]["definition"] == "paper"
    assert ranks["constants"]["covariance"]["clamp"] == 1e-12


def test_robustness_index_is_cromas_with_mpp_as_the_confounder(tcga):
    _, record, emb, _ = tcga
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = robustness_index(emb.features, emb.label_id, emb.group, pairs=False)
    robustness = record["robustness"]
    assert robustness["status"] == "ok" and robustness["index"] == pytest.approx(expected.value, abs=1e-12)
    assert robustness["k"] == expected.k and robustness["n"] == len(emb.image_id) * len(PROFILE_MPPS)
    assert robustness["settings"]["confounder"] == "mpp" and robustness["settings"]["design"] == "all"
    assert len(robustness["pairs"]) == 21 and list(robustness["per_mpp"]) == [f"{m:g}" for m in PROFILE_MPPS]


def test_bracs_ms_is_resized_to_a_fixed_size_model_and_folds_keep_patients_apart(bracs, model_dir):
    spec, record, emb = bracs
    assert (record["native_px"], record["input_px"], record["resized"]) == (BRACS_PX, MODEL_PX, True)
    assert "resized" in record["input_size"] and "bicubic" in record["resize"]
    assert emb.attrs["resized"] is True or emb.attrs["resized"] == 1
    rows = slice(0, 9)
    for mpp in (0.25, 2.0):
        expected = direct_features(model_dir, list(emb.paths[mpp][rows]), MODEL_PX).numpy()
        np.testing.assert_allclose(emb.features[mpp][rows], expected, rtol=0, atol=2e-5)
    assert set(emb.label) <= {"N", "PB", "UDH", "FEA", "ADH", "DCIS", "IC"}
    for column in FOLD_COLUMNS:
        parts = {}
        for group, part in zip(emb.group, emb.folds[column]):
            parts.setdefault(group, set()).add(part)
        assert all(len(p) == 1 for p in parts.values())  # a patient is on one side of every split
        assert set(emb.folds[column]) == {"train", "dev", "test"}
    assert len(record["probes"]["linear"]["folds"]) == 5
    assert record["folds"]["source"] == "stratified patient folds, seed 42"


def test_a_missing_mpp_folder_or_an_odd_image_names_the_benchmark_and_the_path(tcga, model_dir, tmp_path):
    spec, _, _, _ = tcga
    root = tmp_path / "copy"
    shutil.copytree(spec.root, root)
    odd = sorted((root / "mpp_1.5").glob("*.png"))[5]
    Image.new("RGB", (TCGA_PX + 2, TCGA_PX + 2)).save(odd)
    copy = BenchmarkSpec("odd", "tcga-ms", root, root / "labels.csv", None)
    with pytest.raises(ConfigError, match=rf"^benchmark 'odd' \(tcga-ms layout\): this image is 34×34 px, .* "
                                          rf"{TCGA_PX} px square; .*resize or remove it: {odd}\. Expected"):
        run_benchmark(copy, external(model_dir), tmp_path / "e.h5", tmp_path / "r.json", name="tiny", workers=2,
                      batch_size=16, device="cpu", progress=False)
    shutil.rmtree(root / "mpp_0.75")
    broken = BenchmarkSpec("gone", "tcga-ms", root, root / "labels.csv", None)
    with pytest.raises(ConfigError, match=rf"benchmark 'gone' \(tcga-ms layout\): no folder for mpp 0.75 .*"
                                          rf"mpp_0.75.*: {root}\. Expected layout: ROOT/mpp_"):
        run_benchmark(broken, external(model_dir), tmp_path / "e.h5", tmp_path / "r.json", name="tiny",
                      device="cpu", progress=False)
    assert not (tmp_path / "e.h5").exists() and not (tmp_path / "r.json").exists()
    no_standard = BenchmarkSpec("few", "tcga-ms", root, root / "labels.csv", None, mpps=(0.25, 0.5, 1.0))
    with pytest.raises(ConfigError, match=r"benchmarks.few.mpps: .*standard mpps.*\[2.0\] missing"):
        run_benchmark(no_standard, external(model_dir), tmp_path / "e.h5", tmp_path / "r.json", name="tiny",
                      device="cpu", progress=False)


def magflow_command() -> list[str]:
    script = Path(sys.executable).with_name("magflow")
    return [str(script)] if script.is_file() else [sys.executable, "-c", "import sys; from magflow.cli import main; "
                                                                         "sys.exit(main())"]


def test_the_command_line_runs_one_benchmark_and_names_a_bad_root(tcga, model_dir, tmp_path):
    spec, record, emb, _ = tcga
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["--timm-name", f"local-dir:{model_dir}", "--feature", "pooled", "--name", "tiny", "--device", "cpu"]
    done = subprocess.run(magflow_command() + ["benchmark", "--layout", "tcga-ms", "--root", str(spec.root),
                                               "--benchmark", "tcga-tiny", *common, "--out-embeddings",
                                               str(tmp_path / "e.h5"), "--out-record", str(tmp_path / "r.json"),
                                               "--workers", "1", "--batch-size", "16"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout and "0.375" in done.stdout
    cli = read_record(tmp_path / "r.json")
    assert cli["probes"] == record["probes"] and cli["rankme"] == record["rankme"]
    assert np.array_equal(read_benchmark_embeddings(tmp_path / "e.h5").features[1.5], emb.features[1.5])
    bad = subprocess.run(magflow_command() + ["benchmark", "--layout", "tcga-ms", "--root", str(tmp_path / "absent"),
                                              *common, "--out-embeddings", str(tmp_path / "x.h5"), "--out-record",
                                              str(tmp_path / "x.json")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode != 0
    assert "magflow benchmark: error: benchmark 'absent' (tcga-ms layout): the benchmark root is not a folder" \
        in bad.stderr
    assert not (tmp_path / "x.json").exists()


def test_mean_patch_appends_the_mean_patch_token_as_in_the_evaluation_embeddings(tcga, model_dir, tmp_path):
    spec = tcga[0]
    cls_only = ExternalModel.from_config("tiny", {"timm_name": f"local-dir:{model_dir}"})
    runs = {}
    for mean_patch in (False, True):
        out = tmp_path / f"mean_patch_{mean_patch}"
        record = run_benchmark(spec, cls_only, out / "e.h5", out / "r.json", name="tiny", batch_size=16,
                               mean_patch=mean_patch, device="cpu", progress=False)
        runs[mean_patch] = record, read_benchmark_embeddings(out / "e.h5")
    (plain, plain_emb), (both, both_emb) = runs[False], runs[True]
    assert (plain["feature"], both["feature"]) == ("cls", "cls+mean_patch")
    dim = plain_emb.attrs["feature_dim"]
    assert both_emb.attrs["feature_dim"] == 2 * dim == 2 * plain_emb.attrs["embed_dim"]
    for mpp in PROFILE_MPPS:  # the CLS half is unchanged; the second half is the mean patch token
        assert both_emb.features[mpp].shape[1] == 2 * dim
        np.testing.assert_allclose(both_emb.features[mpp][:, :dim], plain_emb.features[mpp], atol=1e-5)
        assert not np.allclose(both_emb.features[mpp][:, dim:], plain_emb.features[mpp], atol=1e-3)
