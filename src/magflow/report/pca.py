"""PCA of two scales' embeddings: each parent (coarse view) joined by lines to its children (fine views).

One PCA is fitted on the L2-normalised parents and children together, so both scales share the
plane. Colour tells the scale, the marker the class (of the parent: the majority of its children).
At most ``max_parents`` parents are drawn, those with the most children (ties: the first rows).
"""

from __future__ import annotations

import os

import numpy as np
from sklearn.decomposition import PCA

from magflow.evaluate.consistency import hierarchy_pairs
from magflow.evaluate.data import EvalData, l2_normalize
from magflow.evaluate.record import MetricSkipped
from magflow.plotting import plt, save
from magflow.report.figures import skipped_figure

MARKERS = "osD^vP*Xph<>"
MAX_PARENTS = 40


def plot_hierarchy_pca(data: EvalData, path: str | os.PathLike[str], coarse_mpp: float, fine_mpp: float,
                       max_parents: int = MAX_PARENTS) -> None:
    try:
        pairs = hierarchy_pairs(data, coarse_mpp, fine_mpp)
    except MetricSkipped as skip:
        return skipped_figure({"reason": str(skip)}, path, f"PCA: {data.model}")
    counts = np.bincount(pairs.child_parent, minlength=len(pairs.parents))
    chosen = np.argsort(-counts, kind="stable")[:max_parents]
    chosen = chosen[counts[chosen] > 0]
    kids = np.flatnonzero(np.isin(pairs.child_parent, chosen))
    parents = l2_normalize(data.features(coarse_mpp, pairs.parents[chosen]))
    children = l2_normalize(data.features(fine_mpp, pairs.children[kids]))
    plane = PCA(n_components=2, random_state=0).fit(np.vstack([parents, children]))
    p2, c2 = plane.transform(parents), plane.transform(children)
    where = {parent: i for i, parent in enumerate(chosen)}
    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    for j, owner in enumerate(pairs.child_parent[kids]):
        i = where[int(owner)]
        ax.plot([p2[i, 0], c2[j, 0]], [p2[i, 1], c2[j, 1]], color="0.7", lw=0.6, zorder=1)
    names = data.class_names
    labels = pairs.parent_labels[chosen]
    for label in np.unique(labels):
        marker = MARKERS[int(label) % len(MARKERS)] if label >= 0 else "."
        name = names[label] if 0 <= label < len(names) else "unlabelled"
        mine = labels == label
        ax.scatter(p2[mine, 0], p2[mine, 1], marker=marker, s=60, color="C3", edgecolor="k", lw=0.5, zorder=3,
                   label=f"{name}")
        kid_mine = np.isin(pairs.child_parent[kids], chosen[mine])
        ax.scatter(c2[kid_mine, 0], c2[kid_mine, 1], marker=marker, s=22, color="C0", alpha=0.8, zorder=2)
    ratio = plane.explained_variance_ratio_
    ax.set_xlabel(f"PC 1 ({ratio[0]:.0%})")
    ax.set_ylabel(f"PC 2 ({ratio[1]:.0%})")
    ax.set_title(f"{data.model}\n{len(chosen)} parents at {coarse_mpp:g} mpp (red) → {len(kids)} children at "
                 f"{fine_mpp:g} mpp (blue); marker = class", fontsize=8)
    ax.legend(fontsize=6, loc="best", title="class", title_fontsize=7)
    save(fig, path)
