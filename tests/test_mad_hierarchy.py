"""MAD Table 4 (Δhier, Δsem) on a hand-made hierarchy, against an independent plain-Python computation."""

import math

import numpy as np
import pytest

from magflow.errors import ConfigError
from magflow.evaluate.mad_hierarchy import bootstrap_interval, hierarchy_pair, mad_hierarchy, parent_sets
from magflow.evaluate.mad_tiles import MadScale, MadTiles

COARSE, FINE = 1.0, 0.25  # factor 4: 16 children per parent


def children_of(col, row):
    return [(col * 4 + a, row * 4 + b) for b in range(4) for a in range(4)]


def build():
    """Three slides. Test slide s1: parent A (class 0) and parent B (class 1), each with 16 children of
    its class, and parent D (class 0) with one child missing. Test slide s2: parent C (class 0) with 16
    children of class 0, parent E (unlabelled) with 16 unlabelled children, 4 loose class-1 fine tiles
    (no parent) and one unlabelled tile. So B's only
    same-class tiles that are not its own children lie on s2. Train slide s3: a parent and children of
    class 1, which must never be drawn."""
    rng = np.random.default_rng(7)
    coarse, fine = [], []  # (slide, (col, row), label)
    for slide, cell, label in [("s1", (0, 0), 0), ("s1", (1, 0), 1), ("s1", (2, 0), 0), ("s2", (0, 0), 0),
                               ("s2", (1, 0), -1), ("s3", (0, 0), 1)]:
        coarse.append((slide, cell, label))
        kids = children_of(*cell)
        if (slide, cell) == ("s1", (2, 0)):
            kids = kids[:-1]  # D: a child missing
        fine += [(slide, k, label) for k in kids]
    fine += [("s2", (20 + i, 0), 1) for i in range(4)] + [("s2", (30, 0), -1)]

    def scale(mpp, rows, shift):
        slides = np.array([r[0] for r in rows])
        grid = np.array([r[1] for r in rows], np.int64)
        labels = np.array([r[2] for r in rows], np.int64)
        # hand-set direction per class plus a little noise, so cosines differ by class and by tile
        base = np.where(labels[:, None] == 1, [0.0, 1.0, 0.2, 0.0], [1.0, 0.0, 0.2, 0.0]) + [0, 0, 0, shift]
        features = (base + 0.3 * rng.standard_normal((len(rows), 4))).astype(np.float32)
        return MadScale(mpp, mpp, 224 * mpp, slides, grid, labels, features)

    return MadTiles({COARSE: scale(COARSE, coarse, 0.5), FINE: scale(FINE, fine, 0.0)}, ["a", "b"],
                    {"s1": "test", "s2": "test", "s3": "train"})


def cosine(u, v):
    return sum(a * b for a, b in zip(u, v)) / math.sqrt(sum(a * a for a in u) * sum(b * b for b in v))


def expected(tiles):
    """Plain Python: every complete, labelled test parent; every non-aligned labelled test fine tile as a negative."""
    coarse, fine = tiles.scale(COARSE), tiles.scale(FINE)
    test = {s for s, split in tiles.splits.items() if split == "test"}
    where = {(str(fine.slides[i]), int(fine.grid[i, 0]), int(fine.grid[i, 1])): i for i in range(len(fine.slides))}
    per = {"s_pos": [], "s_neg_same": [], "s_neg_diff": []}
    for p in range(len(coarse.slides)):
        slide, label = str(coarse.slides[p]), int(coarse.labels[p])
        if slide not in test or label < 0:
            continue
        kids = [where.get((slide, c, r)) for c, r in children_of(*coarse.grid[p])]
        if any(k is None for k in kids):
            continue
        same = [i for i in range(len(fine.slides)) if str(fine.slides[i]) in test and i not in kids
                and fine.labels[i] == label]
        diff = [i for i in range(len(fine.slides)) if str(fine.slides[i]) in test and i not in kids
                and fine.labels[i] >= 0 and fine.labels[i] != label]
        for key, rows in (("s_pos", kids), ("s_neg_same", same), ("s_neg_diff", diff)):
            per[key].append(sum(cosine(coarse.features[p], fine.features[i]) for i in rows) / len(rows))
    means = {k: sum(v) / len(v) for k, v in per.items()}
    means["delta_hier"] = means["s_pos"] - means["s_neg_same"]
    means["delta_sem"] = means["s_neg_same"] - means["s_neg_diff"]
    return means, len(per["s_pos"])


def test_scores_match_a_plain_loop_with_negatives_from_every_test_slide():
    tiles = build()
    record = hierarchy_pair(tiles, COARSE, FINE, negatives=100, bootstrap=200, seed=0)  # 100: every candidate
    means, n = expected(tiles)
    assert record["status"] == "ok" and record["counts"]["scored"] == n == 3  # A, B, C
    for key, value in means.items():
        assert record[key]["mean"] == pytest.approx(value, abs=1e-6), key
    assert record["counts"]["incomplete"] == 1  # D, with a child missing, is dropped and counted
    assert record["counts"]["unlabelled"] == 1  # E: no class to draw negatives of
    assert record["counts"]["pairs_pos"] == 3 * 16
    # B (s1, class 1): its same-class negatives are the 4 loose class-1 tiles of s2, from another slide
    sets = parent_sets(tiles, COARSE, FINE, negatives=100, seed=0)
    coarse, fine = tiles.scale(COARSE), tiles.scale(FINE)
    b = [i for i, p in enumerate(sets.parents) if coarse.slides[p] == "s1" and coarse.labels[p] == 1][0]
    assert sorted(fine.slides[sets.same[b]]) == ["s2"] * 4
    assert record["counts"]["negatives_from_other_slides"] > 0
    assert not any(fine.slides[r] == "s3" for rows in sets.same + sets.diff for r in rows)  # never the train slide


