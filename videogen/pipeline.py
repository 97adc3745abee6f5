"""The loaded model and the steps every task is made of: encode prompts, encode frames, denoise, decode.

``Pipeline`` holds a text encoder, a causal VAE and a DiT, and offers the data path as public steps::

    prompt --encode_prompts--> text states --denoise (DiT, flow sampler, guidance; known frames held)--> latents
           --decode_frames (streaming VAE decoder)--> uint8 frame chunks
    known frames --encode_frames--> latents held clean

The tasks (`videogen.tasks`: generate, image-first, extend, interpolate) are written over these steps alone and
`videogen.tasks.VideoPipeline` adds them as methods; this module imports nothing from there. Settings come from
`Pipeline.settings`, which fills in the folder's defaults and validates against the model's geometry.

The numbers follow diffusers' ``WanPipeline`` (same text states, scheduler, noise, guidance and latent
scaling), which the tests check frame for frame on random weights. Two things differ on purpose: guidance
runs the conditional and unconditional branches as one batch, and decoding streams one latent frame at a
time, so a long clip never sits in memory whole.
"""

from __future__ import annotations

import itertools
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from videogen.diffusion.flow import NUM_TRAIN_TIMESTEPS, token_timesteps
from videogen.diffusion.sampling import HOLD_METHODS, StepCallback, guided, make_scheduler, sample
from videogen.errors import InputError, ModelError
from videogen.frames import to_pixels, to_uint8
from videogen.footprint import estimate, footprint_of_modules
from videogen.memory import MemoryEstimate, check_fits, module_bytes
from videogen.modelfolder import Layout, load_components, write_model_folder
from videogen.models.text import TextEncoder
from videogen.settings import Geometry, Settings


@dataclass
class TextStates:
    """The prompt's text states ``(1, N, D)`` and, when guidance is on, the negative prompt's."""

    cond: torch.Tensor
    uncond: torch.Tensor | None


@dataclass
class Condition:
    """What one sampling window is conditioned on besides text, in the model's own terms (`Pipeline.condition`).

    known / clean: latent frames held clean by the sampler (bool ``(T',)``, latents ``(1, C, T', H', W')``), for
    models conditioned through timesteps (Wan2.2 TI2V, the bundled model) or the training-free replacement.
    channels: ``(1, 4 + C, T', H', W')`` the mask of given frames and their encoding, concatenated to the DiT's
    input (Wan2.1 I2V/FLF2V, Wan2.2 I2V-A14B). image: ``(1, tokens, D)`` CLIP states of the given images.
    """

    known: torch.Tensor | None = None
    clean: torch.Tensor | None = None
    channels: torch.Tensor | None = None
    image: torch.Tensor | None = None


