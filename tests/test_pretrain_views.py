"""Training tiles by magnification, multi-crop views at the drawn mpp (exact, or DINOv2's random-resized
crops), and the batched augmentations."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms.v2 import functional as TF

from magflow.errors import ConfigError
from magflow.pretrain import augment
from magflow.pretrain.data import IterationBatches, TileSource
from magflow.pretrain import dinov2_views as dinov2_views_module
from magflow.pretrain.dinov2_views import Dinov2ViewConfig, make_dinov2_views, random_resized_boxes
from magflow.pretrain.strategy import SamplingStrategy, config_identity
from magflow.pretrain.train_config import TrainConfig
from magflow.pretrain.views import ViewConfig, make_views, view_mpps
from magflow.sampling import SamplerConfig, build_sampler
from magflow.sampling.transforms import crop_and_resize_batch
from pretrain_fixtures import SCALES, TINY, write_store

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


# -- views: dinov2, DINOv2's random-resized crops of a source patch at the drawn mpp -----------------------

SOURCE_SIZE = 64  # the 128 px stores serve a 64 px source at any mpp in [0.25, 2] (windows of at most 2·64 px)
DINO = Dinov2ViewConfig(GLOBAL, LOCAL, 3, SOURCE_SIZE)


def dinov2_config(**overrides) -> TrainConfig:
    return TrainConfig.from_dict({**TINY, "views": "dinov2", "source_size": SOURCE_SIZE, **overrides})


def dinov2_views(batch, seed, config=DINO):
    mpp = view_mpps(batch["target_mpp"], batch["source_mpp"], config.source_size, SOURCE)
    return mpp, make_dinov2_views(batch["images"], batch["source_mpp"], mpp, config,
                                  torch.Generator().manual_seed(seed))


def test_dinov2_crops_cover_their_area_range_and_show_t_times_box_over_n(source, cu):
    batch = IterationBatches(source, cu.distribution, 6, seed=0, rank=0, iterations=1)[0]
    mpp, views = dinov2_views(batch, 0)
    assert views.global_crops.shape == (12, 3, GLOBAL, GLOBAL) and views.local_crops.shape == (18, 3, LOCAL, LOCAL)
    assert torch.equal(views.global_mpp, mpp.repeat(2)) and torch.equal(views.local_mpp, mpp.repeat(3))
    windows = torch.round(SOURCE_SIZE * mpp / batch["source_mpp"]).long()  # the source's window of the stored patch
    assert torch.all(windows >= SOURCE_SIZE) and torch.all(windows <= SOURCE)
    assert torch.equal(views.global_source_px, windows.repeat(2))
    assert torch.equal(views.local_source_px, windows.repeat(3))
    for size, (lo, hi), boxes, area, effective, drawn in (
            (GLOBAL, (0.35, 1.0), views.global_box, views.global_area, views.global_effective_mpp, views.global_mpp),
            (LOCAL, (0.05, 0.35), views.local_box, views.local_area, views.local_effective_mpp, views.local_mpp)):
        top, left, height, width = boxes.T
        assert torch.all((top >= 0) & (left >= 0) & (top + height <= SOURCE_SIZE) & (left + width <= SOURCE_SIZE))
        measured = (height * width).double() / SOURCE_SIZE**2
        slack = (height + width + 0.5).double() / (2 * SOURCE_SIZE**2)  # sides rounded to whole pixels
        assert torch.equal(area, measured) and torch.all((measured >= lo - slack) & (measured <= hi + slack))
        aspect = (width.double() / height).log().abs()
        assert torch.all(aspect <= np.log(4 / 3) + 1 / (torch.minimum(height, width).double() - 1))
        # t·w/n across and t·h/n down; the record is their geometric mean
        torch.testing.assert_close(effective, ((drawn * width / size) * (drawn * height / size)).sqrt(),
                                   rtol=1e-12, atol=0)


def test_dinov2_views_are_their_boxes_of_the_source_resized(source, cu, monkeypatch):
    monkeypatch.setattr(dinov2_views_module, "augment_views", lambda crops, generator, **kwargs: crops)
    batch = IterationBatches(source, cu.distribution, 3, seed=1, rank=0, iterations=1)[0]
    mpp, views = dinov2_views(batch, 5)
    sources = crop_and_resize_batch(batch["images"], batch["source_mpp"], mpp, SOURCE_SIZE, position="random",
                                    generator=torch.Generator().manual_seed(5), out_dtype=torch.float32, tol=0.0) / 255
    for size, crops, boxes in ((GLOBAL, views.global_crops, views.global_box),
                               (LOCAL, views.local_crops, views.local_box)):
        for k, (top, left, height, width) in enumerate(boxes.tolist()):
            window = sources[k % 3][None, :, top:top + height, left:left + width]
            expected = F.interpolate(window, size=(size, size), mode="bicubic", antialias=True).clamp(0, 1)[0]
            torch.testing.assert_close(crops[k], expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("scale", [(0.35, 1.0), (0.05, 0.35)])
def test_boxes_follow_torchvisions_random_resized_crop(scale):
    n, side = 3000, 256
    ours = random_resized_boxes(n, side, scale, torch.Generator().manual_seed(0)).double()
    torch.manual_seed(0)
    theirs = torch.tensor([RandomResizedCrop.get_params(torch.empty(3, side, side), list(scale), [3 / 4, 4 / 3])
                           for _ in range(n)]).double()  # (top, left, height, width)
    for boxes in (ours, theirs):
        assert torch.all(boxes[:, :2] >= 0) and torch.all(boxes[:, :2] + boxes[:, 2:] <= side)
    for measure in (lambda b: b[:, 2] * b[:, 3], lambda b: (b[:, 3] / b[:, 2]).log(),
                    lambda b: b[:, 0] / (side - b[:, 2] + 1), lambda b: b[:, 1] / (side - b[:, 3] + 1)):
        assert stats.ks_2samp(measure(ours).numpy(), measure(theirs).numpy()).pvalue > 1e-3


def test_dinov2_views_replay_from_their_generator(source, cu):
    batch = IterationBatches(source, cu.distribution, 4, seed=0, rank=0, iterations=1)[0]
    (_, a), (_, b), (_, c) = dinov2_views(batch, 1), dinov2_views(batch, 1), dinov2_views(batch, 2)
    for name in ("global_crops", "local_crops", "global_box", "local_box", "global_effective_mpp"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
        assert not torch.equal(getattr(a, name), getattr(c, name)), name


def test_dinov2_a_du_run_draws_its_atoms_while_the_views_spread(source):
    strategy = SamplingStrategy(dinov2_config(), source.paths, build_sampler(SamplerConfig("du")))
    batches = strategy.batches(4, seed=0, rank=0, iterations=8)
    drawn, shown = [], {"mpp/effective_global": [], "mpp/effective_local": []}
    for iteration in range(8):
        inputs = strategy.prepare(batches[iteration], iteration, 0, torch.device("cpu"))
        assert torch.equal(inputs.views.global_mpp, inputs.mpp.repeat(2))
        drawn.append(inputs.mpp)
        for tag, values in strategy.view_stats(inputs).items():
            shown[tag].append(values / inputs.mpp.repeat(len(values) // len(inputs.mpp)))
    assert sorted(set(torch.cat(drawn).tolist())) == list(SCALES)  # the drawn mpps: exactly the 4 atoms
    for tag, size, (lo, hi) in (("mpp/effective_global", GLOBAL, (0.35, 1.0)),
                                ("mpp/effective_local", LOCAL, (0.05, 0.35))):
        ratio = torch.cat(shown[tag])  # effective / drawn = √(area)·source_size/n
        assert len(set(ratio.tolist())) > 0.5 * len(ratio) and ratio.std() > 0.05  # a continuous spread
        bounds = np.sqrt([lo * 0.95, hi * 1.05]) * SOURCE_SIZE / size
        assert torch.all((ratio >= bounds[0]) & (ratio <= bounds[1])), tag


def test_exact_views_record_the_drawn_mpp_as_what_they_show(source, cu):
    strategy = SamplingStrategy(TrainConfig.from_dict(TINY), source.paths, cu)
    inputs = strategy.prepare(strategy.batches(4, seed=0, rank=0, iterations=1)[0], 0, 0, torch.device("cpu"))
    shown = strategy.view_stats(inputs)
    assert torch.equal(shown["mpp/effective_global"], inputs.mpp.repeat(2))
    assert torch.equal(shown["mpp/effective_local"], inputs.mpp.repeat(TINY["n_local_crops"]))
    assert inputs.views.global_box is None and inputs.views.global_area is None
    assert strategy.card()["views"]["mode"] == "exact"
    assert not {"views", "source_size", "global_crops_scale"} & set(config_identity(strategy.config))


def test_dinov2_a_store_too_small_for_the_source_is_refused_naming_what_to_set(source, cu):
    with pytest.raises(ConfigError, match=r"pretrain\.train\.source_size = 96 px .* windows of up to 192 px .* "
                                          r"source_px 128: set pretrain\.train\.source_size <= 64, or extract "
                                          r"that tile set with source_px >= 192"):
        SamplingStrategy(dinov2_config(source_size=96), source.paths, cu)
    # a du run draws its atoms only, each a 96 px window of its own scale
    SamplingStrategy(dinov2_config(source_size=96), source.paths, build_sampler(SamplerConfig("du")))
    card = SamplingStrategy(dinov2_config(), source.paths, cu).card()["views"]
    assert card["mode"] == "dinov2" and card["source_size"] == SOURCE_SIZE
    assert card["global_crops_scale"] == [0.35, 1.0] and card["local_crops_scale"] == [0.05, 0.35]


@pytest.mark.parametrize("overrides, key", [
    ({"views": "random"}, "train.views"),
    ({"views": "dinov2", "source_size": 32}, "train.source_size"),
    ({"views": "dinov2", "local_crops_scale": [0.35, 0.05]}, "train.local_crops_scale"),
    ({"views": "dinov2", "global_crops_scale": [0.35, 1.5]}, "train.global_crops_scale"),
])
def test_view_settings_are_checked_naming_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        TrainConfig.from_dict({**TINY, **overrides})
    TrainConfig.from_dict({**TINY, "source_size": 32})  # exact views do not use it


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
