"""Encode and decode a video through a VAE, streaming, and measure how close the result is to the input.

``videogen reconstruct IN -o OUT --model DIR`` calls `reconstruct`. Frames flow through one lazy chain
(read -> encode_frames -> decode_frames -> write), one chunk at a time: the first frame, then 4-frame
chunks, so memory holds the VAE's causal cache and a few frames, however long the video. PSNR and SSIM
are accumulated on the way, comparing each decoded chunk with the input frames it came from.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from videogen.errors import InputError
from videogen.pipeline import to_uint8


@dataclass
class ReconstructResult:
    """What `reconstruct` did: where it wrote, how much, how well and how fast."""

    output: Path
    frames: int  # frames written
    fps: float
    height: int
    width: int
    psnr: float  # dB over all frames and channels, uint8 range
    ssim: float  # mean over frames and channels (Wang et al. 2004, 11-tap Gaussian, sigma 1.5)
    seconds: float
    notices: list[str]  # input adjustments (frames dropped, frames cropped), one line each


def reconstruct(
    input_path: str | Path,
    output_path: str | Path,
    *,
    model: str | Path,
    overwrite: bool = False,
    tiled: bool | None = None,
    progress: bool = True,
) -> ReconstructResult:
    """Encode + decode `input_path` through the VAE in `model` (a model folder with vae/, or a VAE folder).

    The clip is cut to 1 + 4k frames and center-cropped to multiples of 8 pixels where needed (each said in
    ``notices``). The output is written atomically; an existing file is refused unless `overwrite`.
    """
    from tqdm.auto import tqdm

    from videogen.io import VideoWriter, probe_video
    from videogen.models.vae import CausalVideoVAE

    start = time.perf_counter()
    info = probe_video(input_path)
    writer = VideoWriter(output_path, info.fps, overwrite=overwrite)  # refuses an existing target up front
    vae = CausalVideoVAE.from_folder(model).eval()
    frames, crop, notices = _plan(info, vae.temporal_compression, vae.spatial_compression)
    pending: deque[np.ndarray] = deque()  # input frames read but not yet compared with their decode
    chunks = _input_chunks(input_path, frames, crop, pending, vae.dtype)
    stats = _Stats()
    with writer, tqdm(total=frames, unit="frame", desc="reconstruct", disable=not progress) as bar:
        decoded = vae.decode_frames((p.mode() for p in vae.encode_frames(chunks, tiled=tiled)), tiled=tiled)
        for chunk in decoded:
            out = to_uint8(chunk[0])  # (t, H, W, 3)
            reference = np.stack([pending.popleft() for _ in range(len(out))])
            stats.add(reference, out)
            writer.write(out)
            bar.update(len(out))
    return ReconstructResult(
        Path(output_path), frames, info.fps, *crop[2:], stats.psnr(), stats.ssim(), time.perf_counter() - start, notices
    )


def _plan(info, temporal: int, spatial: int) -> tuple[int, tuple[int, int, int, int], list[str]]:
    """Frames to use and the crop (top, left, height, width) that the VAE can take, with notices."""
    notices = []
    frames = 1 + temporal * ((info.frames - 1) // temporal)
    if frames < info.frames:
        notices.append(
            f"{info.path}: using the first {frames} of {info.frames} frames (the VAE takes 1 + {temporal}k frames)"
        )
    height, width = info.height - info.height % spatial, info.width - info.width % spatial
    if height == 0 or width == 0:
        size = f"{info.width}x{info.height}"
        raise InputError(f"{info.path}: frames are {size}; the VAE needs at least {spatial}x{spatial}")
    if (height, width) != (info.height, info.width):
        notices.append(
            f"{info.path}: center-cropped from {info.width}x{info.height} to {width}x{height} "
            f"(width and height must be multiples of {spatial})"
        )
    return frames, ((info.height - height) // 2, (info.width - width) // 2, height, width), notices


def _input_chunks(path, frames: int, crop, pending: deque, dtype: torch.dtype) -> Iterator[torch.Tensor]:
    """Frames of `path` as (1, 3, 1, H, W) tensors in [-1, 1], also queued in `pending` as uint8 (H, W, 3)."""
    from videogen.io import iter_frames

    top, left, height, width = crop
    for rgb in iter_frames(path, max_frames=frames):
        rgb = rgb[top : top + height, left : left + width]  # (H, W, 3)
        pending.append(rgb)
        pixels = torch.from_numpy(np.ascontiguousarray(rgb)).to(dtype) / 127.5 - 1.0  # (H, W, 3)
        yield pixels.permute(2, 0, 1)[None, :, None]  # (1, 3, 1, H, W)


@torch.no_grad()
def round_trip(vae, video: torch.Tensor) -> torch.Tensor:
    """``video`` (3, T, H, W) in [-1, 1] coded by ``vae`` in one pass and decoded from the posterior mean.

    The whole clip at once, as training sees it (`reconstruct` streams the same maths chunk by chunk); the
    result is (3, T, H, W) on ``vae``'s device and in its dtype.
    """
    return vae.decode(vae.encode(video[None].to(vae.device, vae.dtype)).mode())[0]


# ---------------------------------------------------------------------------------------------- metrics


class _Stats:
    """Running sums for PSNR (one MSE over everything) and SSIM (mean over frames)."""

    def __init__(self) -> None:
        self.squared_error = 0.0
        self.values = 0
        self.ssim_sum = 0.0
        self.frames = 0

    def add(self, reference: np.ndarray, output: np.ndarray) -> None:
        a = torch.from_numpy(reference).double()
        b = torch.from_numpy(output).double()
        self.squared_error += float((a - b).pow(2).sum())
        self.values += a.numel()
        self.ssim_sum += float(ssim(reference, output).sum())
        self.frames += len(reference)

    def psnr(self) -> float:
        return psnr_from_mse(self.squared_error / self.values)

    def ssim(self) -> float:
        return self.ssim_sum / self.frames


def psnr_from_mse(mse: float, peak: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB; infinite for identical images."""
    return math.inf if mse == 0 else 10.0 * math.log10(peak**2 / mse)


def ssim(reference: np.ndarray, output: np.ndarray) -> torch.Tensor:
    """Structural similarity per frame, (t,), of uint8 frames (t, H, W, 3), averaged over channels.

    Wang, Bovik, Sheikh & Simoncelli 2004, Eq. 13: local statistics under an 11-tap Gaussian window of
    sigma 1.5, C1 = (0.01 L)^2, C2 = (0.03 L)^2, L = 255, averaged over the positions where the window
    fits (as scikit-image's ``structural_similarity(gaussian_weights=True)``).
    """
    x = torch.from_numpy(reference).double().permute(0, 3, 1, 2)  # (t, 3, H, W)
    y = torch.from_numpy(output).double().permute(0, 3, 1, 2)  # (t, 3, H, W)
    taps = torch.exp(-0.5 * (torch.arange(11, dtype=torch.float64) - 5) ** 2 / 1.5**2)
    taps = taps / taps.sum()
    channels = x.shape[1]
    kernel = torch.outer(taps, taps).expand(channels, 1, 11, 11)  # (3, 1, 11, 11)
    if min(x.shape[-2:]) < 11:
        raise InputError(f"SSIM needs frames of at least 11x11 pixels; got {x.shape[-1]}x{x.shape[-2]}")

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel, groups=channels)  # (t, 3, H - 10, W - 10)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    index = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return index.mean(dim=(1, 2, 3))  # (t,)
