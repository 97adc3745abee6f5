"""LoRA files for generation: read one in diffusers' format and merge it into a transformer's weights.

A LoRA (Hu et al. 2021) adds ``(alpha / r) B A`` to a linear's weight ``W``. The file is what diffusers writes
for a Wan transformer: keys ``transformer.blocks.{i}.attn1.to_q.lora_A.weight`` / ``.lora_B.weight`` and the
PEFT config (rank, alpha, targets) as JSON in the ``lora_adapter_metadata`` header, so diffusers'
``WanPipeline.load_lora_weights`` takes it as is. `merge_lora` folds a file into the weights
(``W += scale * alpha / r * B A``): no adapter layers at inference, no extra cost per step. Training writes
such files (`videogen.train.lora`); generation needs nothing from training to read them.

A two-expert model (Wan2.2 A14B) takes one file per expert. Both keep diffusers' ``transformer.`` keys (diffusers
loads the low-noise expert's with ``load_lora_weights(..., load_into_transformer_2=True)``); the expert a file was
trained for is recorded in its header (`EXPERT_KEY`: ``transformer`` or ``transformer_2``), and the CLI's
``--lora FILE@low`` (`parse_lora_spec`) names it for a file that records none. A file without either goes into
``transformer``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import torch

from videogen.errors import InputError, ModelError

PREFIX = "transformer."  # diffusers' pipeline-level name of the DiT
METADATA_KEY = "lora_adapter_metadata"  # diffusers.loaders.lora_base.LORA_ADAPTER_METADATA_KEY
EXPERT_KEY = "expert"  # header entry: the pipeline component a file adapts (``transformer`` or ``transformer_2``)
EXPERTS = ("transformer", "transformer_2")  # Wan2.2 A14B's high-noise and low-noise experts, in that order
EXPERT_NAMES = {"transformer": "transformer", "high": "transformer", "transformer_2": "transformer_2",
                "low": "transformer_2"}  # what ``--lora FILE@EXPERT`` accepts


class LoraFile(NamedTuple):
    """A LoRA file's contents: weights keyed by module name, alpha (None: not recorded, so alpha = r), and the
    expert it records (None: not recorded)."""

    weights: dict[str, torch.Tensor]
    alpha: float | None
    expert: str | None


class LoraSpec(NamedTuple):
    """One ``--lora FILE[@EXPERT][:SCALE]``: the file, its scale, and the expert it names (None: the file's own)."""

    path: Path
    scale: float
    expert: str | None


def read_lora(path: str | Path) -> LoraFile:
    """A LoRA file's weights, alpha and expert (`LoraFile`); a file that is none is an `InputError` or `ModelError`."""
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
    expert = meta.get(EXPERT_KEY)
    if expert is not None and expert not in EXPERTS:
        raise ModelError(f"{path}: its header names the expert {expert!r}; expected one of {', '.join(EXPERTS)}")
    return LoraFile(weights, alpha, expert)


@torch.no_grad()
def merge_lora(transformer: torch.nn.Module, path: str | Path, scale: float = 1.0, *, expert: str | None = None) -> int:
    """Merge a LoRA file into ``transformer``'s weights: ``W += scale * alpha / r * B @ A``.

    Accepts a VideoDiT, a diffusers WanTransformer3DModel, or a pipeline holding one as ``.transformer`` (and a
    second expert as ``.transformer_2``): then the file goes into ``expert`` ("transformer"/"high",
    "transformer_2"/"low"), else the expert the file records, else ``transformer``. Returns the number of linears
    changed. A file that does not fit the network is a `ModelError`.
    """
    lora = read_lora(path)
    transformer = _expert_of(transformer, expert or lora.expert, path)
    modules = dict(transformer.named_modules())
    names = sorted({k.split(".lora_")[0] for k in lora.weights})
    for name in names:
        linear = modules.get(name)
        down, up = lora.weights.get(f"{name}.lora_A.weight"), lora.weights.get(f"{name}.lora_B.weight")
        if not isinstance(linear, torch.nn.Linear) or down is None or up is None:
            raise ModelError(f"{path}: {name} is not a linear of this transformer, or its A/B pair is incomplete")
        if (up.shape[0], down.shape[1]) != tuple(linear.weight.shape):
            raise ModelError(f"{path}: {name} is {tuple(linear.weight.shape)} here, the LoRA expects "
                             f"{(up.shape[0], down.shape[1])} (a LoRA for another model size?)")
        rank = down.shape[0]
        factor = scale * (lora.alpha if lora.alpha is not None else rank) / rank
        delta = up.to(torch.float32) @ down.to(torch.float32)  # (out, in)
        linear.weight += (factor * delta).to(linear.weight)
    return len(names)


def _expert_of(model: torch.nn.Module, expert: str | None, path) -> torch.nn.Module:
    """The transformer a file goes into: ``model`` itself, or a pipeline's ``expert`` (default ``transformer``)."""
    if not hasattr(model, "transformer"):
        return model
    name = EXPERT_NAMES.get(expert or EXPERTS[0])
    if name is None:
        raise InputError(f"{path}: unknown expert {expert!r}: choose one of {', '.join(EXPERT_NAMES)}")
    module = getattr(model, name, None)
    if module is None:
        raise InputError(f"{path}: a LoRA for {name} (the low-noise expert), and this model has one transformer")
    return module


def parse_lora_spec(text: str) -> LoraSpec:
    """``FILE[@EXPERT][:SCALE]`` as the CLI's ``--lora`` takes it -> `LoraSpec`.

    EXPERT is ``high`` (or ``transformer``) or ``low`` (or ``transformer_2``): which expert of a Wan2.2 A14B model
    the file goes into when it records none itself; an ``@`` followed by anything else is part of the file name.
    """
    path, sep, scale = text.rpartition(":")
    value = 1.0
    if sep and path:
        try:
            text, value = path, float(scale)
        except ValueError:
            pass
    name, sep, expert = text.rpartition("@")
    if sep and name and expert in EXPERT_NAMES:
        return LoraSpec(Path(name), value, EXPERT_NAMES[expert])
    return LoraSpec(Path(text), value, None)


def parse_lora_arg(text: str) -> tuple[Path, float]:
    """``FILE[@EXPERT][:SCALE]`` -> (path, scale), the expert left out (`parse_lora_spec` keeps it)."""
    spec = parse_lora_spec(text)
    return spec.path, spec.scale
