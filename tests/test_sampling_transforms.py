"""Crop-and-resize: physical field of view, CPU/torch agreement, and refusals."""

import numpy as np
import pytest
import torch

from magflow.errors import ConfigError, UpsamplingError
from magflow.sampling.transforms import crop_and_resize, crop_and_resize_batch, crop_size, pick_source_scale

SOURCE_MPP = 0.25
SOURCE_PX = 512
OUT_PX = 128
PERIOD_X_UM, PERIOD_Y_UM = 8.0, 12.0
TARGETS = [0.25, 0.4, 0.7, 1.0]


def _grating(mpp, size):
    """Sinusoids of known physical periods along x and y, sampled at pixel centres."""
    um = (np.arange(size) + 0.5) * mpp
    wave = np.sin(2 * np.pi * um[None, :] / PERIOD_X_UM) + np.sin(2 * np.pi * um[:, None] / PERIOD_Y_UM)
    return np.round(127.5 + 60 * wave).astype(np.uint8)


def _sine_fit(profile, freqs):
    """For each frequency (cycles/px), the energy a least-squares sine + cosine + offset explains."""
    n = np.arange(profile.size)
    f = freqs[:, None]
    design = np.stack([np.sin(2 * np.pi * f * n), np.cos(2 * np.pi * f * n), np.ones((freqs.size, n.size))], -1)
    proj = design.transpose(0, 2, 1) @ profile
    coef = np.linalg.solve(design.transpose(0, 2, 1) @ design, proj[..., None])[..., 0]
    return np.einsum("fi,fi->f", coef, proj)


def _period_px(profile):
    """Period (px) of the sinusoid in a 1-d profile: best sine fit, coarse then fine frequency grid."""
    coarse = np.arange(0.02, 0.45, 1e-3)
    best = coarse[np.argmax(_sine_fit(profile, coarse))]
    fine = np.arange(best - 2e-3, best + 2e-3, 1e-5)
    return 1.0 / fine[np.argmax(_sine_fit(profile, fine))]


def _periods_um(image, mpp):
    image = image.astype(np.float64)
    return _period_px(image.mean(axis=0)) * mpp, _period_px(image.mean(axis=1)) * mpp


@pytest.fixture(scope="module")
def grating():
    return _grating(SOURCE_MPP, SOURCE_PX)


@pytest.mark.parametrize("target", TARGETS)
def test_cpu_keeps_the_physical_period(grating, target):
    out = crop_and_resize(grating, SOURCE_MPP, target, OUT_PX)
    assert out.shape == (OUT_PX, OUT_PX) and out.dtype == np.uint8
    px, py = _periods_um(out, target)
    assert px == pytest.approx(PERIOD_X_UM, rel=0.005)
    assert py == pytest.approx(PERIOD_Y_UM, rel=0.005)


def test_batch_keeps_the_physical_period_with_one_target_per_patch(grating):
    batch = torch.from_numpy(grating)[None, None].repeat(len(TARGETS), 3, 1, 1)
    out = crop_and_resize_batch(batch, SOURCE_MPP, TARGETS, OUT_PX, position="random", generator=torch.Generator().manual_seed(0))
    assert out.shape == (len(TARGETS), 3, OUT_PX, OUT_PX) and out.dtype == torch.uint8
    for image, target in zip(out[:, 0].numpy(), TARGETS):
        px, py = _periods_um(image, target)
        assert px == pytest.approx(PERIOD_X_UM, rel=0.005)
        assert py == pytest.approx(PERIOD_Y_UM, rel=0.005)


def test_crop_size_is_the_field_of_view_in_source_pixels():
    assert crop_size(224, 0.5, 1.0) == 448
    assert crop_size(224, 0.25, 0.3) == round(224 * 1.2)
    assert crop_size(224, 0.5, 0.5) == 224
    assert crop_size(224, 0.5, 0.495) == 222  # 1% finer: inside the 2% tolerance


def _noise(batch, size, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)


def test_cpu_and_batched_torch_agree_within_one_grey_level():
    patches = _noise(5, 200)
    targets = [0.5, 0.55, 0.63, 0.8, 1.0]
    cpu = np.stack([crop_and_resize(p, 0.5, t, 96) for p, t in zip(patches, targets)])
    batched = crop_and_resize_batch(torch.from_numpy(patches).permute(0, 3, 1, 2), 0.5, targets, 96)
    diff = np.abs(cpu.astype(int) - batched.permute(0, 2, 3, 1).numpy().astype(int))
    assert diff.max() <= 1
    assert diff.mean() <= 0.25
    as_float = crop_and_resize_batch(
        torch.from_numpy(patches).permute(0, 3, 1, 2).float(), 0.5, targets, 96
    )
    assert as_float.dtype == torch.float32
    assert (as_float.permute(0, 2, 3, 1).numpy() - cpu).__abs__().max() <= 1.0


