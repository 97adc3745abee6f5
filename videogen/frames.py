"""Frames at the edges, pixels inside: the one place that converts between them and fits frames to a size.

The library computes on float pixels in [-1, 1], laid out ``(B, 3, T, H, W)``; frames at the edges (files, the
CLI, the user API) are uint8 ``(T, H, W, 3)``. Training, sampling, reconstruction and evaluation all convert
through `to_pixels` and `to_uint8`, so a clip means the same numbers everywhere. Inputs of another size are
centre-cropped to the target's aspect ratio and resized (`fit_frames`), and `fit_notice` says so in one line.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange


def to_pixels(frames: np.ndarray, device: torch.device | str | None = None,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 frames (t, H, W, 3) -> float pixels (1, 3, t, H, W) in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).to(device=device, dtype=dtype) / 127.5 - 1.0
    return rearrange(x, "t h w c -> 1 c t h w")  # (1, 3, t, H, W)


def to_video_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 frames (T, H, W, 3) -> float32 video (3, T, H, W) in [-1, 1], as datasets yield clips.

    numpy, single-threaded: torch's intra-op threads cost more than they save on a clip this small.
    """
    video = np.ascontiguousarray(rearrange(frames, "t h w c -> c t h w"), dtype=np.float32)  # (3, T, H, W)
    video /= 127.5
    video -= 1.0
    return torch.from_numpy(video)


def to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """Pixels (3, t, H, W) in [-1, 1] (clamped) -> uint8 frames (t, H, W, 3)."""
    values = ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return rearrange(values, "c t h w -> t h w c").cpu().numpy()  # (t, H, W, 3)


def crop_box(height: int, width: int, target_h: int, target_w: int) -> tuple[int, int, int, int]:
    """The centred ``(top, left, h, w)`` crop of a ``height x width`` frame with the target's aspect ratio."""
    if width * target_h > height * target_w:  # too wide: crop the sides
        w = max(1, round(height * target_w / target_h))
        return 0, (width - w) // 2, height, w
    h = max(1, round(width * target_h / target_w))
    return (height - h) // 2, 0, h, width


def centre_crop(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 frames (t, h, w, 3) -> their middle (t, H, W, 3); the frames must be at least that large."""
    top, left = (frames.shape[1] - height) // 2, (frames.shape[2] - width) // 2
    return frames[:, top:top + height, left:left + width]  # (t, H, W, 3)


def fit_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 frames (t, h, w, 3) centre-cropped to the target's aspect ratio and resized to (t, H, W, 3).

    Frames already of the target size come back unchanged (the same pixels, byte for byte). Resizing is
    bicubic with antialiasing, so shrinking does not alias.
    """
    if frames.shape[1:3] == (height, width):
        return frames
    top, left, h, w = crop_box(frames.shape[1], frames.shape[2], height, width)
    x = torch.from_numpy(np.ascontiguousarray(frames[:, top:top + h, left:left + w]))
    x = rearrange(x, "t h w c -> t c h w").float()  # (t, 3, h, w)
    if (h, w) != (height, width):
        x = F.interpolate(x, size=(height, width), mode="bicubic", antialias=True, align_corners=False)
    return rearrange(x.round().clamp(0, 255).to(torch.uint8), "t c h w -> t h w c").numpy()  # (t, H, W, 3)


def fit_notice(name: str, size: tuple[int, int], height: int, width: int) -> str | None:
    """One line saying how an input was fitted to the model's frame size, or None when it already fits."""
    h, w = size
    if (h, w) == (height, width):
        return None
    _, _, ch, cw = crop_box(h, w, height, width)
    crop = "" if (ch, cw) == (h, w) else f" centre-cropped to {cw}x{ch} and"
    return f"{name}: {w}x{h} frames{crop} resized to {width}x{height} to fit the model"