class Pipeline:
    """A Wan-family model -- T5 text encoder, causal VAE, one or two DiTs, maybe a CLIP image encoder -- and the
    steps of sampling with it.

    Args:
        text_encoder: prompts -> zero-padded text states (`videogen.models.text.TextEncoder`).
        vae: the causal video VAE (`videogen.models.vae.CausalVideoVAE`).
        transformer: the velocity network (`videogen.models.dit.VideoDiT`); with two experts, the high-noise one.
        scheduler_config: the folder's ``scheduler_config.json``; a fresh scheduler is made per call.
        transformer_2: Wan2.2 A14B's low-noise expert, run below ``layout.boundary_ratio`` x 1000.
        image_encoder: the CLIP image encoder of Wan2.1 I2V/FLF2V (`videogen.models.image.ImageEncoder`).
        layout: what the folder declared (`videogen.modelfolder.Layout`: experts, per-token timesteps...).
        defaults: settings used where a call gives none (`videogen.settings.Settings`).
        device: where the models run. offload: keep each model on the CPU except while it works (and only one
            expert on the device at a time).
    """

    def __init__(self, text_encoder: TextEncoder, vae, transformer, scheduler_config: dict, *, transformer_2=None,
                 image_encoder=None, layout: Layout | None = None, defaults: Settings | None = None,
                 device: torch.device | str | None = None, offload: bool = False):
        self.text_encoder, self.vae, self.transformer = text_encoder, vae, transformer
        self.transformer_2, self.image_encoder = transformer_2, image_encoder
        self.layout = layout or _layout_of(transformer, vae, transformer_2, image_encoder)
        self.scheduler_config = dict(scheduler_config)
        self.defaults = defaults or Settings()
        self.device = _full_device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.offload = offload
        self._check_compatible()
        home = torch.device("cpu") if offload else self.device
        for module in self._modules():
            _place(module, home)

    def _modules(self) -> list[torch.nn.Module]:
        """Every network the pipeline holds (the encoders' torch modules, the VAE, the experts)."""
        encoders = [self.text_encoder.encoder] + ([self.image_encoder.encoder] if self.image_encoder else [])
        return [*encoders, self.vae, *self.experts]

    @property
    def experts(self) -> list[torch.nn.Module]:
        """The transformers, the high-noise one first."""
        return [self.transformer] + ([self.transformer_2] if self.transformer_2 is not None else [])

    def _check_compatible(self) -> None:
        z = self.vae.latent_channels
        for dit in (e.config for e in self.experts):
            if dit.text_dim != self.text_encoder.dim:
                raise ModelError(f"the transformer takes text states of width {dit.text_dim}, "
                                 f"the text encoder gives {self.text_encoder.dim}")
            if dit.out_channels != z or dit.in_channels not in (z, 2 * z + self.vae.temporal_compression):
                raise ModelError(f"the transformer takes {dit.in_channels} latent channels and gives "
                                 f"{dit.out_channels}, the VAE gives {z}")
        if (self.transformer_2 is None) != (self.layout.experts == 1):
            raise ModelError(f"the layout declares {self.layout.experts} experts, the pipeline holds "
                             f"{len(self.experts)}")
        if (self.image_encoder is None) != (self.transformer.config.image_dim is None):
            raise ModelError("the transformer takes CLIP image states only with an image encoder, and an image "
                             "encoder only serves a transformer that takes them")

    # ------------------------------------------------------------------------------------ folders

    @classmethod
    def from_pretrained(cls, folder: str | Path, *, device: torch.device | str | None = None,
                        dtype: torch.dtype | None = None, offload: bool = False):
        """Load a diffusers-layout folder of the Wan family (`videogen.modelfolder.Layout`), or one videogen saved.

        dtype applies to the transformers and the encoders; the VAE stays in fp32. A missing or broken
        folder, or one whose parts videogen cannot all run, raises `ModelError` (`videogen.modelfolder`).
        """
        parts = load_components(Path(folder), dtype)
        return cls(parts.pop("text_encoder"), parts.pop("vae"), parts.pop("transformer"),
                   parts.pop("scheduler_config"), **parts, device=device, offload=offload)

    def save_pretrained(self, folder: str | Path, *, overwrite: bool = False) -> Path:
        """Write a folder that both `from_pretrained` and diffusers' pipeline load, whole or not at all."""
        return write_model_folder(folder, text_encoder=self.text_encoder, vae=self.vae, transformer=self.transformer,
                                  transformer_2=self.transformer_2, image_encoder=self.image_encoder,
                                  layout=self.layout, scheduler=make_scheduler(self.scheduler_config),
                                  defaults=self.defaults, overwrite=overwrite)

    # ----------------------------------------------------------------------------------- settings

    @property
    def geometry(self) -> Geometry:
        """The sizes this model takes: temporal and spatial compression, the DiT's patch, latent channels."""
        return Geometry(temporal=self.vae.temporal_compression, spatial=self.vae.spatial_compression,
                        patch=tuple(self.transformer.config.patch_size), latent_channels=self.vae.latent_channels)

    def settings(self, settings: Settings | None = None, **overrides) -> Settings:
        """``settings`` (default: the folder's defaults) with ``overrides`` on top (``None`` keeps a value),
        validated against this model's geometry, a seed drawn where none is set."""
        resolved = (settings or self.defaults).override(**overrides).resolve(self.geometry)
        if resolved.guidance_scale_2 is not None and self.transformer_2 is None:
            raise InputError("guidance_scale_2 is the low-noise expert's guidance: this model has one expert")
        return resolved

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int, int]:
        """``(1, C, T', H', W')`` with T' = 1 + (T - 1) / 4 and H' = H / 8 (Wan2.1's compression)."""
        return self.geometry.latent_shape(num_frames, height, width)

    def frame_method(self, method: str | None = None) -> str:
        """How given frames condition a window: ``"channels"`` for a model that takes them as input channels
        (I2V layouts), else ``method`` if given, else what the folder declares -- ``"timestep"`` for a model
        trained with frame conditioning (Wan2.2 TI2V's per-token timesteps, ``frame_conditioning`` in
        videogen.json), ``"replace"`` (training-free) for one that was not, such as Wan2.1-T2V as published."""
        if self.layout.condition_channels:
            if method not in (None, "channels"):
                raise InputError(f"this {self.layout.name} model is conditioned on frames through its input "
                                 f"channels; --method {method} does not apply")
            return "channels"
        if method is None:
            return "timestep" if self.defaults.frame_conditioning or self.layout.expand_timesteps else "replace"
        if method not in HOLD_METHODS:
            raise InputError(f"unknown frame-conditioning method {method!r}: choose one of {', '.join(HOLD_METHODS)}")
        return method

    # ------------------------------------------------------------------------------------- memory

    def estimate_memory(self, settings: Settings, *, keep_frames: bool) -> MemoryEstimate:
        """Peak memory of one sampling run by phase, weights included (`videogen.footprint.estimate`, the
        numbers ``videogen generate --dry-run`` prints from a folder's configs alone)."""
        footprint = footprint_of_modules(
            text_encoder=self.text_encoder.encoder, text_tokens=self.text_encoder.max_sequence_length, vae=self.vae,
            transformers=self.experts, image_encoder=self.image_encoder.encoder if self.image_encoder else None,
            per_token_timesteps=self.frame_method() == "timestep")
        return estimate(footprint, settings, offload=self.offload, keep_frames=keep_frames)

    def check_memory(self, settings: Settings, *, keep_frames: bool) -> None:
        """Refuse, before any work, a run whose estimated peak exceeds what the device has (`ResourceError`)."""
        resident = sum(module_bytes(m) for m in self._modules() if next(m.parameters()).device == self.device)
        check_fits(self.estimate_memory(settings, keep_frames=keep_frames), self.device, resident=resident)

    # -------------------------------------------------------------------------------------- steps

    def initial_noise(self, settings: Settings, latents: torch.Tensor | None = None) -> torch.Tensor:
        """Noise ``(1, C, T', H', W')`` from ``torch.Generator().manual_seed(seed)`` on the CPU (the same seed
        gives the same clip on any device), or the caller's ``latents`` after a shape check."""
        shape = self.latent_shape(settings.num_frames, settings.height, settings.width)
        if latents is None:
            generator = torch.Generator("cpu").manual_seed(settings.seed)
            return torch.randn(shape, generator=generator, dtype=torch.float32).to(self.device)
        if tuple(latents.shape) != shape:
            raise InputError(f"initial latents have shape {tuple(latents.shape)}, these settings need {shape}")
        return latents.to(self.device, torch.float32)

    @torch.no_grad()
    def encode_prompts(self, prompt: str, settings: Settings) -> TextStates:
        """Text states ``(1, N, D)`` of the prompt, and of the negative prompt when guidance is on."""
        if not isinstance(prompt, str):
            raise InputError(f"the prompt must be a string, got {type(prompt).__name__}")
        self.text_encoder.to(self.device)
        prompts = [prompt, settings.negative_prompt] if settings.guides else [prompt]
        states = self.text_encoder.encode(prompts).to(self.device, self.transformer.dtype)  # (1 or 2, N, D)
        if self.offload:
            self.text_encoder.offload()
        return TextStates(states[:1], states[1:] if len(prompts) == 2 else None)

    @torch.no_grad()
    def encode_frames(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 frames (1 + 4k, H, W, 3) -> normalized latents (1, C, 1 + k, H/8, W/8), as the DiT sees them.

        The posterior's mean, not a sample: known frames should be the input, not a noisy reading of it.
        """
        with self._on_device(self.vae):
            z = self.vae.encode(to_pixels(frames, self.device, self.vae.dtype)).mode()  # (1, C, 1 + k, H', W')
            return self.vae.normalize(z).float()

    def known_window(self, shape: tuple[int, ...], known_latents: dict[int, torch.Tensor]):
        """The ``known`` mask (T',) and ``clean`` latents (1, C, T', H', W') of one sampling window.

        known_latents: latent frame index -> normalized latents (1, C, t', H', W') starting at that index.
        """
        clean = torch.zeros(shape, device=self.device)  # (1, C, T', H', W')
        known = torch.zeros(shape[2], dtype=torch.bool, device=self.device)  # (T',)
        for index, z in known_latents.items():
            clean[:, :, index:index + z.shape[2]] = z
            known[index:index + z.shape[2]] = True
        return known, clean

    @torch.no_grad()
    def condition(self, settings: Settings, *, first: np.ndarray | None = None, last: np.ndarray | None = None,
                  method: str | None = None) -> Condition:
        """A window's conditioning on given frames, the model's own way (`frame_method`).

        first: uint8 ``(1 + 4k, H, W, 3)``, the frames the window opens with; last: uint8 ``(1, H, W, 3)``, the
        frame it ends on. An I2V model gets them as input channels (the mask and the window encoded with the
        other frames blank, as diffusers' ``WanImageToVideoPipeline`` makes them) and CLIP states of the first
        frame (and of the last, FLF2V); the others get latent frames held clean.
        """
        method = self.frame_method(method)
        if first is None and last is None:
            if not self.layout.text_to_video:
                raise InputError(f"this {self.layout.name} model draws from a first frame: give one "
                                 "(videogen extend IMAGE, or interpolate)")
            return Condition()
        if method == "channels":
            return self._channel_condition(settings, first, last)
        shape = self.latent_shape(settings.num_frames, settings.height, settings.width)
        if last is None:
            return Condition(*self.known_window(shape, {0: self.encode_frames(first)}))
        bridge = self.encode_frames(bridge_clip(first[-1:], last, settings.num_frames, self.geometry.temporal))
        return Condition(*self.known_window(shape, {0: bridge[:, :, :1], shape[2] - 1: bridge[:, :, -1:]}))

    def _channel_condition(self, settings: Settings, first: np.ndarray, last: np.ndarray | None) -> Condition:
        """Mask (4 channels per latent frame: one per pixel frame it codes) and the encoded window."""
        if last is not None and self.image_encoder is not None and not self.layout.first_last:
            raise InputError(f"this {self.layout.name} model takes a first frame only: interpolating needs a "
                             "first-last-frame model (Wan2.1 FLF2V) or Wan2.2 I2V-A14B")
        n, temporal = settings.num_frames, self.geometry.temporal
        given = torch.zeros(n, dtype=torch.bool)
        given[:len(first)] = True
        with self._on_device(self.vae):
            video = torch.zeros(1, 3, n, settings.height, settings.width, device=self.device, dtype=self.vae.dtype)
            video[:, :, :len(first)] = to_pixels(first, self.device, self.vae.dtype)
            if last is not None:
                video[:, :, -1:] = to_pixels(last, self.device, self.vae.dtype)
                given[-1] = True
            encoded = self.vae.normalize(self.vae.encode(video).mode()).float()  # (1, C, T', H', W')
        mask = torch.cat([given[:1].repeat(temporal), given[1:]]).view(-1, temporal).T  # (temporal, T')
        mask = mask[None, :, :, None, None].expand(1, -1, -1, *encoded.shape[3:]).to(encoded)
        images = [first[0]] + ([last[0]] if last is not None and self.layout.first_last else [])
        return Condition(channels=torch.cat([mask, encoded], dim=1), image=self.encode_images(images))

    @torch.no_grad()
    def encode_images(self, images: list[np.ndarray]) -> torch.Tensor | None:
        """CLIP states ``(1, tokens, D)`` of uint8 images ``(H, W, 3)`` for a model that takes them, else None;
        two images (first and last frame) are one sequence, as FLF2V's positional table expects."""
        if self.image_encoder is None:
            return None
        with self._on_device(self.image_encoder.encoder):
            states = self.image_encoder.encode(images).to(self.device, self.transformer.dtype)  # (N, tokens, D)
        return states.reshape(1, -1, states.shape[-1])

    @torch.no_grad()
    def denoise(self, settings: Settings, noise: torch.Tensor, text: TextStates, *,
                known: torch.Tensor | None = None, clean: torch.Tensor | None = None,
                condition: Condition | None = None, method: str = "timestep",
                callback: StepCallback | None = None, attention: str | None = None,
                progress: bool = False) -> torch.Tensor:
        """Sample clean latents ``(1, C, T', H', W')`` from ``noise``, guided by the text states.

        known / clean: latent frames held clean (bool ``(T',)`` and latents ``(1, C, T', H', W')``, see
        `known_window`), or ``condition`` (`condition`) with them or an I2V model's input channels and image
        states; method: how held frames are held, ``"timestep"`` or ``"replace"`` (`frame_method`).
        attention: a `videogen.models.attention` backend name for the DiT. A two-expert model runs its
        high-noise expert while the timestep is at least ``boundary_ratio`` x 1000, then the low-noise one.
        """
        condition = condition or Condition(known, clean)
        method = "timestep" if method == "channels" else method
        scheduler = make_scheduler(self.scheduler_config, sampler=settings.sampler, shift=settings.shift)
        velocity = self._velocity(settings, noise.shape, text, condition)
        generator = torch.Generator("cpu").manual_seed(settings.seed)
        with self._experts_on_device(), _attention_backend(attention):
            return sample(velocity, noise, scheduler, settings.num_steps, known=condition.known,
                          clean=condition.clean, hold=method, generator=generator, callback=callback,
                          progress=progress)

    @torch.no_grad()
    def decode_frames(self, latents: torch.Tensor, *, progress: bool = False, total: int | None = None
                      ) -> Iterator[np.ndarray]:
        """Normalized latents ``(1, C, T', H', W')`` -> uint8 frame chunks ``(t, H, W, 3)``, streamed."""
        with self._on_device(self.vae), tqdm(total=total, desc="decoding", unit="frame", disable=not progress) as bar:
            z = self.vae.denormalize(latents.to(self.device, self.vae.dtype))  # (1, C, T', H', W')
            for chunk in self.vae.decode_frames(z):  # (1, 3, t, H, W)
                frames = to_uint8(chunk[0])
                bar.update(len(frames))
                yield frames

    # ----------------------------------------------------------------------------------- internals

    def _velocity(self, settings: Settings, shape, text: TextStates, condition: Condition):
        """The guided velocity function of this run; with two experts, the one the step's timestep picks, each
        with its own guidance scale (``guidance_scale_2`` for the low-noise expert, default the same)."""
        scales = [settings.guidance_scale, settings.guidance_scale_2 or settings.guidance_scale]
        guided_experts = [guided(self._velocity_model(dit, shape, condition), text.cond, text.uncond, scale,
                                 settings.guidance_interval) for dit, scale in zip(self.experts, scales)]
        if len(guided_experts) == 1:
            return guided_experts[0]
        boundary = self.layout.boundary_ratio * self.scheduler_config.get("num_train_timesteps", NUM_TRAIN_TIMESTEPS)

        def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            expert = 0 if float(t.max()) >= boundary else 1  # the step's timestep: known frames sit at 0
            self._use_expert(expert)
            return guided_experts[expert](x, t)

        return velocity

    def _velocity_model(self, dit, latent_shape, condition: Condition):
        """``dit`` as ``model(x, t, text) -> v`` in fp32; per-frame timesteps ``(B, T')`` become per-token; an I2V
        model's condition channels are appended to its input and its image states passed along."""
        _, _, _, h, w = latent_shape
        _, ph, pw = dit.config.patch_size
        tokens_per_frame = (h // ph) * (w // pw)
        extra = {}

        def model(x: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
            if t.ndim == 2:
                t = token_timesteps(t, tokens_per_frame)  # (B, L)
            if condition.channels is not None:
                x = torch.cat([x, condition.channels.expand(x.shape[0], -1, -1, -1, -1)], dim=1)
            if condition.image is not None:
                extra["image_states"] = condition.image.expand(x.shape[0], -1, -1)
            return dit(x.to(dit.dtype), t, text, **extra).float()

        return model

    def _use_expert(self, index: int) -> None:
        """Put expert ``index`` on the device; with offload, send the other back to the CPU first."""
        if self.offload:
            for i, expert in enumerate(self.experts):
                if i != index:
                    expert.to("cpu")
        _place(self.experts[index], self.device)

    @contextmanager
    def _experts_on_device(self):
        """The first expert on the device for a run (the velocity function switches), all back after offloaded."""
        self._use_expert(0)
        try:
            yield
        finally:
            if self.offload:
                for expert in self.experts:
                    expert.to("cpu")

    @contextmanager
    def _on_device(self, module: torch.nn.Module):
        """Hold ``module`` on the device while it works; with offload, send it back to the CPU after."""
        _place(module, self.device)
        try:
            yield module
        finally:
            if self.offload:
                module.to("cpu")


def bridge_clip(a: np.ndarray, b: np.ndarray, num_frames: int, temporal: int = 4) -> np.ndarray:
    """The clip whose first and last latent frames stand for frame ``a`` and frame ``b``.

    The causal VAE's last latent frame summarises the last ``temporal`` pixel frames, so those are all
    ``b`` (a still end, as the output will show it); the frames between are a linear crossfade, a neutral
    guess of the motion that only the causal history of the last latent frame sees (their own latent
    frames are not used). Encoding the clip at the window's full length gives the last latent frame the
    same causal history length as in the sampled video. a, b: uint8 (1, H, W, 3); returns (N, H, W, 3).
    """
    middle = num_frames - 1 - temporal
    weights = np.linspace(0.0, 1.0, middle + 2)[1:-1].reshape(-1, 1, 1, 1)  # (middle, 1, 1, 1)
    fade = ((1 - weights) * a.astype(np.float32) + weights * b.astype(np.float32)).round().astype(np.uint8)
    return np.concatenate([a, fade, np.repeat(b, temporal, axis=0)])  # (N, H, W, 3)


def _layout_of(transformer, vae, transformer_2, image_encoder) -> Layout:
    """The layout of models built in code: what their configs say (a folder declares its own)."""
    config = transformer.config
    return Layout(experts=2 if transformer_2 is not None else 1,
                  boundary_ratio=0.875 if transformer_2 is not None else None,
                  image_encoder=image_encoder is not None,
                  condition_channels=config.in_channels != config.out_channels,
                  first_last=getattr(config, "pos_embed_seq_len", None) is not None)


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


def _attention_backend(name: str | None):
    """The DiT's attention backend for this call (`videogen.models.attention.backend`), if one is named."""
    if name is None:
        return nullcontext()
    from videogen.models.attention import backend

    return backend(name)
