"""Image-quality metrics, written once: PSNR and SSIM, shared by the VAE's training loss and `reconstruct`.

SSIM is Wang, Bovik, Sheikh & Simoncelli 2004 (Eq. 13): local means, variances and covariance under an 11-tap
Gaussian window of sigma 1.5, C1 = (0.01 L)^2, C2 = (0.03 L)^2 for a data range L, averaged over the positions
where the window fits -- scikit-image's ``structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False)``. It is differentiable, so the VAE trains on ``1 - ssim``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from videogen.errors import InputError

WINDOW = 11  # taps of the Gaussian window (Wang et al. 2004)
SIGMA = 1.5  # its standard deviation at 11 taps


def psnr_from_mse(mse: float, peak: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB, ``-10 log10(mse / peak^2)``; infinite for identical images."""
    return math.inf if mse == 0 else -10.0 * math.log10(mse / peak**2)


def psnr(reference, test, peak: float = 255.0) -> float:
    """PSNR in dB of two arrays of the same shape (uint8 frames: peak 255), over all their values."""
    import numpy as np

    mse = float(np.mean((np.asarray(reference, np.float64) - np.asarray(test, np.float64)) ** 2))
    return psnr_from_mse(mse, peak)


def gaussian_window(size: int, sigma: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A normalised 2-D Gaussian window (size, size), the outer product of the 1-D one."""
    x = torch.arange(size, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]  # (k, k)


def _window_size(height: int, width: int, small_frames: str) -> int:
    """11 taps, or for frames smaller than that (``small_frames="shrink"``) the largest odd size that fits."""
    if min(height, width) >= WINDOW:
        return WINDOW
    if small_frames == "refuse":
        raise InputError(f"SSIM needs frames of at least {WINDOW}x{WINDOW} pixels; got {width}x{height}")
    size = min(WINDOW, height, width)
    return size - (1 - size % 2)  # odd


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    data_range: float = 1.0,
    dtype: torch.dtype = torch.float32,
    reduction: Literal["mean", "none"] = "mean",
    small_frames: Literal["shrink", "refuse"] = "shrink",
) -> torch.Tensor:
    """Structural similarity of two batches of images, computed in ``dtype``.

    Args:
        x, y: images (N, C, H, W) with values in [0, data_range] (any dtype; cast to ``dtype``).
        data_range: L of the constants C1, C2 (1 for [0, 1] pixels, 255 for uint8 values).
        reduction: "mean" gives one number over every image, channel and position; "none" one per image (N,).
        small_frames: for frames under 11x11, "shrink" the window to the largest odd size that fits (its sigma
            scaled alike), or "refuse" them with an `InputError`.
    """
    x, y = x.to(dtype), y.to(dtype)
    channels = x.shape[1]
    size = _window_size(x.shape[-2], x.shape[-1], small_frames)
    window = gaussian_window(size, SIGMA * size / WINDOW, dtype).expand(channels, 1, size, size)  # (C, 1, k, k)

    def blur(z: torch.Tensor) -> torch.Tensor:
        return F.conv2d(z, window, groups=channels)  # (N, C, H - k + 1, W - k + 1)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2  # K1, K2 of the paper
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    index = num / den  # (N, C, H', W')
    return index.mean() if reduction == "mean" else index.mean(dim=(1, 2, 3))
