"""Prompt adherence in the shapes world, measured by pixel analysis.

`analyze` looks at a clip -- uint8 frames (T, H, W, 3), typically a model's output read back from an MP4,
so with compression noise, blur, slight colour shifts and imperfect shapes -- and estimates the four
attributes of its caption: background, object colour, shape and direction of motion. `score` compares the
estimate with a caption or a `ShapeClip`. Each attribute comes with a confidence in [0, 1] and the
measurements behind it, so a wrong answer can be told from an unsure one; an attribute that cannot be
determined (no uniform background, no object, no motion) is ``"none"`` with confidence 0, never a guess.

The analysis, in order:

1. Background: the per-channel median of the border pixels of all frames (robust to the object touching
   the border), snapped to the nearest of black / gray / white.
2. Object: pixels far from that background give a first guess of the object colour; every pixel is then
   projected onto the background -> object colour line, and the object mask is the pixels past the
   midpoint (the 50% coverage contour of an anti-aliased edge, so the mask keeps the true outline). Per
   frame, pixels far from the mask's median position are dropped (speckles), and a frame counts as
   showing the object when the remaining area is plausible.
3. Colour: the median of the mask's core pixels (well past the midpoint), nearest palette colour.
4. Shape: two features per frame, medians over frames. The fill ratio of the bounding box separates
   circle (pi / 4 = 0.785) from square (1.0) and triangle (0.5); the skewness of the rows of the mask
   separates the upward triangle (mass at the bottom: skewness -2 sqrt(2) / 5 = -0.566 for the density
   2u on [0, 1]) from the symmetric circle and square, so a triangle is recognised even when blur fills
   its corners. The nearest prototype in this plane wins; one too far from all is ``"none"``.
5. Direction: a least-squares line through the per-frame centroids; its displacement over the clip gives
   the dominant axis and sign, and the motion magnitude (``"none"`` below `AnalysisConfig.min_motion`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from videogen.data.shapes import (
    BACKGROUNDS, CAPTION_TEMPLATE, COLORS, DIRECTIONS, SHAPES, SIZE_RANGE, TRAVEL_RANGE, ShapeClip, start_range,
)
from videogen.errors import InputError

NONE = "none"  # the label of an attribute that could not be determined
ATTRIBUTES = ("color", "shape", "direction", "background")

# (fill ratio of the bounding box, vertical skewness of the mask's rows) of each ideal shape
SHAPE_PROTOTYPES: dict[str, tuple[float, float]] = {
    "circle": (math.pi / 4, 0.0),
    "square": (1.0, 0.0),
    "triangle": (0.5, -2 * math.sqrt(2) / 5),
}


@dataclass(frozen=True)
class AnalysisConfig:
    """Thresholds of `analyze`. Distances are Euclidean in 0..255 RGB; areas are fractions of the canvas."""

    border: int = 2  # width in pixels of the frame border the background is estimated from
    background_tolerance: float = 64.0  # a border pixel this close to the border median agrees with it
    min_uniformity: float = 0.5  # below this share of agreeing border pixels there is no background
    far: float = 96.0  # pixels this far from the background surely belong to the object (first colour guess)
    core_alpha: float = 0.75  # mask pixels this far along background -> object give the object's colour
    color_tolerance: float = 80.0  # a core pixel this close to the object's median colour agrees with it
    min_area: float = 0.004  # a frame shows the object when its mask covers between min_area ...
    max_area: float = 0.35  # ... and max_area of the canvas
    gate_radius: float = 1.6  # mask pixels beyond gate_radius * sqrt(area) + 2 px from the median are dropped
    min_found: float = 0.5  # share of frames that must show the object for shape and direction
    # unit distances in (fill ratio, skewness): the fill ratio is the noisier, as pixels, blur and coding round
    # corners; the symmetric shapes' skewness stays within +-0.05 while the triangle's falls to -0.3 at worst
    shape_scale: tuple[float, float] = (0.15, 0.10)
    max_shape_distance: float = 4.0  # a mask farther than this from every prototype has shape "none"
    min_motion: float = 0.10  # displacement over the clip, fraction of the canvas side, that counts as motion


# ------------------------------------------------------------------------------------------------ captions


@dataclass(frozen=True)
class ShapeAttributes:
    """The four attributes a caption of the shapes world names."""

    color: str
    shape: str
    direction: str
    background: str

    @property
    def caption(self) -> str:
        return CAPTION_TEMPLATE.format(
            color=self.color, shape=self.shape, direction=self.direction, background=self.background
        )


_CAPTION = re.compile(r"a (\S+) (\S+) moving (\S+) on a (\S+) background")
_VOCABULARY = {"color": COLORS, "shape": SHAPES, "direction": DIRECTIONS, "background": BACKGROUNDS}


def parse_caption(caption: str) -> ShapeAttributes:
    """Map ``a {color} {shape} moving {direction} on a {background} background`` to its attributes.

    Case, surrounding spaces and a final full stop are forgiven; anything else that is not a caption of
    the shapes world (another sentence, an unknown colour) is refused with an `InputError` naming it.
    """
    if not isinstance(caption, str):
        raise InputError(f"a caption must be a string, got {type(caption).__name__}")
    text = " ".join(caption.strip().lower().split()).removesuffix(".")
    match = _CAPTION.fullmatch(text)
    if match is None:
        raise InputError(f"caption {caption!r} is not of the form {CAPTION_TEMPLATE!r}")
    values = dict(zip(ATTRIBUTES, match.groups()))
    for name, value in values.items():
        if value not in _VOCABULARY[name]:
            choices = ", ".join(_VOCABULARY[name])
            raise InputError(f"caption {caption!r} names an unknown {name} {value!r}: expected one of {choices}")
    return ShapeAttributes(**values)


def _expected(target: ShapeClip | ShapeAttributes | str) -> ShapeAttributes:
    if isinstance(target, str):
        return parse_caption(target)
    return ShapeAttributes(*(getattr(target, name) for name in ATTRIBUTES))


# ---------------------------------------------------------------------------------------------- analysis


@dataclass
class ShapeAnalysis:
    """What `analyze` saw: a label per attribute (or "none"), its confidence, and the measurements."""

    color: str
    shape: str
    direction: str
    background: str
    confidence: dict[str, float]  # per attribute, in [0, 1]; 0 for "none"
    motion: float  # distance the centroid moved over the clip, fraction of the canvas side
    diagnostics: dict[str, float] = field(default_factory=dict)  # the raw measurements, for reports

    @property
    def attributes(self) -> ShapeAttributes:
        return ShapeAttributes(self.color, self.shape, self.direction, self.background)

    @property
    def caption(self) -> str | None:
        """The caption the clip shows, or None when an attribute is "none"."""
        labels = (self.color, self.shape, self.direction, self.background)
        return None if NONE in labels else self.attributes.caption

    def summary(self) -> str:
        parts = [f"{name}={getattr(self, name)} ({self.confidence[name]:.2f})" for name in ATTRIBUTES]
        return ", ".join(parts) + f", motion={self.motion:.2f}"


@dataclass
class _Object:
    """The segmented object, per frame: which frames show it and the measurements of each."""

    found: np.ndarray  # (T,) bool
    centroids: np.ndarray  # (T, 2) float (x, y) in pixels, NaN where not found
    fill: np.ndarray  # (T,) fill ratio of the bounding box, NaN where not found
    skew: np.ndarray  # (T,) skewness of the mask's rows, NaN where not found
    core: np.ndarray  # (N, 3) float, the core pixels of every found frame


def analyze(frames, *, config: AnalysisConfig | None = None) -> ShapeAnalysis:
    """Estimate background, colour, shape and direction of a shapes-world clip.

    frames: uint8 (T, H, W, 3) numpy (or (H, W, 3) for one frame, or anything with a ``.frames`` such as
    a `videogen.io.Video`).
    """
    cfg = config or AnalysisConfig()
    pixels = _as_pixels(frames)  # (T, H, W, 3) float32
    diag: dict[str, float] = {}
    # 1. background
    background_rgb, background, background_conf = _background(pixels, cfg, diag)
    # 2. object, per frame
    obj = _segment(pixels, background_rgb, cfg, diag)
    found_share = float(obj.found.mean()) if obj is not None else 0.0
    diag["found_share"] = found_share
    if found_share > 0:  # where the object is first seen, in canvas sides (see `start_fits`)
        first = obj.centroids[np.flatnonzero(obj.found)[0]]
        diag["start_x"], diag["start_y"] = (float((c + 0.5) / n) for c, n in zip(first, pixels.shape[2:0:-1]))
    # 3. colour, from any frame that shows the object; 4.-5. shape and motion need most frames to show it
    color, color_conf = _color(obj, cfg, diag) if found_share > 0 else (NONE, 0.0)
    enough = found_share >= cfg.min_found
    shape, shape_conf = _shape(obj, cfg, diag) if enough else (NONE, 0.0)
    direction, direction_conf, motion = (NONE, 0.0, 0.0)
    if enough:
        direction, direction_conf, motion = _direction(obj, pixels.shape[1:3], cfg, diag)
    confidence = {
        "color": color_conf * found_share,
        "shape": shape_conf * found_share,
        "direction": direction_conf * found_share,
        "background": background_conf,
    }
    return ShapeAnalysis(color, shape, direction, background, confidence, motion, diag)


def _as_pixels(frames) -> np.ndarray:
    frames = getattr(frames, "frames", frames)
    array = np.asarray(frames)
    if array.ndim == 3:
        array = array[None]  # (1, H, W, 3)
    if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise InputError(
            f"shapes analysis needs uint8 frames (T, H, W, 3), got {array.dtype} array of shape {array.shape}"
        )
    if min(array.shape[:3]) < 1 or min(array.shape[1:3]) < 8:
        raise InputError(f"shapes analysis needs frames of at least 8x8 pixels, got shape {array.shape}")
    return array.astype(np.float32)


def _nearest(rgb: np.ndarray, table: dict[str, tuple[int, int, int]]) -> tuple[str, float, float]:
    """The name of the table colour nearest to rgb, the margin over the runner-up in [0, 1], the distance."""
    names = list(table)
    distances = np.linalg.norm(np.array([table[n] for n in names], np.float32) - rgb, axis=-1)
    order = np.argsort(distances)
    best, second = distances[order[0]], distances[order[1]]
    return names[order[0]], float((second - best) / (second + best + 1e-6)), float(best)


def _background(pixels: np.ndarray, cfg: AnalysisConfig, diag: dict) -> tuple[np.ndarray, str, float]:
    b = min(cfg.border, pixels.shape[1] // 4, pixels.shape[2] // 4)
    ring = np.concatenate(
        [
            pixels[:, :b].reshape(-1, 3),  # top rows
            pixels[:, -b:].reshape(-1, 3),  # bottom rows
            pixels[:, b:-b, :b].reshape(-1, 3),  # left columns
            pixels[:, b:-b, -b:].reshape(-1, 3),  # right columns
        ]
    )  # (N, 3)
    median = np.median(ring, axis=0)  # (3,)
    uniformity = float(np.mean(np.linalg.norm(ring - median, axis=-1) <= cfg.background_tolerance))
    name, margin, distance = _nearest(median, BACKGROUNDS)
    diag.update(background_uniformity=uniformity, background_distance=distance)
    diag.update({f"background_{c}": float(v) for c, v in zip("rgb", median)})
    if uniformity < cfg.min_uniformity:
        return median, NONE, 0.0
    return median, name, uniformity * margin


def _segment(pixels: np.ndarray, background: np.ndarray, cfg: AnalysisConfig, diag: dict) -> _Object | None:
    offset = pixels - background.astype(np.float32)  # (T, H, W, 3)
    far = np.einsum("thwc,thwc->thw", offset, offset) > cfg.far**2  # (T, H, W)
    diag["far_share"] = float(far.mean())
    if not far.any():
        return None
    axis = np.median(pixels[far], axis=0) - background  # (3,) background -> first guess of the object colour
    alpha = offset @ (axis / float(axis @ axis)).astype(np.float32)  # (T, H, W): 0 background, 1 object
    canvas = pixels.shape[1] * pixels.shape[2]
    num_frames = len(pixels)
    obj = _Object(
        found=np.zeros(num_frames, bool),
        centroids=np.full((num_frames, 2), np.nan),
        fill=np.full(num_frames, np.nan),
        skew=np.full(num_frames, np.nan),
        core=np.zeros((0, 3), np.float32),
    )
    core = []
    for t in range(num_frames):
        frame = _measure_frame(alpha[t], canvas, cfg)
        if frame is None:
            continue
        obj.found[t], obj.centroids[t], obj.fill[t], obj.skew[t] = True, frame.centroid, frame.fill, frame.skew
        core.append(pixels[t, frame.core_rows, frame.core_cols])  # (n, 3)
    if core:
        obj.core = np.concatenate(core)
    return obj


class _Frame(NamedTuple):
    """What one frame's mask shows."""

    centroid: np.ndarray  # (2,) float (x, y) in pixels
    fill: float  # fill ratio of the bounding box
    skew: float  # skewness of the mask's rows (y down)
    core_rows: np.ndarray  # (n,) rows of the core pixels
    core_cols: np.ndarray  # (n,) columns of the core pixels


