"""The shapes world: a procedural video world that can be rendered without limit and checked by pixel analysis.

Each clip shows one object -- a circle, an axis-aligned square or an upward-pointing triangle, about a
quarter of the canvas wide, in one of six saturated colours -- moving in a straight line at constant speed
(left, right, up or down, about half the canvas over the clip) on a black, gray or white background. Its
caption is ``a {color} {shape} moving {direction} on a {background} background`` (`CAPTION_TEMPLATE`).
Three (colour, shape) pairs never appear in training data, so that composition can be measured:
a model that draws a yellow triangle has combined "yellow" and "triangle" from separate examples.

Rendering is exact up to anti-aliasing: every pixel's coverage is the mean of a supersampled grid of
point-in-shape tests, so edges are smooth (a VAE trained on them learns smooth shapes, not staircase
artefacts). The tests run on a small patch around the object, vectorised over frames, so one 64x64x17 clip
costs about a millisecond of numpy work (docs/benchmarks.md).

Coordinates are continuous with the origin at the top-left corner of the canvas and y pointing down; pixel
(i, j) covers [j, j + 1) x [i, i + 1). A `ShapeClip` stores positions and sizes as fractions of the canvas,
so one spec renders the same scene at any resolution.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterator, Literal

import numpy as np
import torch
from einops import rearrange

from videogen.errors import InputError
from videogen.frames import to_video_tensor

# --------------------------------------------------------------------------------------------- vocabulary

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "cyan": (0, 255, 255),
    "magenta": (255, 0, 255),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
    "white": (255, 255, 255),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
# unit step of each direction in image coordinates (y points down, so "up" is -y)
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
# never produced for training: composition is measured on these
HELDOUT_PAIRS: frozenset[tuple[str, str]] = frozenset(
    {("yellow", "triangle"), ("cyan", "circle"), ("magenta", "square")}
)

CAPTION_TEMPLATE = "a {color} {shape} moving {direction} on a {background} background"
Split = Literal["train", "heldout", "all"]
SPLITS: tuple[str, ...] = ("train", "heldout", "all")

# ranges `sample_spec` draws from, as fractions of the canvas side
SIZE_RANGE = (0.22, 0.30)  # object width: "about a quarter of the canvas wide"
TRAVEL_RANGE = (0.40, 0.55)  # distance covered over the clip: "about half the canvas"
MARGIN = 0.03  # gap kept between the object and the canvas edge at every frame


def pairs(split: Split = "train") -> list[tuple[str, str]]:
    """The (color, shape) pairs of a split, in a fixed order: train has 15, heldout 3, all 18."""
    _check_split(split)
    every = [(color, shape) for color in COLORS for shape in SHAPES]
    if split == "all":
        return every
    keep_heldout = split == "heldout"
    return [pair for pair in every if (pair in HELDOUT_PAIRS) == keep_heldout]


def all_captions(split: Split = "train") -> list[str]:
    """Every caption of a split (pairs x directions x backgrounds), in a fixed order: 180, 36 or 216."""
    return [
        CAPTION_TEMPLATE.format(color=color, shape=shape, direction=direction, background=background)
        for color, shape in pairs(split)
        for direction in DIRECTIONS
        for background in BACKGROUNDS
    ]


def opposite(direction: str) -> str:
    """The direction of the reversed motion: left <-> right, up <-> down."""
    _check_choice("direction", direction, DIRECTIONS)
    dx, dy = DIRECTIONS[direction]
    return next(name for name, step in DIRECTIONS.items() if step == (-dx, -dy))


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise InputError(f"unknown shapes split {split!r}: expected one of {', '.join(SPLITS)}")


def _check_choice(kind: str, value: str, choices) -> None:
    if value not in choices:
        raise InputError(f"unknown {kind} {value!r}: expected one of {', '.join(choices)}")


# ---------------------------------------------------------------------------------------------- the spec


@dataclass(frozen=True)
class ShapeClip:
    """One clip of the shapes world, independent of resolution and length."""

    color: str  # a key of COLORS
    shape: str  # one of SHAPES
    direction: str  # a key of DIRECTIONS
    background: str  # a key of BACKGROUNDS
    x: float = 0.5  # centre of the object at the first frame, fraction of the canvas width from the left
    y: float = 0.5  # centre of the object at the first frame, fraction of the canvas height from the top
    size: float = 0.25  # object width (and height), fraction of the canvas side
    travel: float = 0.0  # distance the centre moves over the whole clip, fraction of the canvas side

    def __post_init__(self):
        _check_choice("color", self.color, COLORS)
        _check_choice("shape", self.shape, SHAPES)
        _check_choice("direction", self.direction, DIRECTIONS)
        _check_choice("background", self.background, BACKGROUNDS)
        if not 0.0 < self.size <= 1.0 or self.travel < 0.0:
            raise InputError(f"shape size {self.size} must be in (0, 1] and travel {self.travel} at least 0")
        for name, (cx, cy) in (("start", self.start), ("end", self.end)):
            half = self.size / 2
            if min(cx, cy) - half < -1e-9 or max(cx, cy) + half > 1 + 1e-9:
                raise InputError(f"the {self.shape} leaves the canvas at its {name} ({cx:.3f}, {cy:.3f}): {self}")

    @property
    def caption(self) -> str:
        return CAPTION_TEMPLATE.format(
            color=self.color, shape=self.shape, direction=self.direction, background=self.background
        )

    @property
    def start(self) -> tuple[float, float]:
        return (self.x, self.y)

    @property
    def end(self) -> tuple[float, float]:
        dx, dy = DIRECTIONS[self.direction]
        return (self.x + dx * self.travel, self.y + dy * self.travel)

    @property
    def heldout(self) -> bool:
        return (self.color, self.shape) in HELDOUT_PAIRS

    def to_dict(self) -> dict:
        return asdict(self)


def sample_spec(
    rng: np.random.Generator,
    split: Split = "train",
    *,
    color: str | None = None,
    shape: str | None = None,
    direction: str | None = None,
    background: str | None = None,
) -> ShapeClip:
    """Draw a clip uniformly over the split's (pair, direction, background) and over positions and sizes.

    Attributes given as keywords are kept (the rest is still drawn, so a fixed attribute does not change
    how the others are drawn); a fixed (color, shape) pair must belong to the split. The start position is
    drawn from the positions whose whole path stays `MARGIN` inside the canvas, so every sampled clip is
    valid by construction.
    """
    choices = pairs(split)
    drawn_color, drawn_shape = choices[rng.integers(len(choices))]
    drawn_direction = list(DIRECTIONS)[rng.integers(len(DIRECTIONS))]
    drawn_background = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
    color, shape = color or drawn_color, shape or drawn_shape
    direction, background = direction or drawn_direction, background or drawn_background
    if (color, shape) not in choices:
        raise InputError(f"the pair ({color}, {shape}) is not in the {split!r} split of the shapes world")
    _check_choice("direction", direction, DIRECTIONS)
    size = rng.uniform(*SIZE_RANGE)
    travel = rng.uniform(*TRAVEL_RANGE)
    dx, dy = DIRECTIONS[direction]
    x = rng.uniform(*start_range(size, travel, dx))
    y = rng.uniform(*start_range(size, travel, dy))
    return ShapeClip(color, shape, direction, background, x=x, y=y, size=size, travel=travel)


def start_range(size: float, travel: float, step: int) -> tuple[float, float]:
    """The start coordinates along one axis from which an object of ``size`` moving ``step`` (-1, 0 or 1, a
    component of `DIRECTIONS`) by ``travel`` stays `MARGIN` inside the canvas: along the motion the start
    leaves room for the travel ahead; across it (step 0), anywhere inside."""
    low, high = size / 2 + MARGIN, 1 - size / 2 - MARGIN
    return low + max(-step, 0) * travel, high - max(step, 0) * travel


# ------------------------------------------------------------------------------------------------ render


def every_combination(positions: int, seed: int = 0) -> list[ShapeClip]:
    """All 6 x 3 x 4 x 3 = 216 (color, shape, direction, background) combinations, each at ``positions``
    random layouts (deterministic per seed): the exhaustive set the analyser is checked on."""
    specs = []
    for color, shape in pairs("all"):
        for direction in DIRECTIONS:
            for background in BACKGROUNDS:
                for k in range(positions):
                    rng = np.random.default_rng([seed, len(specs), k])
                    fixed = dict(color=color, shape=shape, direction=direction, background=background)
                    specs.append(sample_spec(rng, "all", **fixed))
    return specs


def _inside(shape: str, u: np.ndarray, v: np.ndarray, half: float) -> np.ndarray:
    """Point-in-shape test for offsets (u, v) from the object's box centre, in pixels (v points down).

    The triangle has its apex at the top centre of the box and its base along the bottom edge, so all
    three shapes fill the same `2 * half` square box.
    """
    if shape == "circle":
        return u * u + v * v <= half * half
    if shape == "square":
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    # triangle: depth below the apex is (v + half); the half-width grows from 0 to `half` over 2 * half
    return (v <= half) & (np.abs(u) <= (v + half) / 2)


def hit_counts(
    shape: str, centers: np.ndarray, half: float, size: int, *, supersample: int = 4
) -> np.ndarray:
    """How many of each pixel's `supersample`^2 sample points fall inside the shape: uint8 (T, H, W).

    centers: (T, 2) float, the (x, y) centre of the object's box per frame in pixels.
    Only a patch around the object is tested, then pasted into a padded canvas at each frame's offset.
    Counts rather than fractions keep the coverage exact and let `render` colour pixels by table lookup.
    """
    num_frames = len(centers)
    patch = int(math.ceil(2 * half)) + 3  # pixels per patch side: the box plus a pixel each side
    origin = np.floor(centers - half).astype(np.int64) - 1  # (T, 2) top-left pixel of each patch
    # 1. sample points of the patch, relative to each frame's centre
    offsets = (np.arange(supersample) + 0.5) / supersample  # (s,) positions inside a pixel
    grid = (np.arange(patch)[:, None] + offsets[None, :]).reshape(-1)  # (P * s,)
    u = origin[:, 0, None] + grid[None, :] - centers[:, 0, None]  # (T, P * s)
    v = origin[:, 1, None] + grid[None, :] - centers[:, 1, None]  # (T, P * s)
    # 2. point tests, counted over each pixel's samples
    hits = _inside(shape, u[:, None, :], v[:, :, None], half)  # (T, P * s, P * s)
    hits = rearrange(hits, "t (i si) (j sj) -> t i j (si sj)", si=supersample, sj=supersample)
    counts = hits.sum(axis=-1, dtype=np.uint16)  # (T, P, P)
    # 3. paste each frame's patch into a canvas padded by one patch on every side, then crop
    canvas = np.zeros((num_frames, size + 2 * patch, size + 2 * patch), np.uint16)  # (T, H + 2P, W + 2P)
    rows = origin[:, 1, None, None] + patch + np.arange(patch)[None, :, None]  # (T, P, 1)
    cols = origin[:, 0, None, None] + patch + np.arange(patch)[None, None, :]  # (T, 1, P)
    canvas[np.arange(num_frames)[:, None, None], rows, cols] = counts
    return canvas[:, patch:-patch, patch:-patch]  # (T, H, W)


def coverage(
    shape: str, centers: np.ndarray, half: float, size: int, *, supersample: int = 4
) -> np.ndarray:
    """Anti-aliased coverage of the shape in each frame: float32 (T, H, W) in [0, 1] (see `hit_counts`)."""
    counts = hit_counts(shape, centers, half, size, supersample=supersample)
    return counts.astype(np.float32) / supersample**2


def centers(spec: ShapeClip, size: int, num_frames: int) -> np.ndarray:
    """The object's box centre per frame in pixels: (T, 2) float (x, y), constant speed from start to end."""
    t = np.linspace(0.0, 1.0, num_frames) if num_frames > 1 else np.zeros(1)
    start, end = np.array(spec.start), np.array(spec.end)
    return (start[None, :] + t[:, None] * (end - start)[None, :]) * size  # (T, 2)


