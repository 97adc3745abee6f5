"""Validation videos written during a run, so progress can be watched, not only read off a loss curve.

- DiT runs: one MP4 per configured prompt, sampled with the pipeline (the same code ``videogen generate``
  runs) from the weights being trained, with a fixed seed so successive videos are comparable.
- VAE runs: the first clip of the data beside its reconstruction (left: input, right: output).

Files go to ``RUN/validation/step-NNNNNNN[-k].mp4``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch

from videogen.io import write_video
from videogen.train.config import TrainConfig


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """(3, T, H, W) in [-1, 1] -> uint8 (T, H, W, 3)."""
    return ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0).cpu().numpy()


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
    with evaluating(vae):
        recon = vae.decode(vae.encode(video[None].to(vae.device, vae.dtype)).mean)[0]
    both = np.concatenate([to_uint8(video), to_uint8(recon)], axis=2)  # (T, H, 2W, 3)
    return write_video(path, both, fps, overwrite=True)


def scheduler_config(cfg: TrainConfig) -> dict:
    """The model folder's scheduler, or Wan2.1's (UniPC in flow mode) for a model trained from scratch."""
    import json

    if cfg.model.pretrained is not None:
        file = Path(cfg.model.pretrained) / "scheduler" / "scheduler_config.json"
        if file.is_file():
            return json.loads(file.read_text())
    return {"_class_name": "UniPCMultistepScheduler", "prediction_type": "flow_prediction",
            "use_flow_sigmas": True, "flow_shift": cfg.validation.shift, "num_train_timesteps": 1000}


def dit_videos(cfg: TrainConfig, parts, folder: Path, step: int, device) -> list[Path]:
    """One MP4 per validation prompt, from the DiT being trained."""
    from videogen.models.text import TextEncoder
    from videogen.pipeline import VideoPipeline

    v = cfg.validation
    out = []
    with evaluating(parts.dit, parts.text_encoder):
        text = TextEncoder(parts.tokenizer, parts.text_encoder, max_sequence_length=cfg.model.max_text_length,
                           device=device)
        pipe = VideoPipeline(text, parts.vae, parts.dit, scheduler_config(cfg), device=device)
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
