"""Training tiles by magnification, multi-crop views at the drawn mpp, and the batched augmentations."""

import numpy as np
import pytest
import torch
from scipy import stats
from torchvision.transforms.v2 import functional as TF

from magflow.errors import ConfigError
from magflow.pretrain import augment
from magflow.pretrain.data import IterationBatches, TileSource
from magflow.pretrain.views import ViewConfig, make_views, view_mpps
from magflow.sampling import SamplerConfig, build_sampler
from pretrain_fixtures import SCALES, write_store

GLOBAL, LOCAL, SOURCE = 64, 32, 128


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    return TileSource([write_store(root / "a.h5", "a", seed=1), write_store(root / "b.h5", "b", seed=2)], GLOBAL)


@pytest.fixture(scope="module")
def cu():
    return build_sampler(SamplerConfig("cu"))


def test_each_target_is_served_by_the_next_finer_standard_scale(source):
    assert source.scales == list(SCALES) and source.source_px == SOURCE and len(source) == 24
    for target in np.linspace(0.25, 2.0, 71):
        assert source.scale_for(float(target)) == max(s for s in SCALES if s <= target)
    assert source.scale_for(0.9999999) == 0.5 and source.scale_for(1.0) == 1.0


def test_batches_depend_on_seed_rank_and_iteration_only(source, cu):
    def batches(rank):
        return IterationBatches(source, cu.distribution, 8, seed=3, rank=rank, iterations=10)

    first, again = batches(0)[4], batches(0)[4]
    assert torch.equal(first["images"], again["images"]) and torch.equal(first["target_mpp"], again["target_mpp"])
    for other in (batches(1)[4], batches(0)[5]):
        assert not torch.equal(first["target_mpp"], other["target_mpp"])
    assert first["images"].shape == (8, 3, SOURCE, SOURCE) and first["images"].dtype == torch.uint8
    assert torch.all(first["source_mpp"] <= first["target_mpp"])
    assert torch.all((first["target_mpp"] < 2 * first["source_mpp"]) | (first["scale"] == 2.0))


def test_the_draws_of_all_ranks_together_follow_the_distribution(source, cu):
    def pooled(sampler):
        return np.concatenate([IterationBatches(source, sampler.distribution, 8, seed=0, rank=rank, iterations=25)[i]
                               ["target_mpp"].numpy() for rank in range(4) for i in range(25)])

    uniform = pooled(cu)
    assert stats.kstest(uniform, stats.uniform(0.25, 1.75).cdf).pvalue > 1e-3
    counts = np.unique(pooled(build_sampler(SamplerConfig("du"))), return_counts=True)
    assert counts[0].tolist() == list(SCALES) and stats.chisquare(counts[1]).pvalue > 1e-3


