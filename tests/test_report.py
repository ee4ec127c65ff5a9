"""Per-model figures and tables, the comparison figure and the self-contained index page."""

import base64
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from eval_fixtures import make_embeddings, sheet, write_masks
from magflow.evaluate.evaluate import evaluate_metric
from magflow.evaluate.registry import METRIC_NAMES
from magflow.pages import escape
from magflow.report.build import build_report
from magflow.report.figures import rescale
from magflow.report.report_index import write_index
from magflow.report.evaluation_figures import FIGURES, TABLES, model_sampler
from magflow.report.names import LABELS, TABLE_FILES
from magflow.tsv import read_tsv, write_tsv

PNG = b"\x89PNG\r\n\x1a\n"
SAMPLER = {"strategy": "cu_minmax", "grid": [0.25, 1.0, 2.0], "I": [0.5, 0.9, 0.6]}
MODELS = ("run_a", "baseline_b")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Two models evaluated: a run with a sampler in its card, and a baseline whose tiles carry no labels."""
    root = tmp_path_factory.mktemp("report")
    splits, groups = sheet()
    masks = write_masks(root / "masks")
    settings = {"seeds": [0]}
    for model, labelled in zip(MODELS, (True, False)):
        path = make_embeddings(root / "embeddings" / model / "eval.h5", model=model, labelled=labelled,
                               sampler=SAMPLER if labelled else None)
        for metric in METRIC_NAMES:
            evaluate_metric(metric, path, root / "eval" / model / f"{metric}.json", settings=settings,
                            sheet_splits=splits, groups=groups, masks=masks,
                            maps_dir=root / "eval" / model / "segmentation")
    manifest = root / "manifest.tsv"
    manifest.write_text("slide_id\tsplit\ttarget_mpp\tachieved_mpp\tavailable\tkept\tmpp_source\tslide_mpp\tnote\n"
                        "s0\ttrain\t0.25\t0.25\t64\t64\topenslide.mpp\t0.25\t\n")
    slides = root / "slides.tsv"
    slides.write_text("slide_id\tmpp\tmpp_source\twarnings\ns0\t0.25\tsheet\t\n")
    index = build_report(MODELS, {m: root / "embeddings" / m / "eval.h5" for m in MODELS}, root / "eval",
                         root / "report", settings, config={"evaluate": settings, "marker": "cfg-42"},
                         manifests=[manifest], slide_table=slides)
    return root, index


def test_every_figure_is_a_png_and_the_tables_page_exists(project):
    root, _ = project
    for model in MODELS:
        for name in FIGURES.values():
            data = (root / "report" / model / name).read_bytes()
            assert data.startswith(PNG) and len(data) > 2000, f"{model}/{name}"
        tables = (root / "report" / model / TABLES).read_text()
        assert "Scores per mpp" in tables and "Cross-magnification consistency" in tables
    assert (root / "report" / "rankme_profiles.png").read_bytes().startswith(PNG)


def test_the_rankme_overlay_comes_from_the_runs_model_card(project):
    root, _ = project
    assert model_sampler(root / "embeddings" / "run_a" / "eval.h5") == SAMPLER
    assert model_sampler(root / "embeddings" / "baseline_b" / "eval.h5") is None
    np.testing.assert_allclose(rescale(np.array(SAMPLER["I"]), 18.0), [10.0, 18.0, 12.0])  # ratios kept


def test_the_index_holds_every_model_side_by_side_and_the_provenance(project):
    _, index = project
    page = index.read_text()
    for model in MODELS:
        assert f"<th>{model}</th>" in page
    for section in ("RankMe profile", "Probe curves across mpp", "Cross-mpp matrix", "Centroid similarity",
                    "Consistency", "Segmentation examples", "PCA", "Provenance", "Package versions",
                    "Git commits", "Seeds", "mpp sources", "mpp_source", "Tile manifest", "Config"):
        assert section in page, section
    assert "cfg-42" in page and "openslide.mpp" in page
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == 1 + len(MODELS) * (len(FIGURES)) and all(
        base64.b64decode(i).startswith(PNG) for i in images)
    assert "src='http" not in page and "src=\"http" not in page and "<link" not in page  # self-contained


def test_a_model_without_labels_shows_its_skips(project):
    root, index = project
    page = index.read_text()
    assert "no tile labels" in page
    tables = (root / "report" / "baseline_b" / TABLES).read_text()
    assert "skipped" in tables and "no tile labels" in tables


def test_the_index_refuses_a_model_that_was_not_evaluated(project, tmp_path):
    root, _ = project
    with pytest.raises(FileNotFoundError, match="no metric record for ghost"):
        write_index(tmp_path / "index.html", ["ghost"], root / "report" / "rankme_profiles.png",
                    eval_root=root / "eval", figure_root=root / "report")


def test_each_models_tables_are_tsvs_that_its_page_shows(project):
    root, _ = project
    for model in MODELS:
        folder = root / "report" / model
        tables = (folder / TABLES).read_text()
        status = read_tsv(folder / TABLE_FILES["status"])
        assert [row["metric"] for row in status] == list(METRIC_NAMES)
        for key, name in TABLE_FILES.items():
            for row in read_tsv(folder / name):
                assert all(f"<td>{escape(value)}</td>" in tables for value in row.values()), key
    scores = read_tsv(root / "report" / "run_a" / TABLE_FILES["scores"])
    assert len(scores) > 1 and all(row["RankMe"] for row in scores)


def test_the_index_shows_the_tables_the_figure_step_wrote(project, tmp_path):
    """The index reads each model's TSVs: what the tables step wrote is what the index shows."""
    root, _ = project
    figures = tmp_path / "report"
    shutil.copytree(root / "report", figures)
    status = figures / "run_a" / TABLE_FILES["status"]
    rows = read_tsv(status)
    rows[0]["reason"] = "written-by-the-table-step"
    write_tsv(status, rows)
    (figures / "baseline_b" / TABLE_FILES["scores"]).unlink()
    page = write_index(tmp_path / "index.html", MODELS, figures / "rankme_profiles.png", eval_root=root / "eval",
                       figure_root=figures).read_text()
    assert "written-by-the-table-step" in page
    assert page.count("<p>missing</p>") == 1  # the one table removed


def test_the_model_card_comes_from_the_embeddings_given(project, tmp_path):
    root, _ = project
    args = (MODELS, root / "report" / "rankme_profiles.png")
    seeds = re.compile(r"<td>run_a</td><td>(\d*)</td><td>\d")  # the seeds table: model, training seed, metric seeds
    given = write_index(tmp_path / "a.html", *args, eval_root=root / "eval", figure_root=root / "report",
                        embeddings={"run_a": root / "embeddings" / "run_a" / "eval.h5"}).read_text()
    assert seeds.findall(given) == ["7"] and "<td>abc</td>" in given  # the card's seed and commit
    left_out = write_index(tmp_path / "b.html", *args, eval_root=root / "eval", figure_root=root / "report").read_text()
    assert seeds.findall(left_out) == [""]


def test_every_file_of_a_models_report_has_a_label_and_a_caption():
    """The workflow builds the report entries of evaluation_figures from these names: eval_<key>.rst each."""
    captions = Path(__file__).resolve().parents[1] / "workflow" / "report"
    assert set(LABELS) == {*FIGURES, "tables"}
    assert all((captions / f"eval_{key}.rst").is_file() for key in LABELS)
