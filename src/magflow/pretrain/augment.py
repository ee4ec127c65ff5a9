"""DINOv2's photometric augmentations and the dihedral group, batched on the device with per-sample draws.

torchvision applies one set of parameters per call, so a batch would share them; here each sample
draws its own from a CPU ``torch.Generator`` (seeded per iteration, so runs replay exactly) and the
work is a few whole-batch tensor ops. Images are float B×3×H×W in [0, 1]. Brightness, contrast,
saturation, hue, grayscale, Gaussian blur and solarization match ``torchvision.transforms.v2.functional``
sample by sample; the jitter order is fixed (brightness, contrast, saturation, hue) where torchvision
shuffles it per call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from magflow.imagenet import IMAGENET_MEAN, IMAGENET_STD

GREY_WEIGHTS = (0.2989, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision's rgb_to_grayscale


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def _chance(n: int, p: float, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=generator) < p


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A length-B vector as B×1×1×1 on the images' device and dtype."""
    return values.to(device=like.device, dtype=like.dtype).view(-1, 1, 1, 1)


def grey(images: torch.Tensor) -> torch.Tensor:
    """B×1×H×W luma."""
    weights = torch.tensor(GREY_WEIGHTS, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def _blend(images: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (factor * images + (1 - factor) * other).clamp_(0, 1)


def adjust_brightness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(images, torch.zeros_like(images), _per_sample(factor, images))


def adjust_contrast(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    mean = grey(images).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(images, mean, _per_sample(factor, images))


def adjust_saturation(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(images, grey(images), _per_sample(factor, images))


def _rgb_to_hsv(images: torch.Tensor) -> torch.Tensor:
    red, green, blue = images.unbind(dim=1)
    value, _ = images.max(dim=1)
    chroma = value - images.min(dim=1).values
    grey_pixel = chroma == 0
    saturation = chroma / torch.where(grey_pixel, torch.ones_like(value), value)
    divisor = torch.where(grey_pixel, torch.ones_like(chroma), chroma)
    rc, gc, bc = (value - red) / divisor, (value - green) / divisor, (value - blue) / divisor
    hue = torch.where(value == red, bc - gc, torch.where(value == green, 2.0 + rc - bc, 4.0 + gc - rc))
    return torch.stack([torch.fmod(hue / 6.0 + 1.0, 1.0), saturation, value], dim=1)


def _hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    hue, saturation, value = hsv.unbind(dim=1)
    sector = torch.floor(hue * 6.0)
    fraction = hue * 6.0 - sector
    p = (value * (1.0 - saturation)).clamp(0, 1)
    q = (value * (1.0 - saturation * fraction)).clamp(0, 1)
    t = (value * (1.0 - saturation * (1.0 - fraction))).clamp(0, 1)
    rgb_by_sector = torch.stack([torch.stack(rgb, dim=1) for rgb in (
        (value, t, p), (q, value, p), (p, value, t), (p, q, value), (t, p, value), (value, p, q))], dim=1)
    index = sector.long().remainder(6)[:, None, None].expand(-1, 1, 3, -1, -1)  # B×1×3×H×W
    return rgb_by_sector.gather(1, index).squeeze(1)


def adjust_hue(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Shift each image's HSV hue by ``shift`` turns (in [-0.5, 0.5]), as torchvision's ``adjust_hue``."""
    hsv = _rgb_to_hsv(images)
    hue = torch.remainder(hsv[:, 0] + _per_sample(shift, images)[:, 0], 1.0)
    return _hsv_to_rgb(torch.stack([hue, hsv[:, 1], hsv[:, 2]], dim=1))


def color_jitter(images: torch.Tensor, generator: torch.Generator, p: float = 0.8, brightness: float = 0.4,
                 contrast: float = 0.4, saturation: float = 0.2, hue: float = 0.1) -> torch.Tensor:
    """With probability ``p`` per sample, jitter as ``ColorJitter(brightness, contrast, saturation, hue)``."""
    n = images.shape[0]
    apply = _per_sample(_chance(n, p, generator), images).bool()
    jittered = adjust_brightness(images, _uniform(n, max(0.0, 1 - brightness), 1 + brightness, generator))
    jittered = adjust_contrast(jittered, _uniform(n, max(0.0, 1 - contrast), 1 + contrast, generator))
    jittered = adjust_saturation(jittered, _uniform(n, max(0.0, 1 - saturation), 1 + saturation, generator))
    jittered = adjust_hue(jittered, _uniform(n, -hue, hue, generator))
    return torch.where(apply, jittered, images)


def random_grayscale(images: torch.Tensor, generator: torch.Generator, p: float = 0.2) -> torch.Tensor:
    apply = _per_sample(_chance(images.shape[0], p, generator), images).bool()
    return torch.where(apply, grey(images).expand_as(images), images)


def blur(images: torch.Tensor, sigmas: torch.Tensor, kernel_size: int = 9) -> torch.Tensor:
    """Gaussian blur with one sigma per sample, reflect padding (``gaussian_blur`` of torchvision)."""
    n, channels, height, width = images.shape
    half = (kernel_size - 1) / 2
    x = torch.linspace(-half, half, kernel_size, dtype=torch.float64)
    kernels = torch.exp(-0.5 * (x / sigmas[:, None].to(torch.float64)) ** 2)
    kernels = (kernels / kernels.sum(dim=1, keepdim=True)).to(device=images.device, dtype=images.dtype)
    weight = kernels.repeat_interleave(channels, dim=0)  # one separable kernel per (sample, channel)
    pad = kernel_size // 2
    planes = F.pad(images.reshape(1, n * channels, height, width), (pad, pad, pad, pad), mode="reflect")
    planes = F.conv2d(planes, weight.view(-1, 1, 1, kernel_size), groups=n * channels)
    planes = F.conv2d(planes, weight.view(-1, 1, kernel_size, 1), groups=n * channels)
    return planes.view(n, channels, height, width)


def gaussian_blur(images: torch.Tensor, generator: torch.Generator, p: float, kernel_size: int = 9,
                  sigma: tuple[float, float] = (0.1, 2.0)) -> torch.Tensor:
    """With probability ``p`` per sample, ``GaussianBlur(kernel_size, sigma)``."""
    n = images.shape[0]
    apply, sigmas = _chance(n, p, generator), _uniform(n, *sigma, generator)
    if not apply.any():
        return images
    return torch.where(_per_sample(apply, images).bool(), blur(images, sigmas, kernel_size), images)


def solarize(images: torch.Tensor, generator: torch.Generator, p: float,
             threshold: float = 128 / 255) -> torch.Tensor:
    """With probability ``p`` per sample, invert pixels ≥ ``threshold`` (DINOv2 uses 128 on uint8)."""
    apply = _per_sample(_chance(images.shape[0], p, generator), images).bool()
    return torch.where(apply & (images >= threshold), 1 - images, images)


def dihedral(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One of the 8 flips/90° rotations per sample, uniformly: tissue has no up or left."""
    n = images.shape[0]
    flip = _per_sample(_chance(n, 0.5, generator), images).bool()
    turns = torch.randint(0, 4, (n,), generator=generator).to(images.device)
    out = torch.where(flip, images.flip(-1), images)
    rotated = out.clone()
    for k in (1, 2, 3):
        chosen = (turns == k).nonzero().flatten()
        rotated[chosen] = out[chosen].rot90(k, dims=(-2, -1))
    return rotated


def normalize(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images - mean) / std
