"""Slide/group-disjoint, seeded, stratified train/val/test splits."""

import numpy as np
import pytest

from magflow.evaluate import SEEDS, seeded_splits, split_slides, split_units


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
