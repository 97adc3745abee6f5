"""LoRA on the DiT for training: adapters injected through PEFT, and saved as one file in diffusers' format.

The adapters sit on the attention projections and feed-forward linears of each block (Hu et al. 2021):
``W x + (alpha / r) B A x``. The saved ``lora.safetensors`` is exactly what diffusers writes for a Wan
transformer (the format `videogen.models.lora` describes, reads and merges for generation), so diffusers'
``WanPipeline.load_lora_weights`` takes the file as is. A two-expert model (Wan2.2 A14B) gets one file per
expert (`LORA_FILES`), each recording its expert in the header.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from videogen.atomic import write_atomic
from videogen.errors import ModelError
from videogen.models.lora import EXPERT_KEY, EXPERTS, METADATA_KEY, PREFIX
from videogen.train.config import LoRAConfig

ADAPTER = "default"  # PEFT's adapter name, dropped from the saved keys
LORA_FILES = ("lora.safetensors", "lora_2.safetensors")  # a run's file for each expert: transformer, transformer_2


def add_lora(transformer: torch.nn.Module, cfg: LoRAConfig) -> list[str]:
    """Inject LoRA adapters into ``transformer`` in place; freeze everything else.

    Returns the names of the adapted linears; an empty match is a `ModelError` (the targets name no
    module of this network).
    """
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                        target_modules=list(cfg.targets), init_lora_weights=True)
    transformer.requires_grad_(False)
    try:
        inject_adapter_in_model(config, transformer, adapter_name=ADAPTER)
    except ValueError as e:
        raise ModelError(f"lora.targets {list(cfg.targets)}: no matching linear in the DiT ({e})") from None
    for name, param in transformer.named_parameters():
        param.requires_grad_(".lora_" in name)
    return sorted({n.split(".lora_")[0] for n, _ in transformer.named_parameters() if ".lora_" in n})


def lora_state_dict(transformer: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The adapters' weights under diffusers' names: ``transformer.<module>.lora_A.weight``."""
    out = {}
    for name, param in transformer.state_dict().items():
        if ".lora_" in name:
            out[PREFIX + name.replace(f".{ADAPTER}.", ".")] = param.detach().to("cpu").contiguous()
    return out


def save_lora(transformer: torch.nn.Module, cfg: LoRAConfig, path: str | Path, *, expert: str | None = None) -> Path:
    """Write ``lora.safetensors`` atomically (temp file in the same folder, then rename).

    expert: the component the adapters belong to (``transformer`` or ``transformer_2``), recorded in the header
    for a two-expert model; None records nothing (a one-transformer model).
    """
    from safetensors.torch import save_file

    path = Path(path)
    weights = lora_state_dict(transformer)
    if not weights:
        raise ModelError("the transformer has no LoRA adapters to save")
    if expert is not None and expert not in EXPERTS:
        raise ModelError(f"unknown expert {expert!r}: one of {', '.join(EXPERTS)}")
    meta = {f"{PREFIX}r": cfg.rank, f"{PREFIX}lora_alpha": cfg.alpha,
            f"{PREFIX}target_modules": sorted(set(cfg.targets))}
    header = {"format": "pt", METADATA_KEY: json.dumps(meta, sort_keys=True)}
    if expert is not None:
        header[EXPERT_KEY] = expert
    write_atomic(path, lambda tmp: save_file(weights, str(tmp), metadata=header))
    return path
