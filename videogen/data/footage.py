"""The footage dataset: a folder of videos and images with captions, cut into bucketed training clips.

Captions come from a ``metadata.csv`` or ``metadata.jsonl`` at the folder's root (columns ``path`` and
``caption``, paths relative to the folder), or else from a sidecar ``.txt`` of the same name beside each
file. Each video yields clips of ``4k + 1`` frames at a chosen rate: the longest length bucket that fits,
one clip per file or one every ``stride`` frames. Images are 1-frame clips. Each clip is resized to cover
the resolution bucket nearest its aspect ratio and centre-cropped into it.

Files that cannot be used (unreadable, too short, no caption) are skipped with a warning and counted in
``FootageDataset.skipped``; a folder with no usable clip at all is an `InputError`.

Batches: clips of different lengths and resolutions cannot be stacked into one tensor, so each clip has a
bucket (its (frames, height, width)) and `BucketBatchSampler` shuffles within buckets, cuts them into
batches and shuffles the batches (the aspect-ratio bucketing of NovelAI, musubi-tuner and the LTX-Video
trainer). The order is a pure function of (seed, epoch), so a resumed run replays exactly the batches an
uninterrupted one would have seen.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from videogen.errors import InputError, VideogenError
from videogen.frames import centre_crop, to_video_tensor
from videogen.io import probe_video, read_video

log = logging.getLogger(__name__)

VIDEO_EXTS = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".gif"}
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
METADATA_FILES = ("metadata.csv", "metadata.jsonl")


@dataclass(frozen=True)
class Clip:
    """One training sample: a window of one file, and the bucket it is cropped into."""

    path: Path
    caption: str
    start: float  # seconds into the file
    fps: float  # rate the frames are sampled at
    num_frames: int  # 4k+1; 1 for an image
    size: tuple[int, int]  # (H, W) of the resolution bucket
    read_size: tuple[int, int]  # (H, W) the frames are resized to before the centre crop
    key: str  # identity for the latent cache: file, its version, the window and the bucket

    @property
    def bucket(self) -> tuple[int, int, int]:
        return (self.num_frames, *self.size)


# ------------------------------------------------------------------------------------ finding captions


def _metadata_rows(root: Path) -> list[tuple[str, str]] | None:
    """(path, caption) rows of the folder's metadata file, or None when it has none."""
    for name in METADATA_FILES:
        file = root / name
        if file.is_file():
            rows = _read_jsonl(file) if name.endswith(".jsonl") else _read_csv(file)
            return [(str(r["path"]), str(r["caption"])) for r in rows]
    return None


def _read_csv(file: Path) -> list[dict]:
    with open(file, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"path", "caption"} - set(reader.fieldnames or ())
        if missing:
            raise InputError(f"{file}: missing column(s) {', '.join(sorted(missing))} (need path, caption)")
        return list(reader)


def _read_jsonl(file: Path) -> list[dict]:
    rows = []
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{file}:{number}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict) or not {"path", "caption"} <= row.keys():
            raise InputError(f"{file}:{number}: each line needs \"path\" and \"caption\"")
        rows.append(row)
    return rows


def find_footage(root: Path) -> tuple[list[tuple[Path, str]], list[tuple[Path, str]]]:
    """(file, caption) pairs of a folder, and (file, reason) for each media file that has no caption."""
    rows = _metadata_rows(root)
    if rows is not None:
        return [(root / path, caption) for path, caption in rows], []
    found, skipped = [], []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXTS | IMAGE_EXTS):
        sidecar = path.with_suffix(".txt")
        if sidecar.is_file():
            found.append((path, sidecar.read_text(encoding="utf-8").strip()))
        else:
            skipped.append((path, f"no caption (add {sidecar.name} or a metadata.csv)"))
    return found, skipped


# ----------------------------------------------------------------------------------- cutting into clips


def nearest_bucket(height: int, width: int, sizes: list[tuple[int, int]]) -> tuple[int, int]:
    """The resolution bucket whose aspect ratio is nearest the source's (in log ratio)."""
    aspect = math.log(height / width)
    return min(sizes, key=lambda s: abs(math.log(s[0] / s[1]) - aspect))


def cover_size(height: int, width: int, bucket: tuple[int, int]) -> tuple[int, int]:
    """The smallest size with the source's aspect ratio that covers ``bucket`` (then centre-cropped)."""
    scale = max(bucket[0] / height, bucket[1] / width)
    return max(bucket[0], math.ceil(height * scale - 1e-6)), max(bucket[1], math.ceil(width * scale - 1e-6))


def _windows(available: int, length: int, stride: int) -> list[int]:
    """First frames of the clips of one video: one clip at 0, or one every ``stride`` frames."""
    if stride <= 0:
        return [0]
    return list(range(0, available - length + 1, stride))


def plan_clips(path: Path, caption: str, root: Path, *, frames, sizes, fps, stride) -> list[Clip]:
    """The clips of one file; raises `VideogenError` when it is unreadable or too short."""
    info = probe_video(path)
    bucket = nearest_bucket(info.height, info.width, sizes)
    read_size = cover_size(info.height, info.width, bucket)
    stat = path.stat()
    identity = f"{path.relative_to(root).as_posix()}|{stat.st_size}|{stat.st_mtime_ns}"
    if info.is_image or info.frames == 1:
        return [Clip(path, caption, 0.0, info.fps, 1, bucket, read_size, f"{identity}|image|{bucket[0]}x{bucket[1]}")]
    rate = fps or info.fps
    available = int(math.floor(info.frames * rate / info.fps + 1e-6))
    fitting = [n for n in frames if n <= available]
    if not fitting:
        raise InputError(f"{path}: too short ({available} frames at {rate:g} fps, the shortest clip is {min(frames)})")
    length = max(fitting)
    return [
        Clip(path, caption, first / rate, rate, length, bucket, read_size,
             f"{identity}|t={first / rate:.6f}|n={length}|fps={rate:.6f}|{bucket[0]}x{bucket[1]}")
        for first in _windows(available, length, stride)
    ]


