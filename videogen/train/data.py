"""A run's data: the clip dataset the config names, its cached form, and the per-step batch stream.

Every clip dataset here gives items ``{"video", "caption", "key"}`` and lists ``buckets``, ``keys`` and
``captions`` without decoding anything, so the cache can tell what it lacks and the sampler can batch by
shape. The batch stream is positioned by (epoch, batch), the data state a checkpoint stores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from videogen.data.buckets import BucketBatchSampler
from videogen.data.footage import FootageDataset, collate
from videogen.errors import ConfigError
from videogen.train.cache import CachedClips, TensorCache, collate_cached, fill, fingerprint
from videogen.train.config import TrainConfig, parse_resolution
from videogen.train.models import Components, encode_text, tokenize


class ShapesClips(torch.utils.data.Dataset):
    """The shapes world (``videogen.data.shapes``) as a clip dataset of one bucket."""

    def __init__(self, num_clips: int, *, seed: int, size: int, num_frames: int):
        from videogen.data.shapes import ShapesDataset

        self.world = ShapesDataset(num_clips, seed=seed, split="train", size=size, num_frames=num_frames)
        self.buckets = [(num_frames, size, size)] * num_clips
        self.keys = [f"shapes|seed={seed}|{i}|{size}x{size}x{num_frames}" for i in range(num_clips)]

    @property
    def captions(self) -> list[str]:
        return [self.world.spec(i).caption for i in range(len(self))]

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> dict:
        video, caption = self.world[index]
        return {"video": video, "caption": caption, "key": self.keys[index]}


def build_dataset(cfg: TrainConfig):
    """The clips ``cfg.data`` describes: a footage folder, or the shapes world."""
    d = cfg.data
    if d.kind == "shapes":
        return ShapesClips(d.shapes_samples, seed=cfg.seed, size=d.shapes_size, num_frames=max(d.frames))
    if d.path is None:
        raise ConfigError("data.path: no footage folder given (pass --data DIR, or --data shapes)")
    return FootageDataset(d.path, frames=d.frames, sizes=[parse_resolution(r) for r in d.resolutions],
                          fps=d.fps, stride=d.stride)


def cache_folder(cfg: TrainConfig, output: Path) -> Path:
    if cfg.data.cache_dir is not None:
        return Path(cfg.data.cache_dir)
    if cfg.data.kind == "footage":
        return Path(cfg.data.path) / ".videogen-cache"
    return output / "cache"


# ------------------------------------------------------------------------------------------ caching


@torch.no_grad()
def cache_latents(dataset, vae, folder: Path, *, device, show: bool = True) -> TensorCache:
    """The VAE posterior (mean, std) of every clip, computed where missing."""
    cache = TensorCache(folder / f"latents-{fingerprint(vae)}")
    index = {k: i for i, k in enumerate(dataset.keys)}

    def compute(keys):
        out = {}
        for key in keys:
            video = dataset[index[key]]["video"][None].to(device=device, dtype=vae.dtype)  # (1, 3, T, H, W)
            posterior = vae.encode(video)
            out[key] = {"mean": posterior.mean[0].float(), "std": posterior.std[0].float()}
        return out

    fill(cache, dataset.keys, compute, desc="caching latents", show=show)
    return cache


@torch.no_grad()
def cache_text(captions: list[str], text_encoder, tokenizer, max_length: int, folder: Path, *, device,
               show: bool = True) -> TensorCache:
    """T5 states of every distinct caption (and of "", for dropped captions), cut to their length."""
    cache = TensorCache(folder / f"text-{fingerprint(text_encoder, extra=f'{type(tokenizer).__name__}:{max_length}')}")

    def compute(keys):
        tokens = tokenize(tokenizer, keys, max_length)
        states = encode_text(text_encoder, tokens["input_ids"].to(device), tokens["attention_mask"].to(device))
        lengths = tokens["attention_mask"].sum(dim=1).tolist()
        return {k: {"states": s[:n].float()} for k, s, n in zip(keys, states, lengths)}

    fill(cache, ["", *captions], compute, batch=16, desc="caching text", show=show)
    return cache


def text_batch(cache: TensorCache, captions: list[str], max_length: int) -> torch.Tensor:
    """Cached states of captions, zero-padded to ``max_length`` as the Wan pipeline pads: (B, N, D)."""
    states = [cache[c]["states"] for c in captions]
    out = states[0].new_zeros(len(states), max_length, states[0].shape[-1])  # (B, N, D)
    for i, s in enumerate(states):
        out[i, : len(s)] = s
    return out


def prepare_cache(cfg: TrainConfig, dataset, parts: Components, folder: Path, accelerator):
    """Fill the caches on the main process, then open them everywhere; returns (cached clips, text cache)."""
    device = accelerator.device
    text_frozen = not cfg.model.train_text_encoder
    if accelerator.is_main_process:
        parts.vae.to(device)
        cache_latents(dataset, parts.vae, folder, device=device)
        if text_frozen:
            parts.text_encoder.to(device)
            cache_text(dataset.captions, parts.text_encoder, parts.tokenizer, cfg.model.max_text_length, folder,
                       device=device)
    accelerator.wait_for_everyone()
    latents = cache_latents(dataset, parts.vae, folder, device=device, show=False)
    text = None
    if text_frozen:
        text = cache_text(dataset.captions, parts.text_encoder, parts.tokenizer, cfg.model.max_text_length,
                          folder, device=device, show=False)
    return CachedClips(dataset.captions, dataset.keys, latents), text


# ------------------------------------------------------------------------------------------- batches


def process_seed(seed: int, rank: int) -> int:
    """A seed per (run, process) for the noise generator; processes must not draw the same noise."""
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


class BatchStream:
    """Batches across epochs from a position (epoch, batch), the data state a checkpoint stores."""

    def __init__(self, dataset, buckets, cfg: TrainConfig, *, rank: int = 0, num_replicas: int = 1):
        self.dataset = dataset
        self.collate = collate_cached if isinstance(dataset, CachedClips) else collate
        self.sampler = BucketBatchSampler(buckets, cfg.train.batch_size, seed=cfg.seed, rank=rank,
                                          num_replicas=num_replicas)
        self.num_workers = cfg.data.num_workers
        self.epoch, self.batch = 0, 0

    def __iter__(self):
        while True:
            self.sampler.set_epoch(self.epoch)
            self.sampler.skip(self.batch)
            loader = torch.utils.data.DataLoader(self.dataset, batch_sampler=self.sampler,
                                                 collate_fn=self.collate, num_workers=self.num_workers)
            for batch in loader:
                self.batch += 1
                yield batch
            self.epoch, self.batch = self.epoch + 1, 0

    def state(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state(self, state: dict) -> None:
        self.epoch, self.batch = state["epoch"], state["batch"]
