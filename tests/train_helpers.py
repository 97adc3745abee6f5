"""Helpers for the trainer's tests: tiny MP4 folders, tiny run configs, a data-parallel worker.

The tiny random Wan2.1 model folder is the session fixture ``tiny_wan_folder`` (tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from videogen.train.config import TrainConfig, validate


def moving_square(num_frames: int, height: int, width: int, *, color=(255, 64, 0), seed: int = 0) -> np.ndarray:
    """A square sliding over a smooth background: uint8 (T, H, W, 3), compressible and easy to learn."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    base = rng.integers(20, 80)
    for t in range(num_frames):
        img = np.stack([base + xx * 2, base + yy * 2, np.full_like(xx, base)], -1).clip(0, 255)
        x0 = (t * 2) % max(1, width - 8)
        img[height // 4 : height // 4 + 8, x0 : x0 + 8] = color
        frames[t] = img
    return frames


def write_mp4(path: Path, frames: np.ndarray, fps: float = 8.0) -> Path:
    """Write frames as H.264 with videogen's own writer."""
    from videogen.io import write_video

    return write_video(path, frames, fps)


def footage_folder(root: Path, *, count: int = 3, frames: int = 9, size=(32, 32), captions: str = "sidecar") -> Path:
    """``count`` MP4s with captions as sidecar .txt files or in a metadata.csv."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        name = f"clip{i}.mp4"
        write_mp4(root / name, moving_square(frames, *size, seed=i))
        caption = f"a square moving right, clip {i}"
        if captions == "sidecar":
            (root / f"clip{i}.txt").write_text(caption)
        rows.append((name, caption))
    if captions == "csv":
        import csv

        with open(root / "metadata.csv", "w", newline="") as f:
            csv.writer(f).writerows([("path", "caption"), *rows])
    return root


def tiny_config(**sections) -> TrainConfig:
    """A TrainConfig for seconds-long runs; ``sections`` override fields, e.g. ``train={"max_steps": 3}``."""
    cfg = TrainConfig()
    cfg.model.max_text_length = 16
    cfg.data.frames = [9]
    cfg.data.resolutions = ["32x32"]
    cfg.train.log_every = 1
    cfg.train.checkpoint_every = 1000
    cfg.optim.lr = 1e-3
    for section, values in sections.items():
        if not isinstance(values, dict):
            setattr(cfg, section, values)
            continue
        for key, value in values.items():
            setattr(getattr(cfg, section), key, value)
    return validate(cfg)


def ddp_worker(rank: int, world: int, port: int, cfg: TrainConfig, run: Path) -> None:
    """One process of a CPU data-parallel run (gloo); writes its final weights and its batches."""
    import json
    import os

    from safetensors.torch import save_file

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    from videogen.train.trainer import Trainer

    trainer = Trainer(cfg, run, show_progress=False)
    trainer.run()
    save_file({n: p.detach().contiguous() for n, p in trainer.trainable.items()}, str(run / f"rank{rank}.safetensors"))
    (run / f"rank{rank}.json").write_text(json.dumps({
        "processes": trainer.accelerator.num_processes,
        "batches": trainer.stream.sampler.batches(0),
    }))
