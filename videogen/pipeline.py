"""Text-to-video: a model folder in, a clip out.

``VideoPipeline`` ties the pieces of the data path together (DESIGN.md):

    prompt --TextEncoder--> text states --(DiT, flow sampler, guidance)--> latents
           --streaming VAE decoder--> frame chunks --> VideoWriter (.mp4) or an in-memory Video

Model folders are in diffusers' pipeline layout -- ``model_index.json`` and ``transformer/``, ``vae/``,
``text_encoder/``, ``tokenizer/``, ``scheduler/`` -- so a Wan2.1-T2V diffusers checkpoint loads as is,
and `VideoPipeline.save_pretrained` writes folders that diffusers' ``WanPipeline`` loads. A folder may add
its own generation defaults (frames, size, steps, guidance, fps...) in ``videogen.json`` or in a
``videogen`` section of ``model_index.json``; without them the defaults are Wan2.1's.

The numbers follow diffusers' ``WanPipeline`` (same text states, scheduler, noise, guidance and latent
scaling), which the tests check frame for frame on random weights. Two things differ on purpose:
guidance runs the conditional and unconditional branches as one batch, and decoding streams one latent
frame at a time into the writer, so a long clip never sits in memory whole.
"""

from __future__ import annotations

import itertools
import json
import math
import secrets
import shutil
import tempfile
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from einops import rearrange
from tqdm.auto import tqdm

from videogen.diffusion.flow import token_timesteps
from videogen.diffusion.sampling import SAMPLERS, StepCallback, check_interval, guided, make_scheduler, sample
from videogen.atomic import check_target
from videogen.errors import InputError, ModelError
from videogen.memory import (
    MemoryEstimate,
    check_fits,
    dit_working_bytes,
    module_bytes,
    text_working_bytes,
    vae_decode_working_bytes,
)
from videogen.models.text import TextEncoder

COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")
DEFAULTS_FILE = "videogen.json"
# the class names diffusers' WanPipeline expects in model_index.json and in each config.json
DIFFUSERS_NAMES = {"transformer": "WanTransformer3DModel", "vae": "AutoencoderKLWan"}


@dataclass
class GenerationDefaults:
    """The generation settings a model folder ships; Wan2.1-T2V's where it ships none."""

    num_frames: int = 81  # 4k + 1 frames (Wan2.1: 81, 5 s at 16 fps)
    height: int = 480  # pixels, a multiple of 16
    width: int = 832  # pixels, a multiple of 16
    num_steps: int = 50  # sampler steps
    guidance_scale: float = 5.0  # classifier-free guidance; <= 1 turns it off
    fps: float = 16.0  # frame rate written to the video file
    shift: float | None = None  # timestep shift; None: the scheduler config's (Wan2.1: 3.0 at 480p)
    sampler: str | None = None  # unipc, euler or dpm++; None: the scheduler the folder ships
    negative_prompt: str = ""  # what guidance steers away from
    frame_conditioning: bool = False  # trained with known frames at timestep 0 ("timestep"); else "replace"
    image_first: bool = False  # text-to-video as text-to-image, then image-to-video (needs frame conditioning)
    image_guidance_scale: float | None = None  # guidance of image-first's first pass; None: guidance_scale
    guidance_interval: list[float] | None = None  # [low, high]: noise levels where guidance applies; None: all
    image_guidance_interval: list[float] | None = None  # the same for image-first's first pass; None: as above
    image_first_frames: int = 1  # frames image-first's first pass samples together, keeping the first (4k+1)

    @classmethod
    def from_dict(cls, values: dict, source: Path) -> "GenerationDefaults":
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ModelError(f"{source}: unknown setting(s) {', '.join(unknown)} (known: {', '.join(names)})")
        return cls(**values)


# -------------------------------------------------------------------------------------- validation


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise InputError(f"{name} must be a positive whole number, got {value!r}")
    return int(value)


def _finite(name: str, value, *, positive: bool = False) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number) or (positive and number <= 0):
        raise InputError(f"{name} must be a finite{' positive' if positive else ''} number, got {value!r}")
    return number