def _measure_frame(alpha: np.ndarray, canvas: int, cfg: AnalysisConfig) -> _Frame | None:
    """Centroid, fill ratio, row skewness and core pixel coordinates of one frame's object, or None."""
    ys, xs = np.nonzero(alpha >= 0.5)
    if len(ys) < cfg.min_area * canvas:
        return None
    # 1. drop speckles: pixels farther from the median position than any part of a compact shape can be
    middle = len(ys) // 2
    cy, cx = ys[middle], np.partition(xs, middle)[middle]  # medians (np.nonzero returns ys sorted)
    keep = np.hypot(ys - cy, xs - cx) <= cfg.gate_radius * math.sqrt(len(ys)) + 2
    ys, xs = ys[keep], xs[keep]
    if not cfg.min_area * canvas <= len(ys) <= cfg.max_area * canvas:
        return None
    # 2. fill ratio of the bounding box, and how the mass is spread over the rows
    fill = len(ys) / float((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1))
    core = alpha[ys, xs] >= cfg.core_alpha
    profile = np.bincount(ys - ys.min())  # (h,) mask pixels per row
    return _Frame(np.array([xs.mean(), ys.mean()]), fill, _skewness(profile), ys[core], xs[core])


def _skewness(weights: np.ndarray) -> float:
    """Skewness of the position along a mass profile `weights` (third standardised moment)."""
    weights = weights.astype(np.float64)
    total = weights.sum()
    if total <= 0:
        return 0.0
    position = np.arange(len(weights))
    centred = position - (weights @ position) / total
    variance = (weights @ centred**2) / total
    return float((weights @ centred**3) / total / variance**1.5) if variance > 0 else 0.0


