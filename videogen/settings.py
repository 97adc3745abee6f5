"""One generation's settings: their defaults, their validation against the model's geometry, their CLI flags.

Every sampling setting is one field of `Settings`, declared once with its default, its help text, its CLI
flag and its check. Everything else is made from that table:

- a model folder's ``videogen.json`` holds some of these fields; what it leaves out is Wan2.1-T2V's default
  (`videogen.modelfolder.read_defaults`);
- a call's keyword arguments override them (`Settings.override`): ``pipe.generate(prompt, num_steps=4)``;
- `Settings.resolve` validates the result once, against the model's own `Geometry` (frames ``1 + 4k`` for a
  4x temporal VAE, heights and widths multiples of the VAE's stride times the DiT's patch), which the CLI
  reads from the folder's configs before it loads any weights;
- the CLI's flags are made by a loop over the fields (`videogen.cli.options`), so adding a setting touches
  this table and nothing else.
"""

from __future__ import annotations

import dataclasses
import math
import secrets
from numbers import Integral
from dataclasses import dataclass, field, fields

from videogen.errors import InputError, ModelError

SAMPLER_NAMES = ("unipc", "euler", "dpm++")  # `videogen.diffusion.sampling.SAMPLERS`, kept in step by a test


# ------------------------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class Geometry:
    """What a model's sizes must fit, read from its VAE and DiT configs."""

    temporal: int  # pixel frames per latent frame after the first (4 for Wan2.1)
    spatial: int  # pixels per latent pixel along H and W (8 for Wan2.1)
    patch: tuple[int, int, int]  # the DiT's (t, h, w) patch (1, 2, 2 for Wan2.1)
    latent_channels: int  # what the DiT takes and the VAE gives (16 for Wan2.1)

    @property
    def pixel_multiple(self) -> int:
        """Pixels per DiT token along H and W: the VAE's stride times the patch (16 for Wan2.1, 8 for the demo)."""
        return self.spatial * math.lcm(self.patch[1], self.patch[2])

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int, int]:
        """``(1, C, T', H', W')`` with T' = 1 + (T - 1) / temporal and H' = H / spatial."""
        t, s = self.temporal, self.spatial
        return 1, self.latent_channels, 1 + (num_frames - 1) // t, height // s, width // s

    def latent_frames(self, num_frames: int) -> int:
        return 1 + (num_frames - 1) // self.temporal


# ------------------------------------------------------------------------------------------- checks


def positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value <= 0:
        raise InputError(f"{name} must be a positive whole number, got {value!r}")
    return int(value)


def finite(name: str, value, *, positive: bool = False) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number) or (positive and number <= 0):
        raise InputError(f"{name} must be a finite{' positive' if positive else ''} number, got {value!r}")
    return number


def check_num_frames(num_frames, temporal: int = 4, *, name: str = "number of frames") -> int:
    """Frame counts are ``temporal * k + 1``: the causal VAE encodes the first frame on its own."""
    n = positive_int(name, num_frames)
    if (n - 1) % temporal:
        lower = (n - 1) // temporal * temporal + 1
        raise InputError(f"{name} {n} is not {temporal}k+1: use {lower} or {lower + temporal}")
    return n


def check_size(name: str, value, multiple: int = 16) -> int:
    """Heights and widths are multiples of the model's pixel tile (`Geometry.pixel_multiple`)."""
    n = positive_int(name, value)
    if n % multiple:
        lower = n // multiple * multiple
        hint = f"{lower} or {lower + multiple}" if lower else str(multiple)
        raise InputError(f"{name} {n} is not a multiple of {multiple}: use {hint}")
    return n


