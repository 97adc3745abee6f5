"""Encode and decode a video through a VAE, streaming, and measure how close the result is to the input.

``videogen reconstruct IN -o OUT --model DIR`` calls `reconstruct`. Frames flow through one lazy chain
(read -> encode_frames -> decode_frames -> write), one chunk at a time: the first frame, then 4-frame
chunks, so memory holds the VAE's causal cache and a few frames, however long the video. PSNR and SSIM
are accumulated on the way, comparing each decoded chunk with the input frames it came from.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from videogen.errors import InputError
from videogen.frames import to_pixels, to_uint8
from videogen.metrics import psnr_from_mse, ssim


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
    from videogen.modelfolder import load_vae

    start = time.perf_counter()
    info = probe_video(input_path)
    writer = VideoWriter(output_path, info.fps, overwrite=overwrite)  # refuses an existing target up front
    vae = load_vae(model).eval()
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
        yield to_pixels(rgb[None], dtype=dtype)  # (1, 3, 1, H, W)


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
        self.ssim_sum += float(frame_ssim(reference, output).sum())
        self.frames += len(reference)

    def psnr(self) -> float:
        return psnr_from_mse(self.squared_error / self.values)

    def ssim(self) -> float:
        return self.ssim_sum / self.frames


def frame_ssim(reference: np.ndarray, output: np.ndarray) -> torch.Tensor:
    """Structural similarity per frame, (t,), of uint8 frames (t, H, W, 3), averaged over channels.

    `videogen.metrics.ssim` in float64 on the uint8 scale (L = 255), as scikit-image's
    ``structural_similarity(gaussian_weights=True)``; frames under 11x11 are an `InputError`.
    """
    x = rearrange(torch.from_numpy(reference), "t h w c -> t c h w")  # (t, 3, H, W)
    y = rearrange(torch.from_numpy(output), "t h w c -> t c h w")  # (t, 3, H, W)
    return ssim(x, y, data_range=255.0, dtype=torch.float64, reduction="none", small_frames="refuse")  # (t,)
