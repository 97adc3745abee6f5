"""Training state: AdamW, the learning-rate schedule, the EMA, and checkpoints of all of it.

A checkpoint is a folder ``RUN/checkpoints/step-NNNNNNN/`` holding everything a run needs to continue as
if it had never stopped:

- ``trainable.safetensors``: the trained parameters (all of them, or only the LoRA adapters);
- ``ema.safetensors``: their moving average, when the run keeps one;
- ``optimizer.pt``, ``scheduler.pt``: AdamW moments and the learning-rate schedule's position;
- ``rng-<rank>.pt``: each process's noise generator and torch's global RNG;
- ``state.json``: step and data position (epoch, batch).

It is assembled in a hidden staging folder and renamed into place, so a crash mid-write never leaves a
half checkpoint that ``--resume`` would pick; checkpoints beyond the newest K are then removed. The staging
folder is not `videogen.atomic.staged_folder`'s: every process writes its own ``rng-<rank>.pt`` into it
between barriers, so its name must be one all processes know in advance (``.step-NNNNNNN.tmp``), and only the
main process renames it, after the last barrier.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import torch

from videogen.errors import InputError, ModelError
from videogen.train.config import OptimConfig

# ------------------------------------------------------------------------------------------ optimiser


def make_optimizer(params: list[torch.nn.Parameter], cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW (Loshchilov & Hutter 2019) over the trainable parameters; no decay on biases and norms."""
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)


def lr_factor(step: int, *, warmup: int, total: int, floor: float) -> float:
    """Multiplier of the peak rate at ``step``: linear warm-up, then half a cosine down to ``floor``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int):
    def factor(step: int) -> float:
        return lr_factor(step, warmup=cfg.warmup_steps, total=total_steps, floor=cfg.min_lr_ratio)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class EMA:
    """Exponential moving average of parameters, in fp32 (Polyak & Juditsky 1992; as in DiT and EDM).

    The decay warms up as ``min(decay, (1 + n) / (10 + n))`` so early weights, far from the final ones,
    fade quickly.
    """

    def __init__(self, named_params: dict[str, torch.nn.Parameter], decay: float):
        self.decay = decay
        self.updates = 0
        self.shadow = {name: p.detach().float().clone() for name, p in named_params.items()}

    @torch.no_grad()
    def update(self, named_params: dict[str, torch.nn.Parameter]) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for name, p in named_params.items():
            self.shadow[name].lerp_(p.detach().float(), 1.0 - d)

    @torch.no_grad()
    def copy_to(self, named_params: dict[str, torch.nn.Parameter]) -> None:
        for name, p in named_params.items():
            p.copy_(self.shadow[name].to(p.dtype))

    def state_dict(self) -> dict:
        return {"updates": self.updates, "decay": self.decay, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.updates = state["updates"]
        self.decay = state["decay"]
        for name, t in state["shadow"].items():
            self.shadow[name].copy_(t)


# ----------------------------------------------------------------------------------------- checkpoints


PATTERN = re.compile(r"^step-(\d{7,})$")


def checkpoints(run: Path) -> list[Path]:
    """A run's complete checkpoints, oldest first."""
    folder = run / "checkpoints"
    found = [p for p in folder.glob("step-*") if p.is_dir() and PATTERN.match(p.name)] if folder.is_dir() else []
    return sorted(found, key=lambda p: int(PATTERN.match(p.name).group(1)))


def latest(run: Path) -> Path | None:
    found = checkpoints(run)
    return found[-1] if found else None


def staging_folder(run: Path, step: int) -> Path:
    """Where the checkpoint of ``step`` is assembled before the rename (every process writes into it)."""
    return run / "checkpoints" / f".step-{step:07d}.tmp"


def rng_state(generator: torch.Generator) -> dict:
    state = {"generator": generator.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(generator: torch.Generator, state: dict) -> None:
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def write_rank_state(staging: Path, rank: int, generator: torch.Generator) -> None:
    """Each process's own RNG state (all processes call this)."""
    staging.mkdir(parents=True, exist_ok=True)
    torch.save(rng_state(generator), staging / f"rng-{rank}.pt")


def write_shared_state(staging: Path, *, trainable, ema, optimizer, scheduler, state: dict) -> None:
    """The state every process shares (the main process calls this)."""
    from safetensors.torch import save_file

    staging.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in trainable.items()}, str(staging / "trainable.safetensors"))
    if ema is not None:
        ema_state = ema.state_dict()
        save_file(ema_state.pop("shadow"), str(staging / "ema.safetensors"))
        state = {**state, "ema": ema_state}
    torch.save(optimizer.state_dict(), staging / "optimizer.pt")
    torch.save(scheduler.state_dict(), staging / "scheduler.pt")
    (staging / "state.json").write_text(json.dumps(state, indent=2))


def publish(run: Path, staging: Path, step: int, keep: int) -> Path:
    """Rename the staged checkpoint into place, then drop all but the newest ``keep``."""
    final = run / "checkpoints" / f"step-{step:07d}"
    if final.exists():
        shutil.rmtree(final)
    staging.replace(final)
    for old in checkpoints(run)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def read_checkpoint(folder: Path, rank: int) -> dict:
    """Everything in a checkpoint, for one process."""
    from safetensors.torch import load_file

    try:
        out = {
            "state": json.loads((folder / "state.json").read_text()),
            "trainable": load_file(str(folder / "trainable.safetensors")),
            "optimizer": torch.load(folder / "optimizer.pt", weights_only=True),
            "scheduler": torch.load(folder / "scheduler.pt", weights_only=True),
        }
        rng = folder / f"rng-{rank}.pt"
        out["rng"] = torch.load(rng, weights_only=True) if rng.is_file() else None
        ema = folder / "ema.safetensors"
        out["ema"] = load_file(str(ema)) if ema.is_file() else None
    except (OSError, ValueError, RuntimeError) as e:
        raise ModelError(f"{folder}: unreadable checkpoint ({e})") from None
    return out


def find_resume(run: Path) -> Path:
    """The checkpoint ``--resume`` continues from; a run without one is an `InputError`."""
    found = latest(run)
    if found is None:
        raise InputError(f"{run}: no checkpoint to resume from (expected {run / 'checkpoints'}/step-*)")
    return found