def check_num_frames(num_frames, temporal: int = 4, *, name: str = "number of frames") -> int:
    """Frame counts are ``temporal * k + 1``: the causal VAE encodes the first frame on its own."""
    n = _positive_int(name, num_frames)
    if (n - 1) % temporal:
        lower = (n - 1) // temporal * temporal + 1
        raise InputError(f"{name} {n} is not {temporal}k+1: use {lower} or {lower + temporal}")
    return n


def check_size(name: str, value, multiple: int = 16) -> int:
    """Heights and widths are multiples of the model's pixel tile: 16 for 8x VAE downsampling, then 2x2
    DiT patches (Wan2.1); the pipeline passes its own (`VideoPipeline.size_multiple`)."""
    n = _positive_int(name, value)
    if n % multiple:
        lower = n // multiple * multiple
        hint = f"{lower} or {lower + multiple}" if lower else str(multiple)
        raise InputError(f"{name} {n} is not a multiple of {multiple}: use {hint}")
    return n


@dataclass
class Request:
    """One generation's settings, validated, defaults filled in."""

    prompt: str
    negative_prompt: str
    num_frames: int
    height: int
    width: int
    num_steps: int
    guidance_scale: float
    shift: float | None
    sampler: str | None
    fps: float
    seed: int
    image_first: bool = False
    image_guidance_scale: float | None = None  # the first pass of image-first sampling; None: guidance_scale
    guidance_interval: tuple[float, float] = (0.0, 1.0)  # noise levels at which guidance applies (`guided`)
    image_guidance_interval: tuple[float, float] | None = None  # the first pass's; None: guidance_interval
    image_first_frames: int = 1  # frames the first pass samples together (4k+1); it keeps the first

    @property
    def guides(self) -> bool:
        """Whether any pass runs classifier-free guidance (and so needs the negative prompt's states)."""
        scales = [self.guidance_scale]
        if self.image_first and self.image_guidance_scale is not None:
            scales.append(self.image_guidance_scale)
        return max(scales) > 1


def _either(value, default):
    return default if value is None else value


def check_output(output: str | Path | None, overwrite: bool) -> Path | None:
    """Refuse a write that would fail or destroy something, before any work is done."""
    if output is None:
        return None
    path = Path(output)
    check_target(path, overwrite)
    return path


# ---------------------------------------------------------------------------------- folder loading


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{path} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise ModelError(f"{path} must hold a JSON object")
    return value


def _check_folder(folder: Path) -> dict:
    """The folder's model_index.json, once every component folder is known to be there."""
    if not folder.is_dir():
        raise ModelError(f"model folder {folder} does not exist")
    if not (folder / "model_index.json").is_file():
        raise ModelError(f"{folder} is not a diffusers model folder: model_index.json is missing")
    index = _read_json(folder / "model_index.json")
    missing = [f"{name}/" for name in COMPONENTS if not (folder / name).is_dir()]
    if missing:
        raise ModelError(f"model folder {folder} is incomplete: {', '.join(missing)} missing")
    return index


def _load_model(cls, folder: Path, dtype: torch.dtype | None):
    try:
        return cls.from_pretrained(folder, torch_dtype=dtype).eval().requires_grad_(False)
    except Exception as e:  # diffusers raises OSError, ValueError, EnvironmentError or safetensors errors
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"{folder}: cannot load {cls.__name__} ({reason})") from None


def read_defaults(folder: Path, index: dict) -> GenerationDefaults:
    """Generation defaults: ``videogen.json`` over the ``videogen`` section of model_index.json over Wan's."""
    values = dict(index.get("videogen") or {})
    if (folder / DEFAULTS_FILE).is_file():
        values.update(_read_json(folder / DEFAULTS_FILE))
    return GenerationDefaults.from_dict(values, folder / DEFAULTS_FILE)


# ------------------------------------------------------------------------------------------ frames


