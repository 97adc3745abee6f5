"""The precomputation cache: VAE posteriors and text states computed once, kept in safetensors shards.

A DiT run spends most of a naive step in the frozen VAE encoder and the frozen T5. Both are pure
functions of (file, clip window, model), so they are computed once and stored: for each clip the
posterior's mean and std (a fresh latent is sampled from them every step, so the cache does not freeze
the VAE's noise), and for each distinct caption its T5 states cut to their true length.

Layout: ``<cache_dir>/<kind>-<fingerprint>/`` holds ``shard-NNNNN.safetensors`` files and ``index.json``
(entry -> shard). An entry's name is a hash of the item's key (file, size, mtime, window, bucket); the
folder's fingerprint hashes the model's config and weights, so another model never reads stale entries.
Shards and the index are written atomically, so an interrupted precomputation loses only its last shard.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from videogen.errors import ResourceError

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


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


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
        _atomic_write(self.folder / shard, lambda p: save_file(flat, str(p)))
        self.index.update({entry_name(key): shard for key in entries})
        _atomic_write(self.folder / "index.json", lambda p: p.write_text(json.dumps(self.index)))


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
