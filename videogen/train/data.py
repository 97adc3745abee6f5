"""A run's data: the clip dataset the config names, its cached form, and the per-step batch stream.

Every clip dataset here gives items ``{"video", "caption", "key"}`` and lists ``buckets``, ``keys`` and
``captions`` without decoding anything, so the cache can tell what it lacks and the sampler can batch by
shape. The batch stream is positioned by (epoch, batch), the data state a checkpoint stores.

The precomputation cache: a DiT run spends most of a naive step in the frozen VAE encoder and the frozen
T5. Both are pure functions of (file, clip window, model), so they are computed once and stored: for each
clip the posterior's mean and std (a fresh latent is sampled from them every step, so the cache does not
freeze the VAE's noise), and for each distinct caption its T5 states cut to their true length. Layout:
``<cache_dir>/<kind>-<fingerprint>/`` holds ``shard-*.safetensors`` files and ``index.json`` (entry ->
shard). An entry's name hashes the item's key (file, size, mtime, window, bucket); the folder's
fingerprint hashes the model's config and weights, so another model never reads stale entries. Shards and
the index are written atomically: an interrupted precomputation loses only its last shard.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

from videogen.atomic import write_atomic
from videogen.data.footage import BucketBatchSampler, FootageDataset, collate
from videogen.errors import ConfigError, ResourceError
from videogen.models.text import encode_states, tokenize
from videogen.train.config import TrainConfig, parse_resolution
from videogen.train.components import Components


class ShapesClips(torch.utils.data.Dataset):
    """The shapes world (``videogen.data.shapes``) as a clip dataset of one bucket."""

    def __init__(self, num_clips: int, *, seed: int, size: int, num_frames: int, crop: int | None = None):
        from videogen.data.shapes import ShapesDataset

        if crop is not None and not 16 <= crop <= size:
            raise ConfigError(f"data.crop: {crop} must be between 16 and the canvas side {size}")
        self.world = ShapesDataset(num_clips, seed=seed, split="train", size=size, num_frames=num_frames)
        self.seed = seed
        self.crop = crop
        side = crop or size
        self.buckets = [(num_frames, side, side)] * num_clips
        self.keys = [f"shapes|seed={seed}|{i}|{size}x{size}x{num_frames}" + (f"|crop={crop}" if crop else "")
                     for i in range(num_clips)]

    @property
    def captions(self) -> list[str]:
        return [self.world.spec(i).caption for i in range(len(self))]

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> dict:
        video, caption = self.world[index]
        if self.crop is not None:  # a random window, a pure function of (seed, index) like the clip itself
            size = video.shape[-1]
            y, x = np.random.default_rng([self.seed, index, 1]).integers(0, size - self.crop + 1, size=2)
            video = video[..., y : y + self.crop, x : x + self.crop]
        return {"video": video, "caption": caption, "key": self.keys[index]}


def build_dataset(cfg: TrainConfig):
    """The clips ``cfg.data`` describes: a footage folder, or the shapes world."""
    d = cfg.data
    if d.kind == "shapes":
        return ShapesClips(d.shapes_samples, seed=cfg.seed, size=d.shapes_size, num_frames=max(d.frames), crop=d.crop)
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


SHARD_ENTRIES = 256  # entries per shard: large enough for few files, small enough to lose little


def fingerprint(*modules: torch.nn.Module, extra: str = "") -> str:
    """A hash of modules' configs and weights: which model a cache entry came from."""
    h = hashlib.sha256(extra.encode())
    for module in modules:
        config = getattr(module, "config", None) or {}
        config = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        h.update(json.dumps(config, sort_keys=True, default=str).encode())
        for name, tensor in sorted(module.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def entry_name(key: str) -> str:
    return hashlib.sha1(key.encode()).hexdigest()[:24]


class TensorCache:
    """Named groups of tensors in safetensors shards: ``cache[key] -> {"mean": ..., "std": ...}``."""

    def __init__(self, folder: str | Path, *, open_files: int = 8):
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ResourceError(f"{self.folder}: cannot create the cache folder ({e.strerror})") from None
        index = self.folder / "index.json"
        self.index: dict[str, str] = json.loads(index.read_text()) if index.is_file() else {}
        self._open: OrderedDict[str, object] = OrderedDict()
        self._open_files = open_files

    def __contains__(self, key: str) -> bool:
        return entry_name(key) in self.index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key: str) -> dict[str, torch.Tensor]:
        name = entry_name(key)
        handle = self._handle(self.index[name])
        prefix = f"{name}."
        return {k[len(prefix) :]: handle.get_tensor(k) for k in handle.keys() if k.startswith(prefix)}

    def _handle(self, shard: str):
        from safetensors import safe_open

        if shard not in self._open:
            self._open[shard] = safe_open(str(self.folder / shard), framework="pt")
            if len(self._open) > self._open_files:
                self._open.popitem(last=False)
        self._open.move_to_end(shard)
        return self._open[shard]

    def write(self, entries: dict[str, dict[str, torch.Tensor]]) -> None:
        """Store a shard of entries, then publish them in the index."""
        from safetensors.torch import save_file

        if not entries:
            return
        shard = f"shard-{len(set(self.index.values())):05d}-{os.getpid()}.safetensors"
        flat = {
            f"{entry_name(key)}.{part}": t.detach().to("cpu").contiguous()
            for key, parts in entries.items()
            for part, t in parts.items()
        }
        write_atomic(self.folder / shard, lambda p: save_file(flat, str(p)))
        self.index.update({entry_name(key): shard for key in entries})
        write_atomic(self.folder / "index.json", lambda p: p.write_text(json.dumps(self.index)))


