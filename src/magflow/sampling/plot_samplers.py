"""The strategy comparison figure for one kernel: p(x) on the left, I(y) on the right."""

from __future__ import annotations

import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from magflow.atomic import atomic_path  # noqa: E402
from magflow.errors import ConfigError  # noqa: E402
from magflow.sampling.distributions import STANDARD_MPPS  # noqa: E402
from magflow.sampling.record import read_sampler  # noqa: E402
from magflow.sampling.sampler import Sampler  # noqa: E402


def label(sampler: Sampler) -> str:
    """A short legend name: the strategy and the parameter that distinguishes it."""
    cfg = sampler.config
    if cfg.strategy == "single":
        return f"single {cfg.mpp:g}"
    if cfg.strategy == "cu_maxavg":
        return f"cu_maxavg λ={cfg.effective_lam:g}"
    return cfg.strategy


def plot_sampler_comparison(json_paths: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str]) -> None:
    """Plot every sampler JSON (all of one kernel) into one PNG/SVG figure at ``out``.

    Left: the density of the continuous part (mass / cell width) as steps, and atoms as stems
    on a second axis (their mass). Right: I(y) with min I in the legend. Dotted lines mark the
    standard mpps.
    """
    samplers = [read_sampler(p) for p in json_paths]
    kernels = {s.config.kernel for s in samplers}
    if len(kernels) != 1:
        raise ConfigError(f"a comparison figure is for one kernel, got {sorted(kernels)}")
    fig, (ax_p, ax_i) = plt.subplots(1, 2, figsize=(12, 5.5), constrained_layout=True)
    ax_atoms = ax_p.twinx()
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, sampler in enumerate(samplers):
        color = colors[k % len(colors)]
        dist = sampler.distribution
        cont = ~dist.atoms
        if cont.any():
            lo, hi, mass = dist.cell_lo[cont], dist.cell_hi[cont], dist.mass[cont]
            xs = np.column_stack([lo, hi]).ravel()
            ax_p.plot(xs, np.repeat(mass / (hi - lo), 2), color=color, label=label(sampler))
        if dist.atoms.any():
            x, m = dist.support[dist.atoms], dist.mass[dist.atoms]
            ax_atoms.vlines(x, 0, m, color=color, alpha=0.6)
            ax_atoms.plot(x, m, "o", color=color, label=f"{label(sampler)} (atoms)")
        ax_i.plot(sampler.grid, sampler.quality, color=color, label=f"{label(sampler)}: min I = {sampler.min_quality:.3f}")
    for ax in (ax_p, ax_i):
        for m in STANDARD_MPPS:
            ax.axvline(m, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("mpp (µm per pixel)")
    ax_p.set_ylabel("density p(x) per mpp (continuous part)")
    ax_atoms.set_ylabel("atom mass")
    ax_atoms.set_ylim(bottom=0)
    ax_p.set_ylim(bottom=0)
    handles = [h for ax in (ax_p, ax_atoms) for h in ax.get_legend_handles_labels()[0]]
    below = {"loc": "upper left", "bbox_to_anchor": (0.0, -0.14), "ncol": 2, "fontsize": 8, "frameon": False}
    ax_p.legend(handles=handles, **below)
    ax_p.set_title("sampling distribution p(x)")
    ax_i.set_ylabel("I(y) = ∫ p(x) K(x, y) dx")
    ax_i.set_title("expected training signal I(y)")
    ax_i.legend(**below)
    fig.suptitle(f"Magnification sampling strategies, kernel '{kernels.pop()}'")
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
