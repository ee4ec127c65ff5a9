"""A slide label visible only when two magnifications are combined: a mixer over both scales of each
region beats AB-MIL on either magnification alone.

Each region is one coarse tile (5×-like) and the four finer tiles inside it (20×-like). The coarse
tile is of kind A or B, the fine tiles all of kind X or Y (plus noise). Positive slides hold regions
A-with-X and B-with-Y; negative slides A-with-Y and B-with-X, in the same random proportions. So the
coarse tiles alone, and the fine tiles alone, are identically distributed in both classes (chance),
while which fine kind sits inside which coarse kind gives the label away (an XOR across scales).

Stated margins (seeds 0 and 1, 48 train / 40 test slides): the random mixer on both scales, with AB-MIL
over its class tokens, reaches a mean AUROC >= 0.85, and beats the best single-magnification AB-MIL
(tiles at 5× or at 20×) by at least 0.2. The tile baselines are at chance by construction, so their
AUROC only reflects the finite test set (about ±0.09 around 0.5 for 40 slides).
"""

import numpy as np
import pytest
import torch

from magflow.aggregate.bags import RegionBag, SlideSet
from magflow.aggregate.mixer import MixerConfig, MixingEncoder
from magflow.aggregate.slide_eval import MILConfig, evaluate_seeds, mil_splits
from magflow.aggregate.abmil_model import build_slide_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

D = 6
KIND = {"A": np.array([2.0, 0, 0, 0, 0, 0]), "B": np.array([0, 2.0, 0, 0, 0, 0]),
        "X": np.array([0, 0, 2.0, 0, 0, 0]), "Y": np.array([0, 0, 0, 2.0, 0, 0])}
SCALE = torch.tensor([0, 1, 1, 1, 1])                            # one coarse tile, its four children
POSITION = torch.tensor([[0, 0], [0, 0], [1, 0], [0, 1], [1, 1]])  # in finest-scale cells


def slide(rng: np.random.Generator, positive: bool, regions: int = 8) -> RegionBag:
    pairs = [("A", "X"), ("B", "Y")] if positive else [("A", "Y"), ("B", "X")]
    first = rng.random(regions) < rng.uniform(0.25, 0.75)  # the same proportions in both classes
    tokens = np.zeros((regions, 5, D), np.float32)
    for r in range(regions):
        coarse, fine = pairs[0] if first[r] else pairs[1]
        tokens[r, 0] = KIND[coarse]
        tokens[r, 1:] = KIND[fine]
    tokens += 0.3 * rng.normal(size=tokens.shape)
    return RegionBag(torch.from_numpy(tokens), SCALE.expand(regions, -1), POSITION.expand(regions, -1, -1),
                     torch.ones(regions, 5, dtype=torch.bool))


def cross_scale_slides(n: int, seed: int) -> SlideSet:
    rng = np.random.default_rng(seed)
    labels = [i % 2 for i in range(n)]
    return SlideSet.build([f"s{i}" for i in range(n)], [slide(rng, bool(y)) for y in labels], labels)


def test_a_method_seeing_both_scales_beats_single_magnification_abmil():
    slides = cross_scale_slides(88, seed=3)
    sheet = {s: "train" if i < 48 else "test" for i, s in enumerate(slides.ids)}
    config = MILConfig(lr=3e-3, epochs=12, freeze_epochs=12, groups_per_batch=8, dropout=0.0, select="last",
                       seeds=(0, 1))
    splits = mil_splits(slides, config, sheet)

    def auroc(build) -> float:
        return evaluate_seeds(slides, splits, build, config)["auroc"]["mean"]

    def mixer():
        encoder = MixingEncoder(MixerConfig(in_dim=D, width=16, depth=2, heads=2, n_cls=2, n_scales=2, max_grid=2))
        return build_slide_model("cls", 2, encoder=encoder, attn_dim=16, dropout=0.0)

    both = auroc(mixer)
    single = {mag: auroc(lambda s=s: build_slide_model("tiles", 2, token_dim=D, scales=[s], attn_dim=16,
                                                        dropout=0.0))
              for mag, s in (("5x", 0), ("20x", 1))}
    assert both >= 0.85, (both, single)
    assert both - max(single.values()) >= 0.2, (both, single)