def to_uint8(chunk: torch.Tensor) -> np.ndarray:
    """Decoder output ``(3, t, H, W)`` in [-1, 1] -> frames ``(t, H, W, 3)`` uint8."""
    pixels = ((chunk.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return rearrange(pixels, "c t h w -> t h w c").cpu().numpy()  # (t, H, W, 3)


class _FrameCollector:
    """The in-memory counterpart of ``VideoWriter``: keeps the chunks, returns a ``Video``."""

    def __init__(self, fps: float):
        self.fps, self.chunks = fps, []

    def write(self, frames: np.ndarray) -> None:
        self.chunks.append(frames)

    def result(self):
        from videogen.io import Video

        return Video(frames=np.concatenate(self.chunks), fps=self.fps)


class _FileSink:
    """Chunks streamed into a ``VideoWriter``; the result is the written file's path."""

    def __init__(self, writer, path: Path):
        self.writer, self.path = writer, path

    def write(self, frames: np.ndarray) -> None:
        self.writer.write(frames)

    def result(self) -> Path:
        return self.path


@contextmanager
def _sink(output: Path | None, fps: float, overwrite: bool):
    """Where decoded chunks go: a streaming ``VideoWriter`` (atomic: nothing is left if generation fails)
    or a collector for an in-memory ``Video``."""
    if output is None:
        yield _FrameCollector(fps)
        return
    from videogen.io import VideoWriter

    with VideoWriter(output, fps, overwrite=overwrite) as writer:
        yield _FileSink(writer, output)


# ---------------------------------------------------------------------------------------- pipeline


class VideoPipeline:
    """Text-to-video with a DiT, a causal VAE and a T5 text encoder (Wan2.1 layout).

    Args:
        text_encoder: prompts -> zero-padded text states (`videogen.models.text.TextEncoder`).
        vae: the causal video VAE (`videogen.models.vae.CausalVideoVAE`).
        transformer: the velocity network (`videogen.models.dit.VideoDiT`).
        scheduler_config: the folder's ``scheduler_config.json``; a fresh scheduler is made per call.
        defaults: generation settings used where a call gives none.
        device: where the models run. offload: keep each model on the CPU except while it works.
    """

    def __init__(
        self,
        text_encoder: TextEncoder,
        vae,
        transformer,
        scheduler_config: dict,
        *,
        defaults: GenerationDefaults | None = None,
        device: torch.device | str | None = None,
        offload: bool = False,
    ):
        self.text_encoder, self.vae, self.transformer = text_encoder, vae, transformer
        self.scheduler_config = dict(scheduler_config)
        self.defaults = defaults or GenerationDefaults()
        self.device = _full_device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.offload = offload
        self._check_compatible()
        home = torch.device("cpu") if offload else self.device
        self.text_encoder.to(home)
        _place(self.vae, home)
        _place(self.transformer, home)

    def _check_compatible(self) -> None:
        dit = self.transformer.config
        if dit.text_dim != self.text_encoder.dim:
            raise ModelError(f"the transformer takes text states of width {dit.text_dim}, "
                             f"the text encoder gives {self.text_encoder.dim}")
        if dit.in_channels != self.vae.latent_channels:
            raise ModelError(f"the transformer takes {dit.in_channels} latent channels, "
                             f"the VAE gives {self.vae.latent_channels}")

    # ----------------------------------------------------------------------------------- loading

    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        offload: bool = False,
    ) -> "VideoPipeline":
        """Load a diffusers-layout folder (a Wan2.1-T2V diffusers checkpoint, or one we saved).

        dtype applies to the transformer and the text encoder; the VAE stays in fp32, as Wan recommends
        (its decoder is sensitive to bf16). A missing or broken folder raises `ModelError`.
        """
        folder = Path(folder)
        index = _check_folder(folder)
        from videogen.models.dit import VideoDiT
        from videogen.models.vae import CausalVideoVAE

        defaults = read_defaults(folder, index)
        scheduler_config = _read_json(folder / "scheduler" / "scheduler_config.json")
        text_encoder = TextEncoder.from_pretrained(folder / "tokenizer", folder / "text_encoder", dtype=dtype)
        transformer = _load_model(VideoDiT, folder / "transformer", dtype)
        vae = _load_model(CausalVideoVAE, folder / "vae", torch.float32)
        return cls(text_encoder, vae, transformer, scheduler_config, defaults=defaults, device=device, offload=offload)

    def save_pretrained(self, folder: str | Path, *, overwrite: bool = False) -> Path:
        """Write a diffusers-layout folder that both `from_pretrained` and diffusers' ``WanPipeline`` load.

        The folder appears whole or not at all (written beside it, then renamed).
        """
        folder = Path(folder)
        if folder.exists() and not overwrite:
            raise InputError(f"{folder} already exists (pass overwrite=True to replace it)")
        if not folder.parent.is_dir():
            raise InputError(f"folder {folder.parent} does not exist")
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            self._write_components(staging)
            if folder.exists():
                shutil.rmtree(folder)
            staging.rename(folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return folder

    def _write_components(self, folder: Path) -> None:
        import diffusers

        self.transformer.save_pretrained(folder / "transformer", safe_serialization=True)
        self.vae.save_pretrained(folder / "vae", safe_serialization=True)
        for name, class_name in DIFFUSERS_NAMES.items():  # our classes hold diffusers' configs and weights
            config_path = folder / name / "config.json"
            config_path.write_text(json.dumps({**_read_json(config_path), "_class_name": class_name}, indent=2))
        self.text_encoder.encoder.save_pretrained(folder / "text_encoder")
        self.text_encoder.save_tokenizer(folder / "tokenizer")  # with its text length
        scheduler = make_scheduler(self.scheduler_config)
        scheduler.save_pretrained(folder / "scheduler")
        index = {
            "_class_name": "WanPipeline",
            "_diffusers_version": diffusers.__version__,
            "scheduler": ["diffusers", type(scheduler).__name__],
            "text_encoder": ["transformers", type(self.text_encoder.encoder).__name__],
            "tokenizer": ["transformers", type(self.text_encoder.tokenizer).__name__],
            "transformer": ["diffusers", DIFFUSERS_NAMES["transformer"]],
            "vae": ["diffusers", DIFFUSERS_NAMES["vae"]],
        }
        (folder / "model_index.json").write_text(json.dumps(index, indent=2))
        (folder / DEFAULTS_FILE).write_text(json.dumps(asdict(self.defaults), indent=2))

    # ---------------------------------------------------------------------------------- requests

    def make_request(self, prompt: str, *, negative_prompt: str | None = None, seed: int | None = None,
                     **given) -> Request:
        """Validate one generation's settings (`generate`'s keywords), filling in the folder's defaults."""
        d = {f.name: getattr(self.defaults, f.name) for f in fields(GenerationDefaults)}
        d.update({k: v for k, v in given.items() if v is not None})
        if not isinstance(prompt, str):
            raise InputError(f"the prompt must be a string, got {type(prompt).__name__}")
        sampler = d["sampler"]
        if sampler is not None and sampler not in SAMPLERS:
            raise InputError(f"unknown sampler {sampler!r}: choose one of {', '.join(SAMPLERS)}")
        if not isinstance(d["image_first"], bool):
            raise InputError(f"image_first must be true or false, got {d['image_first']!r}")
        return Request(
            prompt=prompt,
            negative_prompt=d["negative_prompt"] if negative_prompt is None else negative_prompt,
            num_frames=check_num_frames(d["num_frames"], self.vae.temporal_compression),
            height=check_size("height", d["height"], self.size_multiple),
            width=check_size("width", d["width"], self.size_multiple),
            num_steps=_positive_int("number of steps", d["num_steps"]),
            guidance_scale=_finite("guidance scale", d["guidance_scale"]),
            shift=None if d["shift"] is None else _finite("shift", d["shift"], positive=True),
            sampler=sampler,
            fps=_finite("fps", d["fps"], positive=True),
            seed=secrets.randbits(63) if seed is None else _seed(seed),
            image_first=d["image_first"],
            image_guidance_scale=None if d["image_guidance_scale"] is None
            else _finite("image guidance scale", d["image_guidance_scale"]),
            guidance_interval=(0.0, 1.0) if d["guidance_interval"] is None else check_interval(d["guidance_interval"]),
            image_guidance_interval=None if d["image_guidance_interval"] is None
            else check_interval(d["image_guidance_interval"]),
            image_first_frames=check_num_frames(d["image_first_frames"], self.vae.temporal_compression,
                                                name="image-first frames"),
        )

    @property
    def size_multiple(self) -> int:
        """Pixels per DiT token along H and W: the VAE's spatial compression times the patch (16 for Wan2.1)."""
        _, ph, pw = self.transformer.config.patch_size
        return self.vae.spatial_compression * math.lcm(ph, pw)

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int, int]:
        """``(1, C, T', H', W')`` with T' = 1 + (T - 1) / 4 and H' = H / 8."""
        t, s = self.vae.temporal_compression, self.vae.spatial_compression
        return (1, self.transformer.config.in_channels, 1 + (num_frames - 1) // t, height // s, width // s)

    def estimate_memory(self, request: Request, *, keep_frames: bool) -> MemoryEstimate:
        """Peak memory of a request by phase (see `videogen.memory`), weights included."""
        text_w, dit_w, vae_w = (module_bytes(m) for m in (self.text_encoder.encoder, self.transformer, self.vae))
        everything = text_w + dit_w + vae_w
        shape = self.latent_shape(request.num_frames, request.height, request.width)
        batch = 2 if request.guides else 1
        latents = 6 * math.prod(shape) * 4  # x, velocity, noise and the solver's history, fp32
        text = text_working_bytes(self.text_encoder.encoder.config, batch, self.text_encoder.max_sequence_length)
        dit = dit_working_bytes(self.transformer.config, (batch, *shape[1:]), self.transformer.dtype.itemsize)
        vae = vae_decode_working_bytes(self.vae.config, request.height, request.width)
        frames = request.num_frames * request.height * request.width * 3 if keep_frames else 0
        return MemoryEstimate(
            encode=(text_w if self.offload else everything) + text,
            denoise=(dit_w if self.offload else everything) + dit + latents,
            decode=(vae_w if self.offload else everything) + vae + latents + frames,
        )

    def _resident_bytes(self) -> int:
        """Bytes of weights already on the device, which its free memory no longer counts."""
        modules = (self.text_encoder.encoder, self.transformer, self.vae)
        return sum(module_bytes(m) for m in modules if next(m.parameters()).device == self.device)

    # ---------------------------------------------------------------------------------- generate

    @torch.no_grad()
    def generate(
        self,
        prompt: str,
        *,
        negative_prompt: str | None = None,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        num_steps: int | None = None,
        guidance_scale: float | None = None,
        shift: float | None = None,
        sampler: str | None = None,
        seed: int | None = None,
        fps: float | None = None,
        image_first: bool | None = None,
        image_guidance_scale: float | None = None,
        guidance_interval: tuple[float, float] | None = None,
        image_guidance_interval: tuple[float, float] | None = None,
        image_first_frames: int | None = None,
        latents: torch.Tensor | None = None,
        callback: StepCallback | None = None,
        output: str | Path | None = None,
        overwrite: bool = False,
        attention: str | None = None,
        progress: bool = True,
    ):
        """Generate a clip from a prompt.

        Settings left ``None`` come from the model folder (`GenerationDefaults`). seed: the initial noise
        is drawn from ``torch.Generator().manual_seed(seed)`` on the CPU (the same seed gives the same
        clip on any device); latents: initial noise ``(1, C, T', H', W')`` instead of a seed. image_first:
        sample the first latent frame alone, then the clip from it (`denoise_image_first`); default: what
        the folder declares; image_guidance_scale: the guidance of its first pass (default: the folder's, or
        guidance_scale). guidance_interval: ``(low, high)``, the noise levels at which guidance applies
        (default: the folder's, else all; `videogen.diffusion.sampling.guided`); image_guidance_interval: its
        first pass's (default: the folder's, or guidance_interval); image_first_frames: how many of the clip's
        first frames that pass samples together before it keeps the first (4k+1, default: the folder's, else
        1, the image alone). callback: called after each step with
        (step, timestep, latents), for each pass. attention: a `videogen.models.attention` backend
        name for the DiT.

        Returns a `videogen.io.Video` (uint8 frames ``(T, H, W, 3)`` and fps); with ``output``, the
        frames stream to that file as they are decoded and its `Path` is returned instead.
        """
        request = self.make_request(
            prompt, negative_prompt=negative_prompt, seed=seed, num_frames=num_frames, height=height, width=width, num_steps=num_steps,
            guidance_scale=guidance_scale, shift=shift, sampler=sampler, fps=fps, image_first=image_first,
            image_guidance_scale=image_guidance_scale, guidance_interval=guidance_interval,
            image_guidance_interval=image_guidance_interval, image_first_frames=image_first_frames,
        )
        output = check_output(output, overwrite)
        _attention_backend(attention)  # an unknown backend fails here, before any work
        check_fits(self.estimate_memory(request, keep_frames=output is None), self.device,
                   resident=self._resident_bytes())
        noise = self._initial_latents(request, latents)
        with _sink(output, request.fps, overwrite) as sink:
            cond, uncond = self._encode_prompts(request)
            denoise = self.denoise_image_first if request.image_first and noise.shape[2] > 1 else self.denoise
            clean = denoise(request, noise, cond, uncond, callback=callback, attention=attention, progress=progress)
            for frames in self.decode_frames(clean, progress=progress, total=request.num_frames):
                sink.write(frames)
        return sink.result()

    def _initial_latents(self, request: Request, latents: torch.Tensor | None) -> torch.Tensor:
        shape = self.latent_shape(request.num_frames, request.height, request.width)
        if latents is None:
            generator = torch.Generator("cpu").manual_seed(request.seed)
            return torch.randn(shape, generator=generator, dtype=torch.float32).to(self.device)
        if tuple(latents.shape) != shape:
            raise InputError(f"initial latents have shape {tuple(latents.shape)}, this request needs {shape}")
        return latents.to(self.device, torch.float32)

    def _encode_prompts(self, request: Request) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Text states ``(1, N, D)`` of the prompt, and of the negative prompt when guidance is on."""
        self.text_encoder.to(self.device)
        prompts = [request.prompt]
        if request.guides:
            prompts.append(request.negative_prompt)
        states = self.text_encoder.encode(prompts).to(self.device, self.transformer.dtype)  # (1 or 2, N, D)
        if self.offload:
            self.text_encoder.offload()
        return states[:1], (states[1:] if len(prompts) == 2 else None)

    def denoise(
        self,
        request: Request,
        noise: torch.Tensor,
        cond: torch.Tensor,
        uncond: torch.Tensor | None,
        *,
        known: torch.Tensor | None = None,
        clean: torch.Tensor | None = None,
        method: str = "timestep",
        callback: StepCallback | None = None,
        attention: str | None = None,
        progress: bool = False,
    ) -> torch.Tensor:
        """Sample clean latents ``(1, C, T', H', W')`` from ``noise``, guided by the text states.

        known / clean: latent frames held clean (bool ``(T',)`` and latents ``(1, C, T', H', W')``), the hook
        through which extension and interpolation reuse this pipeline (`videogen.diffusion.sampling.sample`);
        method: how they are held, ``"timestep"`` or ``"replace"`` (`frame_method` picks the folder's).
        """
        scheduler = make_scheduler(self.scheduler_config, sampler=request.sampler, shift=request.shift)
        velocity = guided(self._velocity_model(noise.shape), cond, uncond, request.guidance_scale,
                          request.guidance_interval)
        generator = torch.Generator("cpu").manual_seed(request.seed)
        with self._on_device(self.transformer), _attention_backend(attention):
            return sample(velocity, noise, scheduler, request.num_steps, known=known, clean=clean, hold=method,
                          generator=generator, callback=callback, progress=progress)

    def denoise_image_first(
        self,
        request: Request,
        noise: torch.Tensor,
        cond: torch.Tensor,
        uncond: torch.Tensor | None,
        *,
        callback: StepCallback | None = None,
        attention: str | None = None,
        progress: bool = False,
    ) -> torch.Tensor:
        """Text-to-video in two passes, as Emu Video factorises it (Girdhar et al. 2023): the first latent frame
        (under the causal VAE it codes the first frame by itself, so it is an image), then the whole clip
        with that frame held known. The first pass decides what is shown, the second how it moves; a DiT
        learns to keep an object's look across frames far sooner from a given frame than from text alone
        (docs/benchmarks.md, sessions 12 and 15). For models trained on both (``objective.p_image`` and
        ``p_first``). Same noise as `denoise`: frame 0's for the image, the rest for the clip.

        ``request.image_first_frames`` > 1: the first pass samples the clip's opening (that many frames, at
        most the clip) and keeps only its first latent frame, so the image is drawn with the motion that
        follows it in view -- where an object starts depends on where it goes (docs/benchmarks.md, session 20).
        """
        from videogen.tasks import known_window

        first = replace(request, guidance_scale=_either(request.image_guidance_scale, request.guidance_scale),
                        guidance_interval=_either(request.image_guidance_interval, request.guidance_interval))
        opening = self.latent_shape(request.image_first_frames, request.height, request.width)[2]  # latent frames
        image = self.denoise(first, noise[:, :, :opening], cond, uncond, callback=callback, attention=attention,
                             progress=progress)[:, :, :1]  # (1, C, 1, H', W')
        known, clean = known_window(self, noise.shape, {0: image})  # the mask and latents extend holds
        return self.denoise(request, noise, cond, uncond, known=known, clean=clean, method=self.frame_method(),
                            callback=callback, attention=attention, progress=progress)

    def frame_method(self, method: str | None = None) -> str:
        """How known frames are held: ``method`` if given, else what the folder declares -- ``"timestep"`` for
        a model trained with frame conditioning (``frame_conditioning`` in videogen.json), ``"replace"``
        (training-free) for one that was not, such as Wan2.1-T2V as published."""
        from videogen.diffusion.sampling import HOLD_METHODS

        if method is None:
            return "timestep" if self.defaults.frame_conditioning else "replace"
        if method not in HOLD_METHODS:
            raise InputError(f"unknown frame-conditioning method {method!r}: choose one of {', '.join(HOLD_METHODS)}")
        return method

    # ------------------------------------------------------------------------- extend, interpolate

    def extend(self, video, prompt: str, num_new_frames: int | None = None, **options):
        """The input followed by ``num_new_frames`` frames that continue it; see `videogen.tasks.extend`."""
        from videogen.tasks import extend

        return extend(self, video, prompt, num_new_frames, **options)

    def interpolate(self, start, end, prompt: str, num_frames: int | None = None, **options):
        """``num_frames`` frames from START's last frame to END's first; see `videogen.tasks.interpolate`."""
        from videogen.tasks import interpolate

        return interpolate(self, start, end, prompt, num_frames, **options)

    def _velocity_model(self, latent_shape):
        """The DiT as ``model(x, t, text) -> v`` in fp32; per-frame timesteps ``(B, T')`` become per-token."""
        dit = self.transformer
        _, _, _, h, w = latent_shape
        _, ph, pw = dit.config.patch_size
        tokens_per_frame = (h // ph) * (w // pw)

        def model(x: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
            if t.ndim == 2:
                t = token_timesteps(t, tokens_per_frame)  # (B, L)
            return dit(x.to(dit.dtype), t, text).float()

        return model

    def decode_frames(self, latents: torch.Tensor, *, progress: bool = False, total: int | None = None
                      ) -> Iterator[np.ndarray]:
        """Normalized latents ``(1, C, T', H', W')`` -> uint8 frame chunks ``(t, H, W, 3)``, streamed."""
        with self._on_device(self.vae), tqdm(total=total, desc="decoding", unit="frame", disable=not progress) as bar:
            z = self.vae.denormalize(latents.to(self.device, self.vae.dtype))  # (1, C, T', H', W')
            for chunk in self.vae.decode_frames(z):  # (1, 3, t, H, W)
                frames = to_uint8(chunk[0])
                bar.update(len(frames))
                yield frames

    @contextmanager
    def _on_device(self, module: torch.nn.Module):
        """Hold ``module`` on the device while it works; with offload, send it back to the CPU after."""
        if isinstance(module, torch.nn.Module):
            _place(module, self.device)
        else:
            module.to(self.device)
        try:
            yield module
        finally:
            if self.offload:
                module.to("cpu")


def _place(model: torch.nn.Module, device: torch.device) -> None:
    """``model.to(device)``, unless it is all there already.

    diffusers' ``ModelMixin.to`` imports its offloading hooks, and through them PEFT: 0.7 s of the 9 s a cold
    `videogen generate` with the demo model takes on a 2-core CPU, for a model loaded where it runs.
    """
    if any(t.device != device for t in itertools.chain(model.parameters(), model.buffers())):
        model.to(device)


def _full_device(device: torch.device | str) -> torch.device:
    """``cuda`` -> ``cuda:<current>``, so that it compares equal to the device tensors report."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**63:
        raise InputError(f"seed must be a whole number from 0 to 2^63 - 1, got {seed!r}")
    return int(seed)


def _attention_backend(name: str | None):
    """The DiT's attention backend for this call (`videogen.models.attention.backend`), if one is named."""
    if name is None:
        return nullcontext()
    from videogen.models.attention import backend, backend_name

    return backend(backend_name(name))
