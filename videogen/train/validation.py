"""Validation videos, so a run's progress can be watched, not only read off a loss curve.

They are written to ``RUN/validation/step-NNNNNNN[-k].mp4``: for a DiT run one MP4 per configured prompt,
sampled by the library's pipeline (the code ``videogen generate`` runs) from the weights being trained with a
fixed seed; for a VAE run the first clip of the data beside its reconstruction.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch

from videogen.train.components import scheduler_config
from videogen.train.config import TrainConfig


@contextlib.contextmanager
def evaluating(*modules: torch.nn.Module):
    """Eval mode without gradients for the duration, then each module's training flags as they were."""
    modes = [(m, m.training, {n: p.requires_grad for n, p in m.named_parameters()}) for m in modules if m is not None]
    try:
        for m, _, _ in modes:
            m.eval()
        with torch.no_grad():
            yield
    finally:
        for m, training, grads in modes:
            m.train(training)
            for n, p in m.named_parameters():
                p.requires_grad_(grads[n])


def vae_video(vae, video: torch.Tensor, path: Path, fps: float) -> Path:
    """Input and reconstruction side by side; video (3, T, H, W) in [-1, 1]."""
    from videogen.frames import to_uint8
    from videogen.io import write_video
    from videogen.reconstruct import round_trip

    with evaluating(vae):
        recon = round_trip(vae, video)
    both = np.concatenate([to_uint8(video), to_uint8(recon)], axis=2)  # (T, H, 2W, 3)
    return write_video(path, both, fps, overwrite=True)


def dit_videos(cfg: TrainConfig, parts, folder: Path, step: int, device) -> list[Path]:
    """One MP4 per validation prompt, from the DiT being trained."""
    from videogen.models.text import TextEncoder
    from videogen.tasks import VideoPipeline

    v = cfg.validation
    out = []
    with evaluating(*parts.experts, parts.text_encoder):
        text = TextEncoder(parts.tokenizer, parts.text_encoder, max_sequence_length=cfg.model.max_text_length,
                           device=device)
        pipe = VideoPipeline(text, parts.vae, parts.dit, scheduler_config(cfg), transformer_2=parts.dit_2,
                             layout=parts.layout, device=device)
        for k, prompt in enumerate(v.prompts):
            path = folder / f"step-{step:07d}-{k}.mp4"
            pipe.generate(prompt, num_frames=v.frames, height=v.height, width=v.width, num_steps=v.steps,
                          guidance_scale=v.guidance, shift=v.shift, seed=v.seed, output=path, overwrite=True,
                          progress=False)
            out.append(path)
    return out


def write_validation(cfg: TrainConfig, parts, dataset, output: Path, step: int, device) -> list[Path]:
    """The validation videos of ``step`` (main process only); none for a DiT run without prompts."""
    folder = output / "validation"
    folder.mkdir(parents=True, exist_ok=True)
    if cfg.task == "vae":
        fps = cfg.data.fps or 8.0
        return [vae_video(parts.vae, dataset[0]["video"], folder / f"step-{step:07d}.mp4", fps)]
    if not cfg.validation.prompts:
        return []
    return dit_videos(cfg, parts, folder, step, device)