def test_batch_takes_one_source_mpp_per_patch():
    patches = _noise(3, 120)
    sources, targets = [0.25, 0.5, 0.5], [0.5, 0.5, 0.9]
    batched = crop_and_resize_batch(torch.from_numpy(patches).permute(0, 3, 1, 2), sources, targets, 60)
    for patch, s, t, got in zip(patches, sources, targets, batched):
        diff = np.abs(crop_and_resize(patch, s, t, 60).astype(int) - got.permute(1, 2, 0).numpy().astype(int))
        assert diff.max() <= 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batched_on_gpu_matches_cpu_torch():
    patches = torch.from_numpy(_noise(6, 160)).permute(0, 3, 1, 2)
    targets = torch.tensor([0.5, 0.52, 0.6, 0.6, 0.75, 0.8])
    on_cpu = crop_and_resize_batch(patches.float(), 0.5, targets, 80)
    on_gpu = crop_and_resize_batch(patches.cuda().float(), 0.5, targets, 80)
    assert on_gpu.is_cuda
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, atol=1e-3, rtol=0)


def test_equal_mpp_returns_an_exact_window_and_random_position_is_seeded():
    source = _noise(1, 64)[0]
    centre = crop_and_resize(source, 0.5, 0.5, 32)
    np.testing.assert_array_equal(centre, source[16:48, 16:48])
    a = crop_and_resize(source, 0.5, 0.5, 32, position="random", rng=1)
    b = crop_and_resize(source, 0.5, 0.5, 32, position="random", rng=1)
    np.testing.assert_array_equal(a, b)
    windows = {(i, j) for i in range(33) for j in range(33) if np.array_equal(source[i : i + 32, j : j + 32], a)}
    assert len(windows) == 1
    tops = {
        tuple(crop_and_resize(source, 0.5, 0.5, 32, position="random", rng=s)[0, 0]) for s in range(10)
    }
    assert len(tops) > 1


def test_batched_random_windows_are_exact_source_windows():
    patches = torch.from_numpy(_noise(3, 40)).permute(0, 3, 1, 2)
    out = crop_and_resize_batch(patches, 0.5, [0.5] * 3, 24, position="random", generator=torch.Generator().manual_seed(3))
    for patch, window in zip(patches, out):
        hits = [
            (i, j) for i in range(17) for j in range(17) if torch.equal(patch[:, i : i + 24, j : j + 24], window)
        ]
        assert len(hits) == 1


def test_cpu_accepts_tensors_and_single_channel_arrays():
    source = _noise(1, 100)[0]
    as_tensor = crop_and_resize(torch.from_numpy(source).permute(2, 0, 1), 0.5, 0.8, 50)
    assert isinstance(as_tensor, torch.Tensor) and as_tensor.shape == (3, 50, 50)
    np.testing.assert_array_equal(as_tensor.permute(1, 2, 0).numpy(), crop_and_resize(source, 0.5, 0.8, 50))
    assert crop_and_resize(source[..., :1], 0.5, 0.8, 50).shape == (50, 50, 1)


def test_upsampling_is_refused_with_source_target_and_tolerance():
    with pytest.raises(UpsamplingError, match=r"target mpp 0.4 is finer than source mpp 0.5 .*tolerance of 0.02"):
        crop_and_resize(_noise(1, 64)[0], 0.5, 0.4, 32)
    with pytest.raises(UpsamplingError, match=r"target mpp 0.45 is finer than source mpp 0.5"):
        crop_and_resize_batch(torch.zeros(2, 3, 64, 64, dtype=torch.uint8), 0.5, [0.6, 0.45], 32)
    assert crop_size(100, 0.5, 0.45, tol=0.2) == 90  # a looser tolerance lets it through


def test_crop_larger_than_the_source_is_refused():
    with pytest.raises(ConfigError, match=r"needs a 128 px crop.*64x64 px; the coarsest target it serves is 1 mpp"):
        crop_and_resize(_noise(1, 64)[0], 0.5, 2.0, 32)
    with pytest.raises(ConfigError, match=r"needs a 128 px crop"):
        crop_and_resize_batch(torch.zeros(2, 3, 64, 64), 0.5, [0.5, 2.0], 32)


def test_bad_inputs_are_refused():
    with pytest.raises(ConfigError, match="position 'corner'"):
        crop_and_resize(_noise(1, 64)[0], 0.5, 0.5, 32, position="corner")
    with pytest.raises(ConfigError, match="uint8"):
        crop_and_resize(np.zeros((64, 64), dtype=np.float32), 0.5, 0.5, 32)
    with pytest.raises(ConfigError, match="got 1 target and 1 source mpps for a batch of 2"):
        crop_and_resize_batch(torch.zeros(2, 3, 64, 64), 0.5, [0.5], 32)


def test_pick_source_scale():
    scales = [0.25, 0.5, 1.0, 2.0]
    assert pick_source_scale(0.7, scales) == 0.5
    assert pick_source_scale(1.0, scales) == 1.0
    assert pick_source_scale(0.99, scales) == 1.0  # 1% upsampling is inside the tolerance
    assert pick_source_scale(0.97, scales) == 0.5
    assert pick_source_scale(0.55, scales, out_size=224, source_size=256) == 0.5
    with pytest.raises(UpsamplingError, match=r"target mpp 0.2 is finer than every source scale \(finest source mpp 0.25"):
        pick_source_scale(0.2, scales)
    with pytest.raises(ConfigError, match="no source scale"):
        pick_source_scale(0.7, scales, out_size=224, source_size=256)
