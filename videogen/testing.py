"""Tiny random models for tests and benchmarks: a Wan2.1-T2V-layout folder built with diffusers itself.

`build_tiny_wan_folder` assembles diffusers' own ``WanPipeline`` from tiny random components -- a UMT5
encoder, the byte-level tokenizer, an ``AutoencoderKLWan`` and a ``WanTransformer3DModel`` -- and saves it,
so the folder is a real diffusers checkpoint in the exact layout of ``Wan-AI/Wan2.1-T2V-1.3B-Diffusers``,
only small and random. Every test that loads "a Wan checkpoint" uses one of these; nothing is downloaded.

Weights are drawn under a forked RNG from ``seed``: the same seed gives the same folder, and the
caller's global RNG is left untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from videogen.models.text import save_byte_tokenizer


@dataclass
class TinyWanConfig:
    """Sizes of a random Wan2.1-layout model. The defaults build a ~1 MB folder that runs in milliseconds."""

    text_dim: int = 32  # d_model of the UMT5 encoder = the DiT's text_dim
    text_layers: int = 2  # UMT5 encoder blocks
    text_heads: int = 4
    vae_base_dim: int = 8  # AutoencoderKLWan base_dim (Wan2.1: 96)
    vae_dim_mult: list[int] = field(default_factory=lambda: [1, 1, 1, 1])  # (Wan2.1: [1, 2, 4, 4])
    dit_heads: int = 2  # num_attention_heads (Wan2.1-1.3B: 12)
    dit_head_dim: int = 12  # attention_head_dim (Wan2.1: 128)
    dit_layers: int = 2  # num_layers (Wan2.1-1.3B: 30)
    dit_ffn_dim: int = 32  # ffn_dim (Wan2.1-1.3B: 8960)
    flow_shift: float = 3.0  # the scheduler's timestep shift (Wan2.1 480p: 3.0)


def _text_encoder(cfg: TinyWanConfig):
    from transformers import UMT5Config, UMT5EncoderModel

    config = UMT5Config(
        vocab_size=384,  # the byte-level tokenizer's ids
        d_model=cfg.text_dim,
        d_kv=cfg.text_dim // cfg.text_heads,
        d_ff=2 * cfg.text_dim,
        num_layers=cfg.text_layers,
        num_heads=cfg.text_heads,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
    )
    return UMT5EncoderModel(config).eval()


def _vae(cfg: TinyWanConfig):
    from diffusers import AutoencoderKLWan

    return AutoencoderKLWan(
        base_dim=cfg.vae_base_dim,
        z_dim=16,
        dim_mult=cfg.vae_dim_mult,
        num_res_blocks=1,
        temperal_downsample=[False, True, True],  # diffusers' (misspelt) key: 4x time, 8x space
    ).eval()


def _transformer(cfg: TinyWanConfig):
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=cfg.dit_heads,
        attention_head_dim=cfg.dit_head_dim,
        in_channels=16,
        out_channels=16,
        text_dim=cfg.text_dim,
        freq_dim=256,
        ffn_dim=cfg.dit_ffn_dim,
        num_layers=cfg.dit_layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=1024,
    ).eval()


def _scheduler(cfg: TinyWanConfig):
    from diffusers import UniPCMultistepScheduler

    # As Wan2.1-T2V-*-Diffusers ships it: UniPC integrating a flow.
    return UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=cfg.flow_shift, num_train_timesteps=1000
    )


def tiny_wan_pipeline(config: TinyWanConfig | None = None, *, seed: int = 0, tokenizer_folder: Path):
    """diffusers' ``WanPipeline`` over random components, the global RNG untouched."""
    from diffusers import WanPipeline
    from transformers import AutoTokenizer

    cfg = config or TinyWanConfig()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder, vae, transformer = _text_encoder(cfg), _vae(cfg), _transformer(cfg)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
    return WanPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=_scheduler(cfg)
    )


def build_tiny_wan_folder(folder: str | Path, config: TinyWanConfig | None = None, *, seed: int = 0) -> Path:
    """Save a random Wan2.1-T2V pipeline in the diffusers layout (model_index.json, transformer/, vae/,
    text_encoder/, tokenizer/, scheduler/) and return the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer_folder = save_byte_tokenizer(folder / "tokenizer")
    pipe = tiny_wan_pipeline(config, seed=seed, tokenizer_folder=tokenizer_folder)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder
