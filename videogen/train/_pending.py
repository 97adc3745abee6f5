"""TEMPORARY stand-ins for pieces other branches are writing right now; delete after merging main.

Each name here follows the contract its owner builds to (``/work/prompt-*.txt``), so swapping the import
for the real module is the whole migration:

- `load_config`, `save_config`, `to_dict`        -> ``videogen.config``        (branch ``io``)
- `read_video`, `write_video`, `probe_video`     -> ``videogen.io``            (branch ``io``)
- flow-matching maths                            -> ``videogen.diffusion.flow`` (branch ``pipe``)
- `encode_prompts`                               -> ``videogen.models.text``    (branch ``pipe``)
- `VideoDiT`, `CausalVideoVAE`                   -> ``videogen.models``         (branches ``dit``, ``vae``)

The model stand-ins are thin adapters over diffusers' Wan classes, which have the same config keys and
state-dict names as ours by contract.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from pathlib import Path

import numpy as np
import torch
import yaml

from videogen.errors import ConfigError, InputError

# ------------------------------------------------------------------------------------ config (io branch)


def _build(cls, data: dict, where: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(f"unknown config key '{where}{key}'")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            value = _build(hint, value or {}, f"{where}{key}.")
        kwargs[key] = value
    return cls(**kwargs)


def load_config(cls, path: str | Path | None, overrides: list[str] = ()):
    data = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file")
        data = yaml.safe_load(path.read_text()) or {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected key=value")
        node = data
        *parents, leaf = key.split(".")
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = yaml.safe_load(raw)
    return _build(cls, data, "")


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


# ---------------------------------------------------------------------------------------- io (io branch)


def _open(path):
    import av

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as e:
        raise InputError(f"{path}: not a readable video ({e})") from None
    if not container.streams.video:
        container.close()
        raise InputError(f"{path}: not a video file (no video stream)")
    return container


def probe_video(path):
    container = _open(path)
    with container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or 0) or 1.0
        frames = stream.frames
        if not frames:
            frames = sum(1 for _ in container.decode(video=0))
        return types.SimpleNamespace(
            frames=frames, fps=fps, width=stream.width, height=stream.height, duration=frames / fps
        )


def read_video(path, *, start=0.0, max_frames=None, fps=None, size=None):
    import av

    container = _open(path)
    frames, times = [], []
    try:
        with container:
            stream = container.streams.video[0]
            src_fps = float(stream.average_rate or 0) or 1.0
            for frame in container.decode(video=0):
                t = float(frame.pts * frame.time_base) if frame.pts is not None else len(times) / src_fps
                if size is not None:
                    frame = frame.reformat(width=size[1], height=size[0], interpolation="AREA")
                frames.append(frame.to_ndarray(format="rgb24"))
                times.append(t)
    except av.error.FFmpegError as e:
        raise InputError(f"{path}: cannot decode ({e})") from None
    if not frames:
        raise InputError(f"{path}: no frames")
    fps = fps or src_fps
    times = np.asarray(times) - times[0]
    count = max(1, int(math.floor((times[-1] + 1 / src_fps - start) * fps + 1e-6)))
    if max_frames is not None:
        count = min(count, max_frames)
    wanted = start + np.arange(count) / fps
    picks = np.abs(times[None, :] - wanted[:, None]).argmin(axis=1)
    return types.SimpleNamespace(frames=np.stack([frames[i] for i in picks]), fps=fps)


def write_video(path, frames, fps, *, crf=18, overwrite=False):
    import av

    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(f"{path}: exists")
    frames = frames.cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    with av.open(str(tmp), "w") as out:
        stream = out.add_stream("libx264", rate=round(fps))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": str(crf)}
        for f in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")))
        out.mux(stream.encode())
    tmp.replace(path)
    return path


# ------------------------------------------------------------------------------------ flow (pipe branch)
# The API of pipe:videogen/diffusion/flow.py, reduced to what the trainer calls.

NUM_TRAIN_TIMESTEPS = 1000


def interpolate(x0, noise, sigma):
    s = sigma.view(-1, 1, 1, 1, 1).float()
    return ((1 - s) * x0.float() + s * noise.float()).to(x0.dtype)


def velocity_target(x0, noise):
    return noise - x0


def flow_loss(velocity, x0, noise, *, known=None):
    err = (velocity.float() - velocity_target(x0, noise).float()).square()
    if known is None:
        return err.mean()
    weight = (~known).float().view(known.shape[0], 1, known.shape[1], 1, 1).expand_as(err)
    return (err * weight).sum() / weight.sum().clamp_min(1.0)


def shift_sigmas(sigma, shift):
    return shift * sigma / (1 + (shift - 1) * sigma)


def to_timesteps(sigma):
    return sigma * NUM_TRAIN_TIMESTEPS


def sample_sigmas(batch, *, distribution="logit_normal", shift=1.0, mean=0.0, std=1.0, generator=None,
                  device="cpu"):
    if distribution == "logit_normal":
        sigma = torch.sigmoid(torch.randn(batch, generator=generator) * std + mean)
    else:
        sigma = torch.rand(batch, generator=generator)
    return shift_sigmas(sigma, shift).to(device)


def frame_timesteps(t, known, batch):
    return torch.where(known, torch.zeros_like(t).view(-1, 1), t.view(-1, 1)).expand(batch, known.shape[1])


def token_timesteps(timestep, tokens_per_frame):
    return timestep.repeat_interleave(tokens_per_frame, dim=1)


def hold_known(latents, clean, known):
    return torch.where(known.view(known.shape[0], 1, known.shape[1], 1, 1), clean.to(latents.dtype), latents)


# ------------------------------------------------------------------------------------ text (pipe branch)


def encode_prompts(text_encoder, tokenizer, prompts: list[str], max_length: int) -> torch.Tensor:
    """Wan semantics: pad to max length, run with the mask, cut each to its length, zero-pad back."""
    tokens = tokenizer(prompts, padding="max_length", max_length=max_length, truncation=True,
                       add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
    device = next(text_encoder.parameters()).device
    mask = tokens.attention_mask.to(device)
    states = text_encoder(tokens.input_ids.to(device), mask).last_hidden_state
    return states * mask[..., None].to(states.dtype)


# ------------------------------------------------------------------------------- models (dit/vae branch)


@functools.cache
def _dit_class():
    from diffusers import WanTransformer3DModel

    class VideoDiT(WanTransformer3DModel):
        def forward(self, latents, timestep, text_states, *, text_mask=None):
            return super().forward(latents, timestep, text_states, return_dict=False)[0]

    return VideoDiT


@functools.cache
def _vae_class():
    from diffusers import AutoencoderKLWan

    class CausalVideoVAE(AutoencoderKLWan):
        def encode(self, video, *, streaming=False):
            return super().encode(video).latent_dist

        def decode(self, latents, *, streaming=False):
            return super().decode(latents).sample

        def normalize(self, z):
            mean = torch.tensor(self.config.latents_mean, device=z.device, dtype=z.dtype)
            std = torch.tensor(self.config.latents_std, device=z.device, dtype=z.dtype)
            return (z - mean.view(1, -1, 1, 1, 1)) / std.view(1, -1, 1, 1, 1)

        def denormalize(self, z):
            mean = torch.tensor(self.config.latents_mean, device=z.device, dtype=z.dtype)
            std = torch.tensor(self.config.latents_std, device=z.device, dtype=z.dtype)
            return z * std.view(1, -1, 1, 1, 1) + mean.view(1, -1, 1, 1, 1)

        @property
        def latent_channels(self):
            return self.config.z_dim

        temporal_compression = 4
        spatial_compression = 8

    return CausalVideoVAE


def __getattr__(name):
    if name == "VideoDiT":
        return _dit_class()
    if name == "CausalVideoVAE":
        return _vae_class()
    raise AttributeError(name)