def test_every_view_is_at_the_drawn_mpp_with_its_size_and_never_upsampled(source, cu):
    batch = IterationBatches(source, cu.distribution, 6, seed=0, rank=0, iterations=1)[0]
    mpp = view_mpps(batch["target_mpp"], batch["source_mpp"], GLOBAL, SOURCE)
    assert torch.equal(mpp, batch["target_mpp"])  # nominal stores: nothing to clamp
    views = make_views(batch["images"], batch["source_mpp"], mpp, ViewConfig(GLOBAL, LOCAL, 3),
                       torch.Generator().manual_seed(0))
    assert views.global_crops.shape == (12, 3, GLOBAL, GLOBAL) and views.local_crops.shape == (18, 3, LOCAL, LOCAL)
    assert torch.equal(views.global_mpp, batch["target_mpp"].repeat(2))
    assert torch.equal(views.local_mpp, batch["target_mpp"].repeat(3))
    for size, px, mpps in ((GLOBAL, views.global_source_px, views.global_mpp),
                           (LOCAL, views.local_source_px, views.local_mpp)):
        sources = batch["source_mpp"].repeat(len(px) // 6)
        assert torch.all(px >= size) and torch.all(px <= SOURCE)  # downsampled or 1:1, and inside the patch
        assert torch.equal(px, torch.round(size * mpps / sources).long())
        assert torch.all((px * sources / size - mpps).abs() <= sources / (2 * size) + 1e-12)  # rounding only
    # normalised crops of uint8 pixels stay within the normalised [0, 1] range
    low = (0 - torch.tensor(augment.IMAGENET_MEAN)) / torch.tensor(augment.IMAGENET_STD)
    assert torch.all(views.global_crops.amin(dim=(0, 2, 3)) >= low - 1e-5)


def test_views_replay_from_their_generator(source, cu):
    batch = IterationBatches(source, cu.distribution, 4, seed=0, rank=0, iterations=1)[0]
    config = ViewConfig(GLOBAL, LOCAL, 2)

    def views(seed):
        return make_views(batch["images"], batch["source_mpp"], batch["target_mpp"], config,
                          torch.Generator().manual_seed(seed))

    a, b, c = views(1), views(1), views(2)
    assert torch.equal(a.global_crops, b.global_crops) and torch.equal(a.local_crops, b.local_crops)
    assert not torch.equal(a.global_crops, c.global_crops)
    assert not torch.equal(a.global_crops[:4], a.global_crops[4:])  # two different global views per item


def test_off_nominal_scales_are_clamped_to_what_the_patch_holds(tmp_path):
    store = write_store(tmp_path / "off.h5", "off", tiles=1, achieved={0.25: 0.2502, 0.5: 0.499})
    source = TileSource([store], GLOBAL)
    targets = torch.tensor([0.25, 0.9999, 0.7], dtype=torch.float64)
    sources = torch.tensor([0.2502, 0.499, 0.499], dtype=torch.float64)
    mpp = view_mpps(targets, sources, GLOBAL, SOURCE)
    assert mpp.tolist() == pytest.approx([0.2502, SOURCE * 0.499 / GLOBAL, 0.7])
    images = torch.stack([source.datasets[s][0]["image"] for s in (0.25, 0.5, 0.5)])
    views = make_views(images, sources, mpp, ViewConfig(GLOBAL, LOCAL, 1), torch.Generator().manual_seed(0))
    assert views.global_source_px.tolist() == [GLOBAL, SOURCE, round(GLOBAL * 0.7 / 0.499)] * 2  # 64, 128, 90


def test_a_range_the_stores_cannot_serve_is_refused(source):
    with pytest.raises(ConfigError, match="finer than every source scale"):
        source.check_serves(build_sampler(SamplerConfig("cu", lo=0.2, hi=2.0)).distribution)
    with pytest.raises(ConfigError, match="needs a crop larger"):
        source.check_serves(build_sampler(SamplerConfig("cu", lo=0.25, hi=4.5)).distribution)
    source.check_serves(build_sampler(SamplerConfig("cu", lo=0.25, hi=4.0)).distribution)  # 2·G from 2.0 mpp


# -- augmentations, sample by sample against torchvision ----------------------------------------------

@pytest.fixture(scope="module")
def images():
    torch.manual_seed(0)
    x = torch.rand(4, 3, 20, 20)
    x[0] = 0.5  # grey
    return x


@pytest.mark.parametrize("ours, theirs, factors", [
    (augment.adjust_brightness, TF.adjust_brightness, [0.6, 1.0, 1.4, 0.9]),
    (augment.adjust_contrast, TF.adjust_contrast, [0.6, 1.0, 1.4, 0.9]),
    (augment.adjust_saturation, TF.adjust_saturation, [0.8, 1.0, 1.2, 0.0]),
    (augment.adjust_hue, TF.adjust_hue, [0.1, -0.1, 0.5, -0.37]),
    (augment.blur, lambda img, s: TF.gaussian_blur(img, [9, 9], [s, s]), [0.1, 0.7, 2.0, 1.3]),
])
def test_per_sample_ops_match_torchvision(images, ours, theirs, factors):
    expected = torch.stack([theirs(image, factor) for image, factor in zip(images, factors)])
    torch.testing.assert_close(ours(images, torch.tensor(factors)), expected, atol=2e-6, rtol=0)


def test_random_ops_apply_whole_samples_with_their_probability(images):
    generator = torch.Generator().manual_seed(0)
    many = images.repeat(50, 1, 1, 1)
    grey = augment.random_grayscale(many, generator, p=0.2)
    changed = ~(grey == many).flatten(1).all(dim=1)
    assert 0.1 < changed.float().mean() < 0.3
    torch.testing.assert_close(grey[changed], TF.rgb_to_grayscale(many[changed], num_output_channels=3))
    solar = augment.solarize(many, generator, p=0.5)
    flipped = ~(solar == many).flatten(1).all(dim=1)
    torch.testing.assert_close(solar[flipped], TF.solarize(many[flipped], 128 / 255))
    assert augment.gaussian_blur(many, generator, p=0.0) is many


def test_dihedral_gives_each_sample_one_of_the_eight_symmetries(images):
    out = augment.dihedral(images.repeat(16, 1, 1, 1), torch.Generator().manual_seed(0))
    seen = set()
    for source, result in zip(images.repeat(16, 1, 1, 1), out):
        matches = [(f, k) for f in (False, True) for k in range(4)
                   if torch.equal((source.flip(-1) if f else source).rot90(k, dims=(-2, -1)), result)]
        assert matches
        seen.add(matches[0])
    assert len(seen) > 4