# ------------------------------------------------------------------------------------------ filling


def fill(
    cache: TensorCache,
    keys: Iterable[str],
    compute: Callable[[list[str]], dict[str, dict[str, torch.Tensor]]],
    *,
    batch: int = 1,
    desc: str = "caching",
    show: bool = True,
) -> int:
    """Compute the entries ``cache`` lacks, ``batch`` keys per call of ``compute``; returns how many.

    ``compute(keys)`` returns ``{key: {part: tensor}}``. A tqdm bar shows progress; entries go to disk
    every `SHARD_ENTRIES`, so an interruption keeps what was done.
    """
    from tqdm.auto import tqdm

    missing = list(dict.fromkeys(k for k in keys if k not in cache))
    pending: dict[str, dict[str, torch.Tensor]] = {}
    with tqdm(total=len(missing), desc=desc, unit="item", disable=not show or not missing) as bar:
        for i in range(0, len(missing), batch):
            pending.update(compute(missing[i : i + batch]))
            bar.update(len(missing[i : i + batch]))
            if len(pending) >= SHARD_ENTRIES:
                cache.write(pending)
                pending = {}
    cache.write(pending)
    return len(missing)


class CachedClips(torch.utils.data.Dataset):
    """A clip dataset seen through the cache: item ``i`` is ``{"mean", "std", "caption", "key"}``.

    ``mean`` and ``std`` are the VAE posterior's (C, T', H', W'); the trainer samples a latent from them
    every step.
    """

    def __init__(self, captions: list[str], keys: list[str], latents: TensorCache):
        self.captions, self.keys, self.latents = captions, keys, latents

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> dict:
        entry = self.latents[self.keys[index]]
        return {"mean": entry["mean"], "std": entry["std"], "caption": self.captions[index], "key": self.keys[index]}


def collate_cached(items: list[dict]) -> dict:
    """Stack a batch of cached clips: ``mean``/``std`` (B, C, T', H', W'), ``caption``/``key`` lists."""
    return {
        "mean": torch.stack([it["mean"] for it in items]),
        "std": torch.stack([it["std"] for it in items]),
        "caption": [it["caption"] for it in items],
        "key": [it["key"] for it in items],
    }




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
        states = encode_states(text_encoder, tokens["input_ids"].to(device), tokens["attention_mask"].to(device))
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
