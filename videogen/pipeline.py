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

from videogen.diffusion.flow import token_timesteps
from videogen.diffusion.sampling import HOLD_METHODS, StepCallback, guided, make_scheduler, sample
from videogen.errors import InputError, ModelError
from videogen.frames import to_pixels, to_uint8
from videogen.memory import (
    MemoryEstimate,
    check_fits,
    dit_working_bytes,
    module_bytes,
    text_working_bytes,
    vae_decode_working_bytes,
)
from videogen.modelfolder import load_components, write_model_folder
from videogen.models.text import TextEncoder
from videogen.settings import Geometry, Settings


@dataclass
class TextStates:
    """The prompt's text states ``(1, N, D)`` and, when guidance is on, the negative prompt's."""

    cond: torch.Tensor
    uncond: torch.Tensor | None


class Pipeline:
    """A DiT, a causal VAE and a T5 text encoder (Wan2.1 layout), and the steps of sampling with them.

    Args:
        text_encoder: prompts -> zero-padded text states (`videogen.models.text.TextEncoder`).
        vae: the causal video VAE (`videogen.models.vae.CausalVideoVAE`).
        transformer: the velocity network (`videogen.models.dit.VideoDiT`).
        scheduler_config: the folder's ``scheduler_config.json``; a fresh scheduler is made per call.
        defaults: settings used where a call gives none (`videogen.settings.Settings`).
        device: where the models run. offload: keep each model on the CPU except while it works.
    """

    def __init__(self, text_encoder: TextEncoder, vae, transformer, scheduler_config: dict, *,
                 defaults: Settings | None = None, device: torch.device | str | None = None, offload: bool = False):
        self.text_encoder, self.vae, self.transformer = text_encoder, vae, transformer
        self.scheduler_config = dict(scheduler_config)
        self.defaults = defaults or Settings()
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

    # ------------------------------------------------------------------------------------ folders

    @classmethod
    def from_pretrained(cls, folder: str | Path, *, device: torch.device | str | None = None,
                        dtype: torch.dtype | None = None, offload: bool = False):
        """Load a diffusers-layout folder (a Wan2.1-T2V diffusers checkpoint, or one videogen saved).

        dtype applies to the transformer and the text encoder; the VAE stays in fp32. A missing or broken
        folder raises `ModelError` (`videogen.modelfolder`).
        """
        parts = load_components(Path(folder), dtype)
        return cls(parts["text_encoder"], parts["vae"], parts["transformer"], parts["scheduler_config"],
                   defaults=parts["defaults"], device=device, offload=offload)

    def save_pretrained(self, folder: str | Path, *, overwrite: bool = False) -> Path:
        """Write a folder that both `from_pretrained` and diffusers' ``WanPipeline`` load, whole or not at all."""
        return write_model_folder(folder, text_encoder=self.text_encoder, vae=self.vae, transformer=self.transformer,
                                  scheduler=make_scheduler(self.scheduler_config), defaults=self.defaults,
                                  overwrite=overwrite)

    # ----------------------------------------------------------------------------------- settings

    @property
    def geometry(self) -> Geometry:
        """The sizes this model takes: temporal and spatial compression, the DiT's patch, latent channels."""
        return Geometry(temporal=self.vae.temporal_compression, spatial=self.vae.spatial_compression,
                        patch=tuple(self.transformer.config.patch_size),
                        latent_channels=self.transformer.config.in_channels)

    def settings(self, settings: Settings | None = None, **overrides) -> Settings:
        """``settings`` (default: the folder's defaults) with ``overrides`` on top (``None`` keeps a value),
        validated against this model's geometry, a seed drawn where none is set."""
        return (settings or self.defaults).override(**overrides).resolve(self.geometry)

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int, int]:
        """``(1, C, T', H', W')`` with T' = 1 + (T - 1) / 4 and H' = H / 8 (Wan2.1's compression)."""
        return self.geometry.latent_shape(num_frames, height, width)

    def frame_method(self, method: str | None = None) -> str:
        """How known frames are held: ``method`` if given, else what the folder declares -- ``"timestep"`` for
        a model trained with frame conditioning (``frame_conditioning`` in videogen.json), ``"replace"``
        (training-free) for one that was not, such as Wan2.1-T2V as published."""
        if method is None:
            return "timestep" if self.defaults.frame_conditioning else "replace"
        if method not in HOLD_METHODS:
            raise InputError(f"unknown frame-conditioning method {method!r}: choose one of {', '.join(HOLD_METHODS)}")
        return method

    # ------------------------------------------------------------------------------------- memory

    def estimate_memory(self, settings: Settings, *, keep_frames: bool) -> MemoryEstimate:
        """Peak memory of one sampling run by phase (see `videogen.memory`), weights included."""
        text_w, dit_w, vae_w = (module_bytes(m) for m in (self.text_encoder.encoder, self.transformer, self.vae))
        everything = text_w + dit_w + vae_w
        shape = self.latent_shape(settings.num_frames, settings.height, settings.width)
        batch = 2 if settings.guides else 1
        latents = 6 * int(np.prod(shape)) * 4  # x, velocity, noise and the solver's history, fp32
        text = text_working_bytes(self.text_encoder.encoder.config, batch, self.text_encoder.max_sequence_length)
        dit = dit_working_bytes(self.transformer.config, (batch, *shape[1:]), self.transformer.dtype.itemsize)
        vae = vae_decode_working_bytes(self.vae.config, settings.height, settings.width)
        frames = settings.num_frames * settings.height * settings.width * 3 if keep_frames else 0
        return MemoryEstimate(
            encode=(text_w if self.offload else everything) + text,
            denoise=(dit_w if self.offload else everything) + dit + latents,
            decode=(vae_w if self.offload else everything) + vae + latents + frames,
        )

    def check_memory(self, settings: Settings, *, keep_frames: bool) -> None:
        """Refuse, before any work, a run whose estimated peak exceeds what the device has (`ResourceError`)."""
        modules = (self.text_encoder.encoder, self.transformer, self.vae)
        resident = sum(module_bytes(m) for m in modules if next(m.parameters()).device == self.device)
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
    def denoise(self, settings: Settings, noise: torch.Tensor, text: TextStates, *,
                known: torch.Tensor | None = None, clean: torch.Tensor | None = None, method: str = "timestep",
                callback: StepCallback | None = None, attention: str | None = None,
                progress: bool = False) -> torch.Tensor:
        """Sample clean latents ``(1, C, T', H', W')`` from ``noise``, guided by the text states.

        known / clean: latent frames held clean (bool ``(T',)`` and latents ``(1, C, T', H', W')``, see
        `known_window`); method: how they are held, ``"timestep"`` or ``"replace"`` (`frame_method`).
        attention: a `videogen.models.attention` backend name for the DiT.
        """
        scheduler = make_scheduler(self.scheduler_config, sampler=settings.sampler, shift=settings.shift)
        velocity = guided(self._velocity_model(noise.shape), text.cond, text.uncond, settings.guidance_scale,
                          settings.guidance_interval)
        generator = torch.Generator("cpu").manual_seed(settings.seed)
        with self._on_device(self.transformer), _attention_backend(attention):
            return sample(velocity, noise, scheduler, settings.num_steps, known=known, clean=clean, hold=method,
                          generator=generator, callback=callback, progress=progress)

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

    @contextmanager
    def _on_device(self, module: torch.nn.Module):
        """Hold ``module`` on the device while it works; with offload, send it back to the CPU after."""
        _place(module, self.device)
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


def _attention_backend(name: str | None):
    """The DiT's attention backend for this call (`videogen.models.attention.backend`), if one is named."""
    if name is None:
        return nullcontext()
    from videogen.models.attention import backend

    return backend(name)