def test_draws_are_seeded_non_aligned_test_tiles_of_the_right_class():
    tiles = build()
    coarse, fine = tiles.scale(COARSE), tiles.scale(FINE)
    first = parent_sets(tiles, COARSE, FINE, negatives=3, seed=5)
    again = parent_sets(tiles, COARSE, FINE, negatives=3, seed=5)
    other = parent_sets(tiles, COARSE, FINE, negatives=3, seed=6)
    assert all(np.array_equal(a, b) for a, b in zip(first.same + first.diff, again.same + again.diff))
    assert not all(np.array_equal(a, b) for a, b in zip(first.same + first.diff, other.same + other.diff))
    for p, kids, same, diff in zip(first.parents, first.children, first.same, first.diff):
        assert len(same) == len(diff) == 3 and len(set(same)) == 3 and len(set(diff)) == 3
        assert not set(same) & set(kids) and not set(diff) & set(kids)
        assert (fine.labels[same] == coarse.labels[p]).all()
        assert ((fine.labels[diff] != coarse.labels[p]) & (fine.labels[diff] >= 0)).all()
        assert set(fine.slides[np.concatenate([same, diff])]) <= {"s1", "s2"}


def test_bootstrap_interval_holds_the_mean_and_is_seeded():
    tiles = build()
    record = hierarchy_pair(tiles, COARSE, FINE, negatives=100, bootstrap=500, seed=3)
    for key in ("s_pos", "delta_hier", "delta_sem"):
        lo, hi = record[key]["ci95"]
        assert lo <= record[key]["mean"] <= hi
    assert hierarchy_pair(tiles, COARSE, FINE, negatives=100, bootstrap=500, seed=3) == record
    values = np.linspace(0.0, 1.0, 41)
    assert bootstrap_interval(values, 300, seed=1) == bootstrap_interval(values, 300, seed=1)
    assert bootstrap_interval(values, 300, seed=1) != bootstrap_interval(values, 300, seed=2)
    lo, hi = bootstrap_interval(values, 300, seed=1)
    assert lo < 0.5 < hi


def test_a_pair_with_no_parent_to_score_is_skipped_with_its_counts():
    tiles = build()
    only_s3 = MadTiles(tiles.scales, tiles.class_names, {"s1": "train", "s2": "train", "s3": "test"})
    record = hierarchy_pair(only_s3, COARSE, FINE)
    # s3's one parent: every class-1 fine tile of the test slides is its own child, so nothing to draw
    assert record["status"] == "skipped" and "no same-class" in record["reason"]
    assert record["counts"]["no_same_class_negative"] == 1 and record["counts"]["scored"] == 0
    table = mad_hierarchy(tiles, negatives=4, bootstrap=50)
    assert list(table["pairs"]) == ["10x>40x"] and table["pairs"]["10x>40x"]["status"] == "ok"


def test_min_children_scores_a_parent_over_the_children_it_has():
    tiles = build()
    coarse, fine = tiles.scale(COARSE), tiles.scale(FINE)
    strict = hierarchy_pair(tiles, COARSE, FINE, negatives=100, bootstrap=50)
    loose = hierarchy_pair(tiles, COARSE, FINE, negatives=100, bootstrap=50, min_children=15)
    assert (strict["min_children"], loose["min_children"]) == (16, 15)
    assert (strict["counts"]["incomplete"], loose["counts"]["incomplete"]) == (1, 0)
    assert loose["counts"]["scored"] == strict["counts"]["scored"] + 1  # D, with 15 of its 16 children
    assert loose["counts"]["pairs_pos"] == 3 * 16 + 15
    sets = parent_sets(tiles, COARSE, FINE, negatives=100, seed=0, min_children=15)
    d = [i for i, p in enumerate(sets.parents) if coarse.slides[p] == "s1" and tuple(coarse.grid[p]) == (2, 0)][0]
    kids = sets.children[d]
    assert len(kids) == 15 and (fine.slides[kids] == "s1").all()
    assert {tuple(g) for g in fine.grid[kids]} == set(children_of(2, 0)[:-1])
    # D's s_pos is the mean cosine over the 15 children it has, as a plain loop computes it
    p = sets.parents[d]
    expected = sum(cosine(coarse.features[p], fine.features[k]) for k in kids) / 15
    from magflow.evaluate.mad_hierarchy import per_parent_scores
    assert per_parent_scores(tiles, COARSE, FINE, sets)["s_pos"][d] == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ConfigError, match="min_children"):
        parent_sets(tiles, COARSE, FINE, min_children=17)
