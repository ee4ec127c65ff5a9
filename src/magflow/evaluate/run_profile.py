"""Label-free profiles across mpp: RankMe and the centroid similarity matrix.

Rows. mpps at which no tile has a view are left out (and listed with the reason). The profile is
then computed on the *same tiles* at every remaining mpp, the tiles with a view at all of them,
when there are at least as many as the feature width (RankMe cannot exceed the row count). Else
each mpp uses its own tiles: for RankMe a seeded sample of equal size at every mpp (the smallest
count), since RankMe grows with N; for the centroids all of them. The record says which.
"""

from __future__ import annotations

import numpy as np

from magflow.evaluate.centroids import centroid_similarity
from magflow.evaluate.data import EvalData, mpp_key
from magflow.evaluate.outcome import MetricResult, MetricSkipped
from magflow.evaluate.rankme import RANKME_MAX_N, RANKME_SEED, definition_constants, rankme_by_definition, shared_rows
from magflow.evaluate.settings import EvalContext

SAME_TILES = "same tiles at every mpp"
OWN_TILES = "each mpp's own tiles"


def profile_rows(data: EvalData) -> tuple[dict[float, np.ndarray], str, dict[str, str]]:
    """(mpp → rows, which rule chose them, mpp → why it is left out)."""
    served = data.served_mpps()
    left_out = {mpp_key(m): "no tile has a view at this mpp" for m in data.mpps if m not in served}
    if not served:
        raise MetricSkipped("no tile has a view at any mpp")
    common = data.common_rows(served)
    width = data.features(served[0]).shape[1]
    if len(common) >= width:
        return {m: common for m in served}, SAME_TILES, left_out
    return {m: np.flatnonzero(data.usable(m)) for m in served}, OWN_TILES, left_out


def rankme_profile(data: EvalData, context: EvalContext) -> MetricResult:
    rows, rule, left_out = profile_rows(data)
    n = min(len(r) for r in rows.values())
    cap = min(n, RANKME_MAX_N)
    definition = context.settings.rankme_definition
    scores = {}
    for m, r in rows.items():
        keep = r[shared_rows(len(r), cap, RANKME_SEED)]
        scores[mpp_key(m)] = rankme_by_definition(data.features(m, keep), definition)
    result = {"definition": definition, "mpps": [float(m) for m in rows], "rows": rule, "left_out": left_out,
              "n_available": {mpp_key(m): len(r) for m, r in rows.items()},
              "rankme": {k: s.score for k, s in scores.items()}, "n": {k: s.n for k, s in scores.items()},
              "dim": next(iter(scores.values())).dim}
    return MetricResult(result, [RANKME_SEED], {**definition_constants(definition), "max_n": RANKME_MAX_N,
                                                "row_seed": RANKME_SEED, "equal_n": cap})


def centroid_profile(data: EvalData, context: EvalContext) -> MetricResult:
    rows, rule, left_out = profile_rows(data)
    similarity = centroid_similarity({m: data.features(m, r) for m, r in rows.items()})
    result = {"mpps": list(similarity.mpps), "rows": rule, "left_out": left_out, "matrix": similarity.matrix,
              "n": {mpp_key(m): n for m, n in zip(similarity.mpps, similarity.n)}}
    return MetricResult(result, [], {"normalisation": "L2 per tile, then mean; cosine of the means"})
