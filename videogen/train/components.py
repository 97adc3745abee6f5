"""The networks a run trains or uses: loaded from a model folder, or built from the config's sizes.

A run starts from a model folder (diffusers layout: ``transformer/``, ``vae/``, ``text_encoder/``,
``tokenizer/``, ``scheduler/``; Wan2.2 A14B's ``transformer_2/`` too) or from scratch with the sizes in the config
(the demo model); a new DiT may take over a trained one's blocks (`warm_start`). New weights are drawn from the
run's seed. The folder's `videogen.modelfolder.Layout` says what the objective must know: two experts and their
boundary (Wan2.2 A14B), the first latent frame held clean at timestep 0 as its image conditioning (Wan2.2 TI2V).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from videogen.errors import ConfigError, ModelError
from videogen.modelfolder import (
    Layout,
    component_folder,
    default_scheduler_config,
    load_text_encoder,
    read_layout,
    read_scheduler_config,
)
from videogen.train.config import TI2V_P_FIRST, TrainConfig, parse_resolution, validate

log = logging.getLogger(__name__)


@dataclass
class Components:
    """The networks of a run; a frozen one is in eval mode without gradients.

    dit is the (first) transformer; dit_2 Wan2.2 A14B's low-noise expert (``transformer_2``); trained: which of
    the two train, indices into `experts`; layout: the base folder's (`videogen.modelfolder.Layout`).
    """

    dit: torch.nn.Module | None
    vae: torch.nn.Module | None
    text_encoder: torch.nn.Module | None
    tokenizer: object | None
    dit_2: torch.nn.Module | None = None
    trained: tuple[int, ...] = (0,)
    layout: Layout = field(default_factory=Layout)

    @property
    def experts(self) -> list[torch.nn.Module]:
        """The transformers, the high-noise one first."""
        return [self.dit] + ([self.dit_2] if self.dit_2 is not None else [])


def base_layout(cfg: TrainConfig) -> Layout:
    """The layout of the folder a DiT run starts from (configs only, no weights); a new DiT's is Wan2.1's.

    Models conditioned on frames through input channels or CLIP states (Wan2.1 I2V/FLF2V, Wan2.2 I2V-A14B) are
    refused: the objective gives frames as latents held clean, not as those inputs.
    """
    base = cfg.model.pretrained
    if cfg.task != "dit" or base is None or not (Path(base) / "model_index.json").is_file():
        return Layout()
    layout = read_layout(Path(base))
    if layout.condition_channels or layout.image_encoder:
        raise ModelError(f"{base}: a {layout.name} model, conditioned on frames through its input channels; "
                         "videogen trains text-to-video folders (Wan2.1 T2V, Wan2.2 TI2V-5B and T2V-A14B)")
    return layout


def trained_experts(cfg: TrainConfig, layout: Layout) -> tuple[int, ...]:
    """Which transformers a run trains (``model.experts``): indices, 0 the high-noise one, 1 ``transformer_2``."""
    if layout.experts == 1:
        if cfg.model.experts != "both":
            raise ConfigError(f"model.experts: {cfg.model.experts}: this model has one transformer (use both)")
        return (0,)
    return {"both": (0, 1), "high": (0,), "low": (1,)}[cfg.model.experts]


def build_vae(cfg: TrainConfig):
    """The run's VAE: ``model.vae`` or the base folder's, else a new one of ``model.vae_arch``'s sizes."""
    from videogen.models.vae import CausalVideoVAE

    source = cfg.model.vae or cfg.model.pretrained
    if source is not None:
        return CausalVideoVAE.from_pretrained(component_folder(source, "vae"))
    if cfg.task == "dit":
        raise ModelError("a DiT run needs a VAE: set model.pretrained or model.vae to a folder")
    arch = cfg.model.vae_arch
    return CausalVideoVAE(base_dim=arch.base_dim, z_dim=arch.z_dim, dim_mult=list(arch.dim_mult),
                          num_res_blocks=arch.num_res_blocks, attn_scales=[],
                          temperal_downsample=list(arch.temperal_downsample),
                          scale_factor_spatial=None, scale_factor_temporal=None)  # the architecture's own


def build_text_encoder(cfg: TrainConfig):
    """The run's (T5 encoder, tokenizer): the folder's, else a new UMT5 of ``model.text``'s sizes on bytes."""
    from transformers import ByT5Tokenizer, UMT5Config, UMT5EncoderModel

    source = cfg.model.text_encoder or cfg.model.pretrained
    if source is not None:
        loaded = load_text_encoder(Path(source))
        return loaded.encoder.requires_grad_(cfg.model.train_text_encoder), loaded.tokenizer
    tokenizer = ByT5Tokenizer()  # byte-level: no vocabulary file to ship
    t = cfg.model.text
    config = UMT5Config(vocab_size=len(tokenizer), d_model=t.d_model, d_kv=t.d_kv, d_ff=t.d_ff,
                        num_layers=t.num_layers, num_heads=t.num_heads, feed_forward_proj="gated-gelu",
                        dropout_rate=0.0, pad_token_id=tokenizer.pad_token_id)
    return UMT5EncoderModel(config), tokenizer