def render(spec: ShapeClip, *, size: int = 64, num_frames: int = 17, supersample: int = 4) -> np.ndarray:
    """Render a clip: uint8 (T, H, W, 3) with H = W = `size`, anti-aliased with `supersample`^2 samples a pixel."""
    if size < 8 or num_frames < 1 or supersample < 1:
        raise InputError(
            f"cannot render a shapes clip of size {size}, {num_frames} frames, supersample {supersample}: "
            "need size >= 8, at least 1 frame and supersample >= 1"
        )
    path = centers(spec, size, num_frames)  # (T, 2)
    counts = hit_counts(spec.shape, path, spec.size * size / 2, size, supersample=supersample)  # (T, H, W)
    # one colour per coverage level: background + alpha * (color - background), rounded once
    alpha = np.arange(supersample**2 + 1, dtype=np.float32) / supersample**2  # (levels,)
    background = np.array(BACKGROUNDS[spec.background], np.float32)
    color = np.array(COLORS[spec.color], np.float32)
    palette = np.round(background + alpha[:, None] * (color - background)).astype(np.uint8)  # (levels, 3)
    return np.take(palette, counts, axis=0)  # (T, H, W, 3); np.take is ~5x faster than palette[counts]


# ----------------------------------------------------------------------------------------------- dataset


