"""Magnification Robustness Index (croma's RI, mpp as confounder) on constructed cases with known answers."""

import numpy as np
import pytest

from magflow.evaluate.robustness import RI_K_CANDIDATES, robustness_index

MPPS = (0.25, 0.5, 1.0, 2.0)


def tiles(n_slides=12, per_slide=10, seed=0):
    rng = np.random.default_rng(seed)
    slides = np.repeat(np.arange(n_slides), per_slide)
    labels = rng.integers(0, 3, len(slides))
    return rng, slides, labels


def test_embeddings_that_cluster_by_class_score_high():
    rng, slides, labels = tiles()
    centres = rng.normal(scale=4.0, size=(3, 16))
    features = {m: centres[labels] + rng.normal(size=(len(labels), 16)) for m in MPPS}
    result = robustness_index(features, labels, slides)
    assert result.value > 0.95
    assert all(v > 0.9 for v in result.per_mpp.values())
    assert all(v > 0.9 for v in result.pairs.values()) and len(result.pairs) == 6
    assert result.k in RI_K_CANDIDATES and result.support > 0.9 and result.n == 4 * len(labels)
    settings = result.as_result()["settings"]
    assert (settings["package"], settings["confounder"], settings["design"], settings["k"]) == (
        "croma", "mpp", "all", result.k)
    assert settings["version"] and settings["k_candidates"] == list(RI_K_CANDIDATES)


def test_embeddings_that_cluster_by_mpp_score_low():
    rng, slides, labels = tiles(seed=1)
    shifts = rng.normal(scale=4.0, size=(len(MPPS), 16))
    features = {m: shifts[i] + rng.normal(size=(len(labels), 16)) for i, m in enumerate(MPPS)}
    result = robustness_index(features, labels, slides)
    assert result.value < 0.05
    assert all(v < 0.1 for v in result.per_mpp.values())
    assert all(v < 0.1 for v in result.pairs.values())


def test_class_lost_at_one_mpp_is_low_at_that_mpp_and_in_its_pairs():
    rng, slides, labels = tiles(seed=2)
    centres = rng.normal(scale=4.0, size=(3, 16))
    features = {m: centres[labels] + rng.normal(size=(len(labels), 16)) for m in MPPS}
    features[2.0] = 10.0 * np.eye(16)[0] + rng.normal(size=(len(labels), 16))  # 2 mpp: no class, its own cluster
    result = robustness_index(features, labels, slides)
    assert result.per_mpp[2.0] < 0.1 and result.per_mpp_support[2.0] > 0.9
    assert result.per_mpp[0.25] > 0.9
    assert result.pairs[(0.25, 0.5)] > 0.9 and result.pairs[(0.25, 2.0)] < 0.1
    assert 0.1 < result.value < 0.9


def test_unlabelled_and_absent_rows_are_left_out():
    rng, slides, labels = tiles(seed=3)
    centres = rng.normal(scale=4.0, size=(3, 16))
    features = {m: centres[labels] + rng.normal(size=(len(labels), 16)) for m in MPPS}
    labels = labels.copy()
    labels[:5] = -1
    present = {m: np.ones(len(labels), bool) for m in MPPS}
    present[1.0][5:15] = False
    result = robustness_index(features, labels, slides, present=present, pairs=False)
    assert result.n == 4 * (len(labels) - 5) - 10 and result.pairs == {}
    with pytest.raises(ValueError, match="at least two mpps"):
        robustness_index({0.5: features[0.5]}, labels, slides)


def test_on_an_eval_embeddings_file(tmp_path):
    from eval_fixtures import MPPS as EVAL_MPPS, make_embeddings, sheet
    from magflow.evaluate.data import EvalData
    from magflow.evaluate.robustness import robustness_metric
    from magflow.evaluate.settings import EvalContext

    data = EvalData.read(make_embeddings(tmp_path / "emb.h5"))
    _, groups = sheet()
    outcome = robustness_metric(data, EvalContext(groups=groups))
    result = outcome.result
    assert 0.0 <= result["ri"] <= 1.0 and set(result["per_mpp"]) == {f"{m:g}" for m in EVAL_MPPS}
    assert outcome.constants["confounder"] == "mpp" and outcome.constants["k"] == result["k"]
