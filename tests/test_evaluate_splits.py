"""Slide/group-disjoint, seeded, stratified train/val/test splits."""

from pathlib import Path

import numpy as np
import pytest

from magflow.evaluate import SEEDS, distinct_splits, seeded_splits, split_slides, split_units


def cohort(n_slides=40, n_groups=20, tiles=8, seed=0):
    """Tiles of slides that belong to patients; each slide has one dominant class."""
    rng = np.random.default_rng(seed)
    slide_group = {f"s{i:02d}": f"p{i % n_groups:02d}" for i in range(n_slides)}
    slides = np.repeat(list(slide_group), tiles)
    groups = np.array([slide_group[s] for s in slides])
    labels = np.repeat(np.arange(n_slides) % 3, tiles)
    labels[rng.random(len(labels)) < 0.2] = 3  # a class spread over slides
    return labels, slides, groups, slide_group


def test_no_slide_or_group_in_two_splits_and_rows_cover_everything():
    labels, slides, groups, slide_group = cohort()
    splits = seeded_splits(labels, slides, groups)
    assert [s.seed for s in splits] == list(SEEDS)
    for split in splits:
        parts = (split.train, split.val, split.test)
        assert set().union(*parts) == set(slides)
        assert all(not (a & b) for i, a in enumerate(parts) for b in parts[i + 1:])
        patients = [{slide_group[s] for s in part} for part in parts]
        assert all(not (a & b) for i, a in enumerate(patients) for b in patients[i + 1:])
        rows = split.rows(slides)
        joined = np.concatenate([rows.train, rows.val, rows.test])
        assert sorted(joined) == list(range(len(slides)))
        assert all(np.isin(slides[rows.test], list(split.test)))
        assert set(labels[rows.test]) == set(labels)  # stratified: every class is tested


def test_seeded_and_reproducible():
    labels, slides, groups, _ = cohort()
    assert split_slides(labels, slides, groups, seed=3) == split_slides(labels, slides, groups, seed=3)
    tests = {split.test for split in seeded_splits(labels, slides, groups)}
    assert len(tests) > 1


def test_fractions_are_by_unit():
    labels, slides, _, _ = cohort(n_slides=40, n_groups=40)
    split = split_slides(labels, slides, seed=0)
    assert 6 <= len(split.test) <= 10 and 6 <= len(split.val) <= 10  # 20% of 40 slides each


def test_slides_linked_through_groups_form_one_unit():
    slides = np.array(["a", "b", "b", "c", "d", "e"])
    groups = np.array(["g1", "g1", "g2", "g2", "g3", "g4"])  # a–b share g1, b–c share g2
    units = split_units(slides, groups)
    assert units[0] == units[1] == units[2] == units[3]
    assert len({units[0], units[4], units[5]}) == 3
    assert list(split_units(["x", "y", "x"])) == [0, 1, 0]


def test_too_few_units_is_a_clear_error():
    labels, slides, groups, _ = cohort(n_slides=8, n_groups=3)
    with pytest.raises(ValueError, match="3 slide/group units"):
        split_slides(labels, slides, groups)


def distinct_cohort(n_slides=8, n_classes=3, tiles=24, seed=0):
    """Slides that each have their own label histogram (no two alike), one unit per slide."""
    rng = np.random.default_rng(seed)
    slides, labels = [], []
    for i in range(n_slides):
        share = rng.dirichlet(np.ones(n_classes) * 2)
        counts = np.maximum(1, np.round(share * tiles)).astype(int)
        counts[i % n_classes] += i + 1  # makes every histogram different
        labels += [c for c in range(n_classes) for _ in range(counts[c])]
        slides += [f"s{i}"] * counts.sum()
    return np.array(labels), np.array(slides)


def test_seeds_draw_distinct_splits_when_every_slide_is_unique():
    labels, slides = distinct_cohort()
    assert len({tuple(np.bincount(labels[slides == s], minlength=3)) for s in set(slides)}) == 8
    splits = seeded_splits(labels, slides, seeds=range(5))
    assert len({split.test for split in splits}) >= 4 and distinct_splits(splits) == 5
    for split in splits:
        parts = (split.train, split.val, split.test)
        assert all(part for part in parts) and set().union(*parts) == set(slides)
        assert all(not (a & b) for i, a in enumerate(parts) for b in parts[i + 1:])
        assert set(labels[split.rows(slides).train]) == set(labels)  # every class is trained on


def test_first_k_seeds_are_a_cross_validation():
    labels, slides, groups, slide_group = cohort()
    tests = [split.test for split in seeded_splits(labels, slides, groups)]  # five seeds, five test folds
    assert all(not (a & b) for i, a in enumerate(tests) for b in tests[i + 1:])
    assert set().union(*tests) == set(slides)


def plan(labels, slides, **settings):
    """The split plan of an evaluation over these labelled tiles (sheet: first slide test, second val)."""
    from types import SimpleNamespace

    from magflow.evaluate.data import EvalData
    from magflow.evaluate.settings import EvalContext, EvalSettings
    from magflow.evaluate.split_plan import plan_splits

    names = sorted(set(slides))
    sheet = {s: "test" if i == 0 else "val" if i == 1 else "train" for i, s in enumerate(names)}
    data = EvalData(Path("emb.h5"), SimpleNamespace(label=np.asarray(labels), slide=np.asarray(slides)))
    return plan_splits(data, EvalContext(EvalSettings.from_config(settings), sheet)).describe()


def test_a_cohort_too_small_for_seeded_splits_says_so():
    labels, slides = distinct_cohort(n_slides=3)
    described = plan(labels, slides)
    assert described["mode"] == "sheet" and described["too_small"] and described["units"] == 3
    assert described["distinct"] == 1 and "3 slide/group units cannot be split" in described["note"]
    from magflow.evaluate.record import MetricSkipped

    with pytest.raises(MetricSkipped, match="3 slide/group units"):
        plan(labels, slides, splits="seeded")


def test_seeds_beyond_the_distinct_splits_are_recorded():
    labels, slides = distinct_cohort(n_slides=5)  # one test and one val slide: at most 5 · 4 splits
    described = plan(labels, slides, seeds=list(range(25)))
    assert described["mode"] == "seeded" and described["units"] == 5 and described["too_small"]
    assert described["distinct"] <= 20
    assert f"only {described['distinct']} distinct splits for 25 seeds" in described["note"]
    enough = plan(*distinct_cohort(n_slides=8))
    assert enough["distinct"] == 5 and not enough["too_small"] and enough["note"] == ""
