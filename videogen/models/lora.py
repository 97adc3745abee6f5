"""LoRA files for generation: read one in diffusers' format and merge it into a transformer's weights.

A LoRA (Hu et al. 2021) adds ``(alpha / r) B A`` to a linear's weight ``W``. The file is what diffusers writes
for a Wan transformer: keys ``transformer.blocks.{i}.attn1.to_q.lora_A.weight`` / ``.lora_B.weight`` and the
PEFT config (rank, alpha, targets) as JSON in the ``lora_adapter_metadata`` header, so diffusers'
``WanPipeline.load_lora_weights`` takes it as is. `merge_lora` folds a file into the weights
(``W += scale * alpha / r * B A``): no adapter layers at inference, no extra cost per step. Training writes
such files (`videogen.train.lora`); generation needs nothing from training to read them.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from videogen.errors import InputError, ModelError

PREFIX = "transformer."  # diffusers' pipeline-level name of the DiT
METADATA_KEY = "lora_adapter_metadata"  # diffusers.loaders.lora_base.LORA_ADAPTER_METADATA_KEY


def read_lora(path: str | Path) -> tuple[dict[str, torch.Tensor], float | None]:
    """A LoRA file's weights keyed by module name, and its alpha (None: not recorded, so alpha = r)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such LoRA file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            weights = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as e:
        raise InputError(f"{path}: not a safetensors LoRA file ({e})") from None
    alpha = json.loads(meta[METADATA_KEY]).get(f"{PREFIX}lora_alpha") if METADATA_KEY in meta else None
    weights = {k.removeprefix(PREFIX): v for k, v in weights.items()}
    if not weights or not all(".lora_A." in k or ".lora_B." in k for k in weights):
        raise ModelError(f"{path}: not a diffusers/PEFT LoRA (expected keys like blocks.0.attn1.to_q.lora_A.weight)")
    return weights, alpha


@torch.no_grad()
def merge_lora(transformer: torch.nn.Module, path: str | Path, scale: float = 1.0) -> int:
    """Merge a LoRA file into ``transformer``'s weights: ``W += scale * alpha / r * B @ A``.

    Accepts a VideoDiT, a diffusers WanTransformer3DModel, or a pipeline holding one as ``.transformer``.
    Returns the number of linears changed. A file that does not fit the network is a `ModelError`.
    """
    transformer = getattr(transformer, "transformer", transformer)
    weights, alpha = read_lora(path)
    modules = dict(transformer.named_modules())
    names = sorted({k.split(".lora_")[0] for k in weights})
    for name in names:
        linear = modules.get(name)
        down, up = weights.get(f"{name}.lora_A.weight"), weights.get(f"{name}.lora_B.weight")
        if not isinstance(linear, torch.nn.Linear) or down is None or up is None:
            raise ModelError(f"{path}: {name} is not a linear of this transformer, or its A/B pair is incomplete")
        if (up.shape[0], down.shape[1]) != tuple(linear.weight.shape):
            raise ModelError(f"{path}: {name} is {tuple(linear.weight.shape)} here, the LoRA expects "
                             f"{(up.shape[0], down.shape[1])} (a LoRA for another model size?)")
        rank = down.shape[0]
        factor = scale * (alpha if alpha is not None else rank) / rank
        delta = up.to(torch.float32) @ down.to(torch.float32)  # (out, in)
        linear.weight += (factor * delta).to(linear.weight)
    return len(names)


def parse_lora_arg(text: str) -> tuple[Path, float]:
    """``FILE[:SCALE]`` as the CLI's ``--lora`` takes it -> (path, scale)."""
    path, sep, scale = text.rpartition(":")
    if sep and path:
        try:
            return Path(path), float(scale)
        except ValueError:
            pass
    return Path(text), 1.0
