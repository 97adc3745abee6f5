"""Spatial tiling for the video VAE: encode or decode frames too large to process at once.

A frame is cut into overlapping tiles on a grid laid out in latent pixels; each tile goes through the
encoder or decoder on its own (streaming keeps one `StreamCache` per tile), and the outputs are merged
by a weighted average whose weights ramp linearly across each overlap, so neighbouring tiles cross-fade
instead of meeting at a hard edge (the blending of diffusers' and Wan's tiled VAEs, written as one
normalized sum, and keeping clear of each tile's own outer edge, see `ramp`). Tiles along an axis are spread evenly, so every overlap is at least the requested one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class Tiling:
    """When and how to tile. Sizes are in latent pixels (one latent pixel = 8 image pixels in Wan2.1).

    Set ``vae.tiling`` to change it; ``tiled=True/False`` on a call overrides the automatic choice.
    """

    tile: int = 32  # tile side (32 latent = 256 image pixels)
    overlap: int = 8  # minimum overlap of neighbouring tiles, cross-faded
    auto_pixels: int = 1280 * 720  # frames with more image pixels than this are tiled automatically

    def __post_init__(self) -> None:
        if not 0 < self.overlap < self.tile:
            raise ValueError(f"tiling overlap must be in (0, tile); got overlap={self.overlap}, tile={self.tile}")

    def wanted(self, tiled: bool | None, height: int, width: int) -> bool:
        """Whether to tile an image-pixel frame of `height` x `width` given the caller's `tiled` flag."""
        return self.auto_pixels < height * width if tiled is None else tiled


@dataclass(frozen=True)
class Span:
    """One tile along one axis, in latent pixels: [start, end), overlapping its neighbours by lo / hi."""

    start: int
    end: int
    lo: int  # overlap with the previous tile (0 for the first)
    hi: int  # overlap with the next tile (0 for the last)


def axis_spans(size: int, tile: int, overlap: int) -> list[Span]:
    """Evenly spread tiles of length `tile` covering [0, size), neighbours overlapping by >= `overlap`."""
    if size <= tile:
        return [Span(0, size, 0, 0)]
    count = math.ceil((size - overlap) / (tile - overlap))
    starts = [round(i * (size - tile) / (count - 1)) for i in range(count)]
    ends = [s + tile for s in starts]
    return [
        Span(s, e, ends[i - 1] - s if i > 0 else 0, e - starts[i + 1] if i + 1 < count else 0)
        for i, (s, e) in enumerate(zip(starts, ends))
    ]


def ramp(length: int, lo: int, hi: int) -> torch.Tensor:
    """Blend weights (length,): rising across the first `lo` entries, falling across the last `hi`, else 1.

    Within an overlap of n entries, the outer quarter next to the tile's own edge gets (almost) no weight:
    that is where the tile's zero padding distorts its output most, so the neighbour, for which those
    pixels are well inside, provides them. The middle half cross-fades linearly; there two neighbours'
    weights (k + 1) / (n/2 + 1) and (n/2 - k) / (n/2 + 1) sum to 1. Weights stay > 0, so the normalized
    sum is defined everywhere.
    """
    k = torch.arange(length, dtype=torch.float32)

    def rise(position: torch.Tensor, n: int) -> torch.Tensor:
        if n == 0:
            return torch.ones(length)
        margin = n // 4
        return ((position - margin + 1) / (n - 2 * margin + 1)).clamp(1e-4, 1.0)

    return torch.minimum(rise(k, lo), rise(length - 1 - k, hi))


def tile_grid(height: int, width: int, tiling: Tiling) -> list[tuple[Span, Span]]:
    """(row span, column span) of every tile of a latent frame of `height` x `width`, row-major."""
    rows = axis_spans(height, tiling.tile, tiling.overlap)
    cols = axis_spans(width, tiling.tile, tiling.overlap)
    return [(r, c) for r in rows for c in cols]


def run_tiled(
    fn: Callable[[torch.Tensor, int], torch.Tensor],
    x: torch.Tensor,
    grid: list[tuple[Span, Span]],
    scale_in: int,
    scale_out: int,
) -> torch.Tensor:
    """Apply `fn(tile, index)` to each tile of x and cross-fade the results into one tensor.

    Args:
        fn: maps a tile of x (B, C, T, h * scale_in, w * scale_in) to (B, C', T', h * scale_out,
            w * scale_out); ``index`` names the tile (for its stream cache).
        x: (B, C, T, H * scale_in, W * scale_in).
        grid: tiles in latent pixels, from `tile_grid`.
        scale_in, scale_out: image pixels per latent pixel of x and of fn's output (8 or 1).

    Returns (B, C', T', H * scale_out, W * scale_out).
    """
    out = weight_sum = None
    for index, (row, col) in enumerate(grid):
        tile = x[..., row.start * scale_in : row.end * scale_in, col.start * scale_in : col.end * scale_in]
        y = fn(tile, index)  # (B, C', T', h, w)
        if out is None:
            b, c, t = y.shape[:3]
            height, width = grid[-1][0].end * scale_out, grid[-1][1].end * scale_out
            out = y.new_zeros(b, c, t, height, width)  # (B, C', T', H, W)
            weight_sum = y.new_zeros(height, width)  # (H, W)
        w_rows = ramp(y.shape[-2], row.lo * scale_out, row.hi * scale_out)
        w_cols = ramp(y.shape[-1], col.lo * scale_out, col.hi * scale_out)
        weight = torch.outer(w_rows, w_cols).to(y)  # (h, w)
        rows = slice(row.start * scale_out, row.end * scale_out)
        cols = slice(col.start * scale_out, col.end * scale_out)
        out[..., rows, cols] += y * weight
        weight_sum[rows, cols] += weight
    return out / weight_sum