# --------------------------------------------------------------------------------------------- dataset


class FootageDataset(torch.utils.data.Dataset):
    """Clips of a footage folder; item ``i`` is ``{"video": (3, T, H, W) in [-1, 1], "caption", "key"}``.

    Args:
        root: the folder.
        frames: clip-length buckets, each ``4k + 1``.
        sizes: resolution buckets ``(H, W)``.
        fps: rate clips are resampled to; None keeps each file's own.
        stride: frames between clip starts within a video; 0 gives one clip per video.
    """

    def __init__(self, root, *, frames=(17,), sizes=((64, 64),), fps=None, stride=0):
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(f"{self.root}: {'not a folder' if self.root.exists() else 'no such folder'}")
        pairs, self.skipped = find_footage(self.root)
        self.clips: list[Clip] = []
        for path, caption in pairs:
            try:
                self.clips += plan_clips(path, caption, self.root, frames=sorted(frames), sizes=list(sizes),
                                         fps=fps, stride=stride)
            except VideogenError as e:
                self.skipped.append((path, str(e)))
        for path, reason in self.skipped:
            log.warning("skipped %s: %s", path, reason)
        if not self.clips:
            raise InputError(
                f"{self.root}: no usable clip ({len(pairs)} captioned file(s), {len(self.skipped)} skipped; "
                "expected videos or images with .txt captions or a metadata.csv/metadata.jsonl)"
            )

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def buckets(self) -> list[tuple[int, int, int]]:
        """(frames, height, width) of each clip, for `BucketBatchSampler`."""
        return [c.bucket for c in self.clips]

    @property
    def keys(self) -> list[str]:
        """Each clip's identity for the latent cache (file, size, mtime, window, bucket)."""
        return [c.key for c in self.clips]

    @property
    def captions(self) -> list[str]:
        return [c.caption for c in self.clips]

    def __getitem__(self, index: int) -> dict:
        clip = self.clips[index]
        video = read_video(clip.path, start=clip.start, max_frames=clip.num_frames, fps=clip.fps,
                           size=clip.read_size)
        frames = centre_crop(video.frames, *clip.size)
        if len(frames) < clip.num_frames:  # rounding at the very end of a file: hold the last frame
            frames = np.concatenate([frames, np.repeat(frames[-1:], clip.num_frames - len(frames), 0)])
        return {"video": to_video_tensor(frames), "caption": clip.caption, "key": clip.key}  # (3, T, H, W)


def collate(items: list[dict]) -> dict:
    """Stack a batch of one bucket: ``video`` (B, 3, T, H, W), ``caption`` and ``key`` lists."""
    return {
        "video": torch.stack([it["video"] for it in items]),
        "caption": [it["caption"] for it in items],
        "key": [it["key"] for it in items],
    }


# -------------------------------------------------------------------------------------------- batching


def epoch_batches(buckets: Sequence[Hashable], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """All batches of one epoch, in order: indices grouped by bucket, shuffled with a (seed, epoch) RNG.

    A bucket's last batch may be short; it is kept so that small buckets still train.
    """
    rng = np.random.Generator(np.random.PCG64([seed, epoch]))
    groups: dict[Hashable, list[int]] = {}
    for index, bucket in enumerate(buckets):
        groups.setdefault(bucket, []).append(index)
    batches = []
    for members in groups.values():  # dict order = order of first appearance: deterministic
        members = rng.permutation(members).tolist()
        batches += [members[i : i + batch_size] for i in range(0, len(members), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


class BucketBatchSampler(torch.utils.data.Sampler):
    """Batches of indices for one process of ``num_replicas``, each batch from one bucket.

    Process ``rank`` takes every ``num_replicas``-th batch of the epoch, and the epoch is cut to a
    multiple of ``num_replicas`` so that every process runs the same number of steps. ``set_epoch`` and
    ``skip`` position the sampler; both are part of a checkpoint's data state.
    """

    def __init__(
        self,
        buckets: Sequence[Hashable],
        batch_size: int,
        *,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ):
        self.buckets = list(buckets)
        self.batch_size = batch_size
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.start = 0
        total = len(epoch_batches(self.buckets, batch_size, seed, 0))
        if total < num_replicas:
            raise InputError(
                f"only {total} batch(es) of {batch_size} in the data, fewer than the {num_replicas} processes"
            )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.start = 0

    def skip(self, batches: int) -> None:
        """Start the current epoch after its first ``batches`` batches (resuming mid-epoch)."""
        self.start = batches

    def batches(self, epoch: int) -> list[list[int]]:
        """This process's batches of ``epoch``."""
        every = epoch_batches(self.buckets, self.batch_size, self.seed, epoch)
        usable = len(every) - len(every) % self.num_replicas
        return every[self.rank : usable : self.num_replicas]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches(self.epoch)[self.start :]

    def __len__(self) -> int:
        return len(self.batches(self.epoch)) - self.start
