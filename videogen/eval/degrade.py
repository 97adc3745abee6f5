"""Degradations that mimic what a generated clip goes through: sensor-like noise, blur, lossy coding, colour drift.

They exist to test pixel analysis (`videogen.eval.shapes`) against the defects of real model output read
back from an MP4, without needing a trained model: a rendered clip degraded here should still be analysed
correctly, so that a wrong answer on a model's clip means the model is wrong, not the checker.

Every function takes and returns uint8 frames (T, H, W, 3) and leaves its input untouched; random ones
take an explicit `numpy.random.Generator`.
"""

from __future__ import annotations

import io
import math

import numpy as np

from videogen.errors import InputError


def gaussian_noise(frames: np.ndarray, sigma: float, *, rng: np.random.Generator) -> np.ndarray:
    """Add independent N(0, sigma^2) noise to every channel of every pixel, then clip to 0..255."""
    noise = rng.standard_normal(frames.shape, dtype=np.float32) * sigma
    return np.clip(np.round(frames + noise), 0, 255).astype(np.uint8)


def gaussian_blur(frames: np.ndarray, sigma: float) -> np.ndarray:
    """Blur each frame spatially with a Gaussian of standard deviation `sigma` pixels (edges replicated)."""
    radius = max(1, math.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps = (taps / taps.sum()).astype(np.float32)  # (2r + 1,)
    height, width = frames.shape[1:3]
    # separable: along the rows, then along the columns, each a weighted sum of shifted copies
    padded = np.pad(frames.astype(np.float32), [(0, 0), (radius, radius), (0, 0), (0, 0)], mode="edge")
    out = sum(w * padded[:, k : k + height] for k, w in enumerate(taps))  # (T, H, W, 3)
    padded = np.pad(out, [(0, 0), (0, 0), (radius, radius), (0, 0)], mode="edge")
    out = sum(w * padded[:, :, k : k + width] for k, w in enumerate(taps))  # (T, H, W, 3)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def jpeg(frames: np.ndarray, quality: int = 75) -> np.ndarray:
    """Code every frame as a JPEG (PIL, 4:2:0 chroma subsampling like H.264's yuv420p) and decode it back."""
    from PIL import Image

    out = np.empty_like(frames)
    for t, frame in enumerate(frames):
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        out[t] = np.asarray(Image.open(buffer).convert("RGB"))
    return out


def color_shift(
    frames: np.ndarray, *, rng: np.random.Generator, max_offset: float = 20.0, max_gain: float = 0.1
) -> np.ndarray:
    """Scale and offset each channel by one random gain in 1 +- max_gain and offset in +- max_offset per clip."""
    gain = rng.uniform(1 - max_gain, 1 + max_gain, 3).astype(np.float32)  # (3,)
    offset = rng.uniform(-max_offset, max_offset, 3).astype(np.float32)  # (3,)
    shifted = frames.astype(np.float32) * gain + offset
    return np.clip(np.round(shifted), 0, 255).astype(np.uint8)


def h264(frames: np.ndarray, *, fps: float = 8.0, crf: int = 23) -> np.ndarray:
    """Encode the clip as H.264 (libx264, yuv420p) in an in-memory MP4 with PyAV, and decode it back."""
    import av
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise InputError(f"H.264 (yuv420p) needs even frame sizes, got {frames.shape[2]}x{frames.shape[1]}")
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=round(fps))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": str(crf)}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    buffer.seek(0)
    with av.open(buffer, mode="r") as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return np.stack(decoded)  # (T, H, W, 3)
