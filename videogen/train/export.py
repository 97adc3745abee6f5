"""What a finished run exports: a complete model folder, readable by ``videogen generate`` and by diffusers.

A run from a base folder copies it and writes the trained components over it (`save_model_folder`: both experts
of Wan2.2 A14B when both trained, ``transformer_2/`` as diffusers names it); a DiT
trained from scratch (the demo) is written whole by the library's model-folder writer (`save_new_pipeline`).
Either way the folder declares the sampling its DiT was trained for (`trained_sampling`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from videogen.atomic import staged_folder
from videogen.modelfolder import DEFAULTS_FILE, label_diffusers_classes
from videogen.train.components import Components, scheduler_config
from videogen.train.config import TrainConfig
from videogen.train.validation import evaluating


@torch.no_grad()
def measure_latent_stats(vae: torch.nn.Module, dataset, clips: int = 64) -> tuple[list, list]:
    """Per-channel mean and std of the VAE's posterior means over the first ``clips`` clips of ``dataset``.

    A VAE trained from scratch does not have Wan2.1's latent statistics; the DiT trains on
    ``normalize(z) = (z - mean) / std``, which should be about zero-mean and unit-variance for the noise
    schedule to mean what it says (the role of SD3's and Flux's shift and scaling factors). Clips are
    encoded one at a time, so buckets of different sizes mix.
    """
    device = next(vae.parameters()).device
    was_training = vae.training
    vae.eval()
    total, total_sq, count = 0.0, 0.0, 0
    for i in range(min(clips, len(dataset))):
        video = dataset[i]["video"][None].to(device)  # (1, 3, T, H, W)
        z = vae.encode(video).mean.double().transpose(0, 1).flatten(1)  # (C, T'*H'*W')
        total = total + z.sum(dim=1)
        total_sq = total_sq + z.pow(2).sum(dim=1)
        count += z.shape[1]
    vae.train(was_training)
    mean = total / count
    std = (total_sq / count - mean.pow(2)).clamp(min=1e-12).sqrt()
    return [round(v, 6) for v in mean.tolist()], [round(v, 6) for v in std.tolist()]


def trained_sampling(cfg: TrainConfig) -> dict:
    """The sampling a DiT run's objective trained, as `videogen.settings.Settings` fields for the exported folder:
    frame conditioning (known frames at timestep 0) when samples were given frames, image-first sampling
    when text-to-image batches were trained as well."""
    if cfg.task != "dit":
        return {}
    o = cfg.objective
    p_first = o.p_first or 0.0  # None: the model's default, resolved when the run loads it
    declared = {}
    if p_first > 0 or o.p_first_last > 0:
        declared["frame_conditioning"] = True
        if o.p_image > 0 and p_first > 0:
            declared["image_first"] = True
    return declared


def save_model_folder(cfg: TrainConfig, parts: Components, folder: Path) -> Path:
    """A complete model folder: the base folder's files, with the trained components written over them."""
    base = cfg.model.pretrained
    if base is None and cfg.task == "dit":
        return save_new_pipeline(cfg, parts, folder)
    names = ("transformer", "transformer_2")  # a two-expert model's trained experts, over the base folder's copy
    trained = {"vae": parts.vae} if cfg.task == "vae" else {names[i]: parts.experts[i] for i in parts.trained}
    if cfg.model.train_text_encoder:
        trained["text_encoder"] = parts.text_encoder
    with staged_folder(folder, overwrite=True) as staging:
        if base is not None:
            shutil.copytree(base, staging, dirs_exist_ok=True)
        for name, module in trained.items():
            shutil.rmtree(staging / name, ignore_errors=True)
            module.save_pretrained(staging / name)
        label_diffusers_classes(staging)
        declared = trained_sampling(cfg)
        if declared:  # what the DiT now knows, over what the base folder declared
            path = staging / DEFAULTS_FILE
            values = json.loads(path.read_text()) if path.is_file() else {}
            path.write_text(json.dumps({**values, **declared}, indent=2) + "\n")
    return folder


def save_new_pipeline(cfg: TrainConfig, parts: Components, folder: Path) -> Path:
    """A model trained from scratch (the demo) as a complete folder, written by the library's model-folder writer."""
    from videogen.models.text import TextEncoder
    from videogen.pipeline import Pipeline
    from videogen.settings import Settings

    v = cfg.validation
    defaults = Settings(num_frames=v.frames, height=v.height, width=v.width, num_steps=v.steps,
                        guidance_scale=v.guidance, shift=v.shift, fps=cfg.data.fps or 8.0, **trained_sampling(cfg))
    with evaluating(parts.dit, parts.text_encoder):
        text = TextEncoder(parts.tokenizer, parts.text_encoder, max_sequence_length=cfg.model.max_text_length)
        pipe = Pipeline(text, parts.vae, parts.dit, scheduler_config(cfg), defaults=defaults,
                        device=parts.dit.device)
        return pipe.save_pretrained(folder, overwrite=True)