class ShapesDataset(torch.utils.data.Dataset):
    """A fixed-length view of the shapes world for training: item i is (video (3, T, H, W) in [-1, 1], caption).

    Item i is a pure function of (seed, split, i): the spec is drawn from a generator seeded with
    ``[seed, i]``, so items are reproducible in any order, across processes and DataLoader workers, and
    two seeds give independent streams. The train split never contains a held-out (color, shape) pair.
    """

    def __init__(
        self,
        num_clips: int = 10_000,
        *,
        seed: int = 0,
        split: Split = "train",
        size: int = 64,
        num_frames: int = 17,
    ):
        _check_split(split)
        if num_clips < 1 or seed < 0:
            raise InputError(f"a shapes dataset needs num_clips >= 1 and seed >= 0, got {num_clips} and {seed}")
        self.num_clips = num_clips
        self.seed = seed
        self.split = split
        self.size = size
        self.num_frames = num_frames

    def __len__(self) -> int:
        return self.num_clips

    def spec(self, index: int) -> ShapeClip:
        """The spec of item `index` (negative indices count from the end, as for a list)."""
        if not -self.num_clips <= index < self.num_clips:
            raise IndexError(f"shapes dataset index {index} out of range for {self.num_clips} clips")
        rng = np.random.default_rng([self.seed, index % self.num_clips])
        return sample_spec(rng, self.split)

    def frames(self, index: int) -> np.ndarray:
        """Item `index` as uint8 frames (T, H, W, 3), as a video file would hold it."""
        return render(self.spec(index), size=self.size, num_frames=self.num_frames)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        spec = self.spec(index)
        frames = render(spec, size=self.size, num_frames=self.num_frames)
        return to_video_tensor(frames), spec.caption

    def __iter__(self) -> Iterator[tuple[torch.Tensor, str]]:
        return (self[i] for i in range(self.num_clips))
