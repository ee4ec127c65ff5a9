"""A run's control (the same network at initialisation) is drawn dashed beside the run in every profile figure."""

import re

import matplotlib.pyplot as plt
import numpy as np
import pytest

from eval_fixtures import make_embeddings, sheet
from magflow.evaluate.evaluate import evaluate_metric
from magflow.evaluate.registry import CONTROL_METRICS, METRIC_NAMES
from magflow.report import figures, rankme_comparison
from magflow.report.build import build_report

RUN, CONTROL = "run_a", "run_a~init"


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """RankMe and probe records of a run and of its control (noisier features, as an untrained network)."""
    root = tmp_path_factory.mktemp("controls")
    splits, groups = sheet()
    out = {}
    for model, noise, seed in ((RUN, 0.6, 0), (CONTROL, 2.0, 1)):
        path = make_embeddings(root / "embeddings" / model / "eval.h5", model=model, noise=noise, seed=seed)
        for metric in METRIC_NAMES if model == RUN else CONTROL_METRICS:
            out[model, metric] = evaluate_metric(metric, path, root / "eval" / model / f"{metric}.json",
                                                 settings={"seeds": [0]}, sheet_splits=splits, groups=groups,
                                                 maps_dir=root / "eval" / model / "segmentation")
    return root, out


@pytest.fixture
def drawn(monkeypatch):
    """The figures the plotting functions save, kept open for inspection."""
    kept = []
    for module in (figures, rankme_comparison):
        monkeypatch.setattr(module, "save", lambda fig, path, rect=None: kept.append(fig))
    yield kept
    for fig in kept:
        plt.close(fig)


def dashed(fig):
    return [line for ax in fig.axes for line in ax.get_lines() if line.get_linestyle() == "--"]


def test_the_rankme_profile_draws_the_control_dashed_in_the_runs_colour(records, drawn, tmp_path):
    _, out = records
    figures.plot_rankme_profile(out[RUN, "rankme"], tmp_path / "a.png", control=out[CONTROL, "rankme"])
    (line,) = dashed(drawn[0])
    mpps, values = figures.rankme_points(out[CONTROL, "rankme"])
    np.testing.assert_allclose(line.get_xdata(), mpps)
    np.testing.assert_allclose(line.get_ydata(), values)
    solid = [li for li in drawn[0].axes[0].get_lines() if li.get_linestyle() == "-"][0]
    assert line.get_color() == solid.get_color() and "initialisation" in line.get_label()
    figures.plot_rankme_profile(out[RUN, "rankme"], tmp_path / "b.png")
    assert dashed(drawn[1]) == []


def test_the_comparison_pairs_each_control_with_its_run(records, drawn, tmp_path):
    _, out = records
    rankme_comparison.plot_rankme_comparison({RUN: out[RUN, "rankme"], CONTROL: out[CONTROL, "rankme"]}, tmp_path / "c.png")
    (line,) = dashed(drawn[0])
    run_line = next(li for li in drawn[0].axes[0].get_lines() if li.get_label() == RUN)
    assert line.get_color() == run_line.get_color()
    np.testing.assert_allclose(line.get_ydata(), figures.rankme_points(out[CONTROL, "rankme"])[1])


def test_the_probe_curves_draw_the_controls_means(records, drawn, tmp_path):
    _, out = records
    figures.plot_probe_curves(out[RUN, "probes"], tmp_path / "p.png", control=out[CONTROL, "probes"])
    lines = dashed(drawn[0])
    assert len(lines) == 4  # kNN and linear, on both panels
    scores = out[CONTROL, "probes"]["result"]["scores"]
    expected = [scores[f"{float(m):g}"]["linear"]["balanced_accuracy"]["mean"]
                for m in out[CONTROL, "probes"]["result"]["mpps"]]
    assert any(np.allclose(line.get_ydata(), expected) for line in lines)


def test_the_index_summary_shows_the_control(records):
    root, _ = records
    index = build_report([RUN], {RUN: root / "embeddings" / RUN / "eval.h5"}, root / "eval", root / "report",
                         {"seeds": [0]})
    page = index.read_text()
    assert "at init: RankMe min / max" in page
    values = figures.rankme_points(records[1][CONTROL, "rankme"])[1]
    assert f"{min(values):.2f} / {max(values):.2f}" in page


def test_the_robustness_index_stands_beside_rankme_for_the_run_and_its_control(records):
    root, out = records
    index = build_report([RUN], {RUN: root / "embeddings" / RUN / "eval.h5"}, root / "eval", root / "report",
                         {"seeds": [0]})
    page = index.read_text()
    run, control = out[RUN, "robustness"]["result"], out[CONTROL, "robustness"]["result"]
    assert run["ri"] > control["ri"]  # the run's features cluster by class more tightly than its noisier control's
    header = re.findall(r"<th>([^<]*)</th>", page)
    assert header.index("magnification RI (k)") == header.index("at init: RankMe min / max") + 1
    assert f"{run['ri']:.3f} (k={run['k']})" in page and f"{control['ri']:.3f} (k={control['k']})" in page
    tables = (root / "report" / RUN / "tables.html").read_text()
    assert "Magnification Robustness Index" in tables and "at init (control)" in tables
    assert f"{next(iter(run['per_mpp'].values())):.3f}" in tables  # the per-mpp column