def _color(obj: _Object, cfg: AnalysisConfig, diag: dict) -> tuple[str, float]:
    """Nearest palette colour to the core pixels' median; confidence = margin x share agreeing with it."""
    if len(obj.core) == 0:
        return NONE, 0.0
    median = np.median(obj.core, axis=0)  # (3,)
    agreement = float(np.mean(np.linalg.norm(obj.core - median, axis=-1) <= cfg.color_tolerance))
    name, margin, distance = _nearest(median, COLORS)
    diag.update(color_agreement=agreement, color_distance=distance)
    diag.update({f"color_{c}": float(v) for c, v in zip("rgb", median)})
    return name, margin * agreement


def _shape(obj: _Object, cfg: AnalysisConfig, diag: dict) -> tuple[str, float]:
    """Nearest prototype to the median (fill, skewness); confidence = margin over the runner-up."""
    fill, skew = np.nanmedian(obj.fill[obj.found]), np.nanmedian(obj.skew[obj.found])
    diag.update(shape_fill=float(fill), shape_skew=float(skew))
    if not np.isfinite(fill):
        return NONE, 0.0
    scale_fill, scale_skew = cfg.shape_scale
    distances = {
        name: math.hypot((fill - f) / scale_fill, (skew - s) / scale_skew)
        for name, (f, s) in SHAPE_PROTOTYPES.items()
    }
    ranked = sorted(distances, key=distances.get)
    best, second = distances[ranked[0]], distances[ranked[1]]
    diag["shape_distance"] = best
    if best > cfg.max_shape_distance:
        return NONE, 0.0
    return ranked[0], (second - best) / (second + best + 1e-6)