def build_dit(cfg: TrainConfig, latent_channels: int, text_dim: int):
    """The run's DiT: the base folder's, else a new one of ``model.dit``'s sizes (warm-started by ``dit_init``)."""
    from videogen.models.dit import VideoDiT

    if cfg.model.pretrained is not None:
        return VideoDiT.from_pretrained(component_folder(cfg.model.pretrained, "transformer"))
    a = cfg.model.dit
    dit = VideoDiT(num_layers=a.num_layers, num_attention_heads=a.num_attention_heads,
                   attention_head_dim=a.attention_head_dim, ffn_dim=a.ffn_dim, freq_dim=a.freq_dim,
                   text_dim=text_dim, in_channels=latent_channels, out_channels=latent_channels,
                   patch_size=tuple(a.patch_size), frame_position_dim=a.frame_position_dim)
    if cfg.model.dit_init is not None:
        warm_start(dit, VideoDiT.from_pretrained(component_folder(cfg.model.dit_init, "transformer")))
    return dit


def warm_start(model: torch.nn.Module, source: torch.nn.Module) -> list[str]:
    """Copy every tensor of ``source`` into ``model`` whose name and shape match; returns the names left new.

    This moves a trained DiT to a new VAE: with the same blocks and token grid, everything but the patch
    embedding and the output projection (whose shapes follow the latent channels and the patch) carries
    over. A source whose blocks differ is an error, not a silent fresh start.
    """
    theirs = source.state_dict()
    ours = model.state_dict()
    same = {k: v for k, v in theirs.items() if k in ours and ours[k].shape == v.shape}
    blocks = [k for k in ours if k.startswith("blocks.")]
    if not all(k in same for k in blocks):
        raise ModelError("dit_init: its transformer's blocks differ from this DiT's (layers, widths, heads): "
                         "it shares no blocks to start from")
    model.load_state_dict(same, strict=False)
    fresh = sorted(k for k in ours if k not in same)
    unused = sorted(k for k in theirs if k not in same)  # e.g. a part this DiT's config leaves out
    log.info("warm start: %d of %d tensors from the source DiT; new: %s; left out of the source: %s", len(same),
             len(ours), ", ".join(fresh) or "none", ", ".join(unused) or "none")
    return fresh


def load_components(cfg: TrainConfig) -> Components:
    """Load or build the run's networks; new weights are drawn from ``cfg.seed``, leaving global RNG alone.

    A LoRA run adapts a model: without ``model.pretrained`` it adapts the bundled demo model, and the
    folder it resolved to is written back into ``cfg`` (so the run's saved config names it), as is the
    objective's default that depends on the model (`resolve_defaults`).
    """
    if cfg.mode == "lora" and cfg.model.pretrained is None:
        from videogen.bundled import default_model_path

        cfg.model.pretrained = str(default_model_path())
    layout = base_layout(cfg)
    trained = trained_experts(cfg, layout)
    resolve_defaults(cfg, layout)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        vae = build_vae(cfg)
        if cfg.task == "vae":
            return Components(dit=None, vae=vae, text_encoder=None, tokenizer=None)
        text_encoder, tokenizer = build_text_encoder(cfg)
        dit = build_dit(cfg, vae.config.z_dim, text_encoder.config.d_model)
    vae.requires_grad_(False).eval()
    if not cfg.model.train_text_encoder:
        text_encoder.requires_grad_(False).eval()
    parts = Components(dit=dit, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, trained=trained,
                       layout=layout, dit_2=build_expert_2(cfg) if layout.experts == 2 else None)
    for i, expert in enumerate(parts.experts):
        if expert.config.text_dim != text_encoder.config.d_model:
            raise ModelError(f"the DiT takes text_dim {expert.config.text_dim}, the text encoder gives "
                             f"{text_encoder.config.d_model}")
        if i not in trained:
            expert.requires_grad_(False).eval()
    check_resolutions(cfg, vae, dit)
    return parts


def build_expert_2(cfg: TrainConfig):
    """Wan2.2 A14B's low-noise expert, the base folder's ``transformer_2/``."""
    from videogen.models.dit import VideoDiT

    return VideoDiT.from_pretrained(component_folder(cfg.model.pretrained, "transformer_2"))


def resolve_defaults(cfg: TrainConfig, layout: Layout) -> None:
    """Write the objective's model-dependent defaults into ``cfg``: ``p_first`` None is `TI2V_P_FIRST` for a Wan2.2
    TI2V folder (trained on clips whose first latent frame is given clean at timestep 0), else 0."""
    if cfg.objective.p_first is None:
        cfg.objective.p_first = TI2V_P_FIRST if layout.expand_timesteps else 0.0
    validate(cfg)


def check_resolutions(cfg: TrainConfig, vae, dit) -> None:
    """Refuse footage sizes the model cannot take: multiples of its pixels per token (32 for Wan2.2 TI2V)."""
    patch = dit.config.patch_size
    multiple = vae.spatial_compression * math.lcm(patch[1], patch[2])
    for text in cfg.data.resolutions if cfg.data.kind == "footage" else ():
        h, w = parse_resolution(text)
        if h % multiple or w % multiple:
            raise ConfigError(f"data.resolutions: {text!r}: this model takes heights and widths that are "
                              f"multiples of {multiple}")


def scheduler_config(cfg: TrainConfig) -> dict:
    """The base folder's scheduler, or Wan2.1's at the validation shift for a model trained from scratch."""
    base = None if cfg.model.pretrained is None else Path(cfg.model.pretrained)
    if base is not None and (base / "scheduler" / "scheduler_config.json").is_file():
        return read_scheduler_config(base)
    return default_scheduler_config(cfg.validation.shift)
