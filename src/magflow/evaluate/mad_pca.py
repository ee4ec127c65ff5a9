"""Fig 3 of the MAD paper: PCA of a few parents and their aligned children, coloured by magnification.

One panel per pair of adjacent scales of the ``mad`` tiles (2.5×→10×, 10×→40×). Drawn are up to
``parents`` complete parents (all f² children kept; chosen by ``numpy.random.default_rng(seed)`` among
those of the test slides, or of all slides when no test slide has one) with their 16 children; one PCA
per panel is fitted on those parents and children together, L2-normalised. Colour: the magnification;
marker: which parent a tile belongs to; grey lines join each parent to its children.
"""

from __future__ import annotations

import os

import numpy as np
from sklearn.decomposition import PCA

from magflow.aggregate.methods import magnification
from magflow.evaluate.data import l2_normalize
from magflow.evaluate.mad_hierarchy import adjacent_pairs, aligned_children
from magflow.evaluate.mad_tiles import MadTiles
from magflow.plotting import plt, save

MARKERS = "osD^vP*Xph"
COLOURS = ("tab:red", "tab:blue", "tab:green", "tab:purple", "tab:orange")  # coarsest scale first


def chosen_parents(tiles: MadTiles, coarse_mpp: float, fine_mpp: float, n: int,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """Up to ``n`` complete parents (coarse rows), their children (n × f² fine rows) and which slides."""
    coarse, fine = tiles.scale(coarse_mpp), tiles.scale(fine_mpp)
    factor = tiles.factor(coarse_mpp, fine_mpp)
    if n < 1:
        return np.zeros(0, np.int64), np.zeros((0, factor * factor), np.int64), "evaluate.mad.pca_parents is 0"
    for where, slides in (("the test slides", tiles.slides_in("test")), ("all slides", None)):
        rows = coarse.rows(slides)
        children = aligned_children(coarse, fine, rows, factor)
        complete = (children >= 0).all(axis=1)
        if complete.any():
            rng = np.random.default_rng(seed)
            pick = np.sort(rng.choice(np.flatnonzero(complete), size=min(n, int(complete.sum())), replace=False))
            return rows[pick], children[pick], where
    return np.zeros(0, np.int64), np.zeros((0, factor * factor), np.int64), "no parent has all its children kept"


def plot_mad_pca(tiles: MadTiles, path: str | os.PathLike[str], parents: int = 4, seed: int = 0) -> None:
    pairs = adjacent_pairs(tiles)
    colour = {m: COLOURS[i % len(COLOURS)] for i, m in enumerate(tiles.mpps)}
    fig, axes = plt.subplots(1, max(len(pairs), 1), figsize=(5.2 * max(len(pairs), 1), 4.8), squeeze=False)
    model = str(tiles.attrs.get("model", ""))
    for ax, (coarse_mpp, fine_mpp) in zip(axes[0], pairs):
        title = f"{magnification(coarse_mpp)} parents → {magnification(fine_mpp)} children"
        rows, children, where = chosen_parents(tiles, coarse_mpp, fine_mpp, parents, seed)
        if not len(rows):
            ax.axis("off")
            ax.text(0.5, 0.5, f"{title}\nnothing drawn: {where}", ha="center", va="center", fontsize=9)
            continue
        p = l2_normalize(tiles.scale(coarse_mpp).features[rows])
        c = l2_normalize(tiles.scale(fine_mpp).features[children.ravel()])
        plane = PCA(n_components=2, random_state=0).fit(np.vstack([p, c]))
        p2, c2 = plane.transform(p), plane.transform(c).reshape(len(rows), children.shape[1], 2)
        for i in range(len(rows)):
            marker = MARKERS[i % len(MARKERS)]
            for xy in c2[i]:
                ax.plot([p2[i, 0], xy[0]], [p2[i, 1], xy[1]], color="0.8", lw=0.5, zorder=1)
            ax.scatter(c2[i, :, 0], c2[i, :, 1], marker=marker, s=18, color=colour[fine_mpp], alpha=0.8, zorder=2,
                       label=f"{magnification(fine_mpp)} ({fine_mpp:g} mpp)" if i == 0 else None)
            ax.scatter(p2[i, 0], p2[i, 1], marker=marker, s=90, color=colour[coarse_mpp], edgecolor="k", lw=0.6,
                       zorder=3, label=f"{magnification(coarse_mpp)} ({coarse_mpp:g} mpp)" if i == 0 else None)
        ratio = plane.explained_variance_ratio_
        ax.set_xlabel(f"PC 1 ({ratio[0]:.0%})")
        ax.set_ylabel(f"PC 2 ({ratio[1]:.0%})")
        ax.set_title(f"{title}\n{len(rows)} parents of {where}, {children.shape[1]} children each; "
                     "marker = parent", fontsize=8)
        ax.legend(fontsize=7, title="magnification", title_fontsize=7, loc="best")
    if not pairs:
        axes[0, 0].axis("off")
        axes[0, 0].text(0.5, 0.5, "fewer than two scales: no parent-child pair", ha="center", va="center")
    fig.suptitle(f"{model}: parents and their aligned children (MAD Fig 3)", fontsize=9)
    save(fig, path)