def _direction(obj: _Object, size: tuple[int, int], cfg: AnalysisConfig, diag: dict) -> tuple[str, float, float]:
    """Dominant axis and sign of the centroid's displacement; confidence = straightness x magnitude."""
    t = np.flatnonzero(obj.found).astype(np.float64)
    if len(t) < 2:
        return NONE, 0.0, 0.0
    span = max(len(obj.found) - 1, 1)
    # least-squares slope of each centroid coordinate, times the clip length: displacement in canvas units
    centred = t - t.mean()
    slope = centred @ obj.centroids[obj.found] / (centred @ centred)  # (2,) pixels per frame, (x, y)
    dx, dy = slope * span / np.array([size[1], size[0]])
    motion = float(math.hypot(dx, dy))
    diag.update(motion_x=float(dx), motion_y=float(dy), largest_jump=_largest_jump(obj, size))
    if motion < cfg.min_motion:
        return NONE, 0.0, motion
    major, minor = (abs(dx), abs(dy)) if abs(dx) >= abs(dy) else (abs(dy), abs(dx))
    if abs(dx) >= abs(dy):
        name = "right" if dx > 0 else "left"
    else:
        name = "down" if dy > 0 else "up"
    straightness = (major - minor) / (major + minor)
    return name, float(straightness * min(1.0, motion / (2 * cfg.min_motion))), float(motion)