def check_interval(value) -> tuple[float, float]:
    """A guidance interval ``(low, high)`` of noise levels, ``0 <= low <= high <= 1``."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise InputError(f"guidance interval must be two noise levels LOW HIGH in [0, 1], got {value!r}") from None
    if not 0.0 <= low <= high <= 1.0:
        raise InputError(f"guidance interval must have 0 <= LOW <= HIGH <= 1, got {low:g} {high:g}")
    return low, high


def check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, Integral) or not 0 <= seed < 2**63:
        raise InputError(f"seed must be a whole number from 0 to 2^63 - 1, got {seed!r}")
    return int(seed)


def check_flag(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise InputError(f"{name} must be true or false, got {value!r}")
    return value


def check_sampler(value) -> str:
    if value not in SAMPLER_NAMES:
        raise InputError(f"unknown sampler {value!r}: choose one of {', '.join(SAMPLER_NAMES)}")
    return value


def check_text(name: str, value) -> str:
    if not isinstance(value, str):
        raise InputError(f"{name} must be a string, got {type(value).__name__}")
    return value


# How each field is checked, given the model's geometry: field -> check(value, geometry) -> clean value.
CHECKS = {
    "frames": lambda name, v, g: check_num_frames(v, g.temporal, name=name),
    "size": lambda name, v, g: check_size(name, v, g.pixel_multiple),
    "count": lambda name, v, g: positive_int(name, v),
    "number": lambda name, v, g: finite(name, v),
    "positive": lambda name, v, g: finite(name, v, positive=True),
    "interval": lambda name, v, g: check_interval(v),
    "sampler": lambda name, v, g: check_sampler(v),
    "seed": lambda name, v, g: check_seed(v),
    "flag": lambda name, v, g: check_flag(name, v),
    "text": lambda name, v, g: check_text(name, v),
}


def setting(default, check: str, help: str, *, flag: str | None = None, what: str | None = None, **cli):
    """A `Settings` field: its default, how it is checked (a key of CHECKS), its help, and its CLI flag.

    what: the name error messages use (default: the field's name with spaces); cli: extra argparse keywords
    (``nargs``, ``metavar``, ``choices``; ``type`` where the default is None; ``action="bool"`` for an on/off
    flag). A field without a flag is set by the folder or the API only.
    """
    meta = {"check": check, "help": help, "flag": flag, "what": what, "cli": cli}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


# ------------------------------------------------------------------------------------------- settings


@dataclass
class Settings:
    """The settings of one generation; the defaults are Wan2.1-T2V's, a model folder ships its own."""

    num_frames: int = setting(81, "frames", "number of frames, 4k+1 (Wan2.1: 81, 5 s at 16 fps)", flag="--frames",
                              what="number of frames")
    height: int = setting(480, "size", "height in pixels, a multiple of the model's tile (Wan2.1: 480, tile 16)",
                          flag="--height")
    width: int = setting(832, "size", "width in pixels, a multiple of the model's tile (Wan2.1: 832, tile 16)",
                         flag="--width")
    num_steps: int = setting(50, "count", "sampling steps (Wan2.1: 50)", flag="--steps", what="number of steps")
    guidance_scale: float = setting(5.0, "number", "classifier-free guidance scale; <= 1 turns it off (Wan2.1: 5)",
                                    flag="--guidance")
    guidance_scale_2: float | None = setting(None, "number", "guidance scale of a two-expert model's low-noise "
                                             "expert (Wan2.2 A14B; default: --guidance)", flag="--guidance-2",
                                             type=float)
    guidance_interval: tuple[float, float] | None = setting(
        None, "interval", "apply guidance only at noise levels from LOW to HIGH (0 clean, 1 pure noise), the "
        "conditional branch alone elsewhere (default: all)", flag="--guidance-interval", nargs=2,
        metavar=("LOW", "HIGH"), type=float)
    shift: float | None = setting(None, "positive", "timestep shift (default: the scheduler's; Wan2.1: 3 at 480p, "
                                  "5 at 720p)", flag="--shift", type=float)
    sampler: str | None = setting(None, "sampler", "default: the model folder's scheduler", flag="--sampler",
                                  choices=list(SAMPLER_NAMES), type=str)
    fps: float = setting(16.0, "positive", "frame rate of the file (Wan2.1: 16)", flag="--fps")
    seed: int | None = setting(None, "seed", "random seed; the same seed gives the same video (default: random)",
                               flag="--seed", type=int)
    negative_prompt: str = setting("", "text", "what guidance steers away from", flag="--negative-prompt")
    frame_conditioning: bool = setting(False, "flag", "the model was trained with known frames at timestep 0, so "
                                       "tasks hold them that way (else: the training-free 'replace')")
    image_first: bool = setting(False, "flag", "sample the first frame alone, then the clip from it (models "
                                "trained for it)", flag="--image-first", what="image_first", action="bool")
    image_guidance_scale: float | None = setting(None, "number", "guidance scale of --image-first's first frame "
                                                 "(default: --guidance)", flag="--image-guidance", type=float)
    image_guidance_interval: tuple[float, float] | None = setting(
        None, "interval", "--guidance-interval of --image-first's first frame (default: --guidance-interval)",
        flag="--image-guidance-interval", nargs=2, metavar=("LOW", "HIGH"), type=float)
    image_first_frames: int = setting(1, "frames", "frames --image-first's first pass samples together before it "
                                      "keeps the first, so the image is drawn with its motion in view; 4k+1",
                                      flag="--image-first-frames", what="image-first frames")

    # ----------------------------------------------------------------------------------------- making

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, values: dict, source: str) -> "Settings":
        """The defaults with ``values`` (a defaults file's) on top; an unknown name is a `ModelError`."""
        unknown = sorted(set(values) - set(cls.names()))
        if unknown:
            raise ModelError(f"{source}: unknown setting(s) {', '.join(unknown)} (known: {', '.join(cls.names())})")
        return cls(**values)

    def override(self, **given) -> "Settings":
        """A copy with the given settings replaced; ``None`` keeps this one's value."""
        unknown = sorted(set(given) - set(self.names()))
        if unknown:
            raise InputError(f"unknown setting(s) {', '.join(unknown)} (known: {', '.join(self.names())})")
        return dataclasses.replace(self, **{k: v for k, v in given.items() if v is not None})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    # ------------------------------------------------------------------------------------- validating

    def resolve(self, geometry: Geometry) -> "Settings":
        """These settings validated against the model's geometry, with a random seed drawn where none is set.

        The result is what sampling reads: guidance_interval is ``(low, high)`` (``(0, 1)`` when unset).
        """
        clean = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                what = f.metadata["what"] or f.name.replace("_", " ")
                value = CHECKS[f.metadata["check"]](what, value, geometry)
            clean[f.name] = value
        if clean["seed"] is None:
            clean["seed"] = secrets.randbits(63)
        if clean["guidance_interval"] is None:
            clean["guidance_interval"] = (0.0, 1.0)
        return Settings(**clean)

    # ------------------------------------------------------------------------------------ what it means

    @property
    def guides(self) -> bool:
        """Whether any pass runs classifier-free guidance (and so needs the negative prompt's states)."""
        scales = [self.guidance_scale, _either(self.guidance_scale_2, self.guidance_scale)]
        if self.image_first and self.image_guidance_scale is not None:
            scales.append(self.image_guidance_scale)
        return max(scales) > 1

    def first_pass(self) -> "Settings":
        """Image-first sampling's first pass: its own guidance scale and interval where set."""
        return dataclasses.replace(
            self,
            guidance_scale=_either(self.image_guidance_scale, self.guidance_scale),
            guidance_interval=_either(self.image_guidance_interval, self.guidance_interval),
        )


def _either(value, default):
    return default if value is None else value
