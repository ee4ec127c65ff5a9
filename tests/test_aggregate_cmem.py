"""CMEM: dihedral augmentation consistent across scales, NT-Xent, and sub-regions drawn from a context."""

import math

import numpy as np
import pytest
import torch

from magflow.aggregate.augment import dihedral_positions
from magflow.aggregate.cmem import CMEM, nt_xent
from magflow.aggregate.data import RegionSource
from magflow.aggregate.mem import mask_tokens
from magflow.aggregate.mixer import MixerConfig
from magflow.aggregate.regions import region_layout
from magflow.aggregate.synthetic import write_synthetic_regions


def own_grid_after(layout, k: int, s: int) -> np.ndarray:
    """Token ids laid out on scale s's own grid after dihedral element k."""
    position = torch.from_numpy(layout.position)[None]
    cell = torch.from_numpy(layout.cell)[None]
    moved = dihedral_positions(position, cell, layout.side, torch.tensor([k]))[0].numpy()
    on = np.flatnonzero(layout.scale_id == s)
    local = moved[on] // layout.cell[on, None]
    n = 3 * 2 ** s
    grid = np.full((n, n), -1)
    grid[local[:, 1], local[:, 0]] = on
    return grid


def test_dihedral_moves_every_scale_as_its_own_grid_rotated_or_flipped():
    layout = region_layout(3, (1, 2, 4))
    for s in range(3):
        start = own_grid_after(layout, 0, s)
        for k in range(8):
            expected = np.fliplr(start) if k >= 4 else start   # flip x first
            expected = np.rot90(expected, -(k % 4))             # then k % 4 quarter turns
            np.testing.assert_array_equal(own_grid_after(layout, k, s), expected)


def test_dihedral_keeps_every_tile_inside_its_parent():
    layout = region_layout(3, (1, 2, 4))
    position, cell = torch.from_numpy(layout.position)[None], torch.from_numpy(layout.cell)[None]
    parent_of = {}
    for i in np.flatnonzero(layout.scale_id > 0):
        s = layout.scale_id[i]
        parent_of[i] = next(j for j in np.flatnonzero(layout.scale_id == s - 1)
                            if (layout.local[j] == layout.local[i] // 2).all())
    for k in range(8):
        moved = dihedral_positions(position, cell, layout.side, torch.tensor([k]))[0].numpy()
        assert len({tuple(p) + (c,) for p, c in zip(moved, layout.cell)}) == len(layout)  # still a permutation
        for child, parent in parent_of.items():
            lo, hi = moved[parent], moved[parent] + layout.cell[parent]
            assert (moved[child] >= lo).all() and (moved[child] + layout.cell[child] <= hi).all()


def test_nt_xent_matches_an_independent_computation():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    tau = 0.2
    z = [v / v.norm() for v in torch.cat([z1, z2])]
    total = 0.0
    for i in range(10):
        pair = (i + 5) % 10
        terms = [math.exp(float(z[i] @ z[j]) / tau) for j in range(10) if j != i]
        total += -math.log(math.exp(float(z[i] @ z[pair]) / tau) / sum(terms))
    assert abs(float(nt_xent(z1, z2, tau)) - total / 10) < 1e-5


def test_context_views_lie_in_the_context_and_hold_tissue(tmp_path):
    path = tmp_path / "r.h5"
    write_synthetic_regions(path, "s", seed=2, cols=12, rows=12, dim=8, tissue=0.5)
    source = RegionSource([path])
    a, b = source.cmem_batch(np.random.default_rng(0), 64, context=7)
    assert a.tokens.shape == b.tokens.shape == (64, 189, 8)
    coarse = a.scale_id == 0
    assert (a.valid & coarse).any(1).all() and (b.valid & coarse).any(1).all()
    again = source.cmem_batch(np.random.default_rng(0), 64, context=7)
    torch.testing.assert_close(again[0].tokens, a.tokens)  # seeded draws replay
    assert not torch.equal(a.tokens, b.tokens)


def test_cmem_loss_sums_mem_and_contrastive(tmp_path):
    path = tmp_path / "r.h5"
    write_synthetic_regions(path, "s", seed=1, dim=8)
    source = RegionSource([path])
    views = source.cmem_batch(np.random.default_rng(0), 6, context=5)
    masks = tuple(mask_tokens(v.valid, 0.5, torch.Generator().manual_seed(i)) for i, v in enumerate(views))
    torch.manual_seed(0)
    model = CMEM(MixerConfig(in_dim=8, width=16, depth=1, heads=2, decoder_depth=1), hidden=32, out=8)
    result = model(views, masks)
    torch.testing.assert_close(result.loss, result.mem + result.contrastive)
    assert model.projector.mlp.fc1.in_features == 4 * 16 and model.projector.mlp.fc2.out_features == 8


def loop_paper_eq5(u: list[torch.Tensor], v: list[torch.Tensor], tau: float) -> float:
    """Eq. 5 by hand: anchors u_i, positive v_i, denominator over v_j with j != i only."""
    u = [a / a.norm() for a in u]
    v = [b / b.norm() for b in v]
    total = 0.0
    for i in range(len(u)):
        negatives = sum(math.exp(float(u[i] @ v[j]) / tau) for j in range(len(v)) if j != i)
        total += -math.log(math.exp(float(u[i] @ v[i]) / tau) / negatives)
    return total / len(u)


def test_paper_eq5_matches_a_plain_loop_and_leaves_the_positive_out():
    from magflow.aggregate.cmem import paper_eq5
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    for tau in (0.2, 1.0):
        assert abs(float(paper_eq5(z1, z2, tau)) - loop_paper_eq5(list(z1), list(z2), tau)) < 1e-5
    # views that agree: Eq. 5 goes below 0 (no positive in the denominator), SimCLR's form cannot
    close = z1 + 0.01 * torch.randn(6, 5, generator=g)
    assert float(paper_eq5(z1, close, 0.2)) < 0 < float(nt_xent(z1, close, 0.2))
    assert abs(float(paper_eq5(z1, close, 0.2)) - loop_paper_eq5(list(z1), list(close), 0.2)) < 1e-5


def test_cmem_uses_the_configured_contrastive_loss():
    from magflow.aggregate.cmem import contrastive_loss, paper_eq5
    from magflow.aggregate.pretrain_mixer import build_objective
    from magflow.aggregate.settings import MixerTrainConfig
    from magflow.errors import ConfigError
    assert contrastive_loss("paper-eq5") is paper_eq5 and contrastive_loss("simclr") is nt_xent
    small = {"objective": "cmem", "width": 8, "depth": 1, "heads": 2, "projector_hidden": 8, "projector_dim": 4,
             "batch_size": 2}
    assert build_objective(MixerTrainConfig.from_dict(small), 4, 3).contrastive is paper_eq5  # the default
    simclr = MixerTrainConfig.from_dict({**small, "contrastive_loss": "simclr"})
    assert build_objective(simclr, 4, 3).contrastive is nt_xent
    with pytest.raises(ConfigError, match="contrastive_loss"):
        MixerTrainConfig.from_dict({**small, "contrastive_loss": "infonce"})