def _largest_jump(obj: _Object, size: tuple[int, int]) -> float:
    """The fastest centroid step between successive frames that show the object, in canvas sides per frame.

    Frames where the object is not found are skipped, and a step over them is divided by the frames it spans,
    so an object that vanishes and reappears elsewhere still counts. Shapes-world motion is steady (about
    1/32 of the side per frame at 17 frames), so a step many times that is an object that teleported: a video
    model that places it in each latent frame on its own. Needs two frames that show the object (`_direction`
    checks).
    """
    t = np.flatnonzero(obj.found)
    steps = np.diff(obj.centroids[t], axis=0) / np.array([size[1], size[0]])  # (N, 2) canvas units
    return float((np.hypot(steps[:, 0], steps[:, 1]) / np.diff(t)).max())


# ----------------------------------------------------------------------------------------------- scoring


def start_fits(analysis: ShapeAnalysis, direction: str) -> bool:
    """Whether the object, where `analysis` first saw it, leaves room ahead for a clip moving ``direction``.

    This is the direction word read as a place: a clip "moving left" starts on the right. Rendered clips
    always fit; a model that places the object where clips of any direction start fits about half the time
    (always for its own direction, never for the opposite one, about 44% across). False when no object was
    seen.
    """
    if "start_x" not in analysis.diagnostics:
        return False
    dx, dy = DIRECTIONS[direction]
    axis, step = ("start_x", dx) if dx else ("start_y", dy)
    # the world's start range for the smallest object and the shortest travel is the widest along the motion;
    # only its bound on the side the object moves to counts (the other is the canvas edge)
    low, high = start_range(SIZE_RANGE[0], TRAVEL_RANGE[0], step)
    start = analysis.diagnostics[axis]
    return start <= high if step > 0 else start >= low


def score(
    analysis: ShapeAnalysis, expected: ShapeClip | ShapeAttributes | str, *, min_confidence: float = 0.0
) -> dict[str, bool]:
    """Per-attribute correctness of an analysis against a caption or spec, and ``all_correct``.

    An attribute is correct when its label matches and its confidence is at least `min_confidence`.
    """
    target = _expected(expected)
    result = {
        name: bool(getattr(analysis, name) == getattr(target, name) and analysis.confidence[name] >= min_confidence)
        for name in ATTRIBUTES
    }
    result["all_correct"] = all(result.values())
    return result


def summarize(scores: list[dict[str, bool]]) -> dict[str, float]:
    """Accuracy of each attribute and of ``all_correct`` over many `score` results (fractions in [0, 1])."""
    if not scores:
        raise InputError("cannot summarize an empty list of shapes scores")
    return {key: float(np.mean([s[key] for s in scores])) for key in (*ATTRIBUTES, "all_correct")}
