"""Tiny random models for tests and benchmarks: folders of every Wan layout, built with diffusers itself.

`build_tiny_wan_folder` assembles diffusers' own pipeline (``WanPipeline`` or ``WanImageToVideoPipeline``) from
tiny random components -- a UMT5 encoder, the byte-level tokenizer, an ``AutoencoderKLWan``, one or two
``WanTransformer3DModel``, and for the CLIP-conditioned layouts a transformers ``CLIPVisionModel`` with its
``CLIPImageProcessor`` -- and saves it, so the folder is a real diffusers checkpoint in the exact layout of the
published one (`LAYOUTS`), only small and random. Every test that loads "a Wan checkpoint" uses one of these;
nothing is downloaded.

Weights are drawn under a forked RNG from ``seed``: the same seed gives the same folder, and the
caller's global RNG is left untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from videogen.models.text import save_byte_tokenizer

# layout -> (the published model it has the layout of, its diffusers pipeline class)
LAYOUTS = {
    "t2v": ("Wan2.1 T2V 1.3B/14B", "WanPipeline"),
    "i2v": ("Wan2.1 I2V 480P/720P: CLIP image states, 36 input channels", "WanImageToVideoPipeline"),
    "flf2v": ("Wan2.1 FLF2V: I2V with first and last frame", "WanImageToVideoPipeline"),
    "ti2v": ("Wan2.2 TI2V-5B: 48-channel VAE, per-token timesteps", "WanPipeline"),
    "t2v-a14b": ("Wan2.2 T2V-A14B: two experts", "WanPipeline"),
    "i2v-a14b": ("Wan2.2 I2V-A14B: two experts, 36 input channels, no CLIP", "WanImageToVideoPipeline"),
}
BOUNDARY_RATIO = {"t2v-a14b": 0.875, "i2v-a14b": 0.9}  # as the published folders set it


@dataclass
class TinyWanConfig:
    """Sizes of a random Wan-layout model. The defaults build a ~1 MB folder that runs in milliseconds."""

    text_dim: int = 32  # d_model of the UMT5 encoder = the DiT's text_dim
    text_layers: int = 2  # UMT5 encoder blocks
    text_heads: int = 4
    vae_base_dim: int = 8  # AutoencoderKLWan base_dim (Wan2.1: 96; Wan2.2: 160)
    vae_dim_mult: list[int] = field(default_factory=lambda: [1, 1, 1, 1])  # (Wan2.1: [1, 2, 4, 4])
    dit_heads: int = 2  # num_attention_heads (Wan2.1-1.3B: 12)
    dit_head_dim: int = 12  # attention_head_dim (Wan2.1: 128)
    dit_layers: int = 2  # num_layers (Wan2.1-1.3B: 30)
    dit_ffn_dim: int = 32  # ffn_dim (Wan2.1-1.3B: 8960)
    flow_shift: float = 3.0  # the scheduler's timestep shift (Wan2.1 480p: 3.0)
    clip_dim: int = 16  # CLIP vision hidden size = the DiT's image_dim (Wan2.1 I2V: ViT-H, 1280)
    clip_image_size: int = 32  # CLIP input size (ViT-H: 224); tokens = (size / patch)^2 + 1
    clip_patch: int = 8


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


def _vae(cfg: TinyWanConfig, layout: str):
    from diffusers import AutoencoderKLWan

    common = dict(base_dim=cfg.vae_base_dim, dim_mult=cfg.vae_dim_mult, num_res_blocks=1,
                  temperal_downsample=[False, True, True])  # diffusers' (misspelt) key: 4x time, 8x space
    if layout != "ti2v":
        return AutoencoderKLWan(z_dim=16, **common).eval()
    # Wan2.2's VAE: a 2x2 patchify in front of residual stages, 48 channels, its own decoder width: 4x16x16
    return AutoencoderKLWan(z_dim=48, decoder_base_dim=2 * cfg.vae_base_dim, is_residual=True, patch_size=2,
                            in_channels=12, out_channels=12,  # RGB after the patchify, as Wan2.2 ships it
                            latents_mean=[0.0] * 48, latents_std=[1.0] * 48, scale_factor_spatial=16,
                            **common).eval()


def _transformer(cfg: TinyWanConfig, layout: str):
    from diffusers import WanTransformer3DModel

    channels = 48 if layout == "ti2v" else 16
    image = dict(image_dim=cfg.clip_dim, added_kv_proj_dim=cfg.dit_heads * cfg.dit_head_dim)
    extra = {
        "i2v": dict(in_channels=36, **image),
        "flf2v": dict(in_channels=36, pos_embed_seq_len=2 * _clip_tokens(cfg), **image),
        "i2v-a14b": dict(in_channels=36),  # mask + encoded condition frames, no CLIP
    }.get(layout, {})
    return WanTransformer3DModel(**{
        "patch_size": (1, 2, 2),
        "num_attention_heads": cfg.dit_heads,
        "attention_head_dim": cfg.dit_head_dim,
        "in_channels": channels,
        "out_channels": channels,
        "text_dim": cfg.text_dim,
        "freq_dim": 256,
        "ffn_dim": cfg.dit_ffn_dim,
        "num_layers": cfg.dit_layers,
        "cross_attn_norm": True,
        "qk_norm": "rms_norm_across_heads",
        "rope_max_seq_len": 1024,
        **extra,
    }).eval()


def _clip_tokens(cfg: TinyWanConfig) -> int:
    return (cfg.clip_image_size // cfg.clip_patch) ** 2 + 1  # patches and the class token


def _image_parts(cfg: TinyWanConfig):
    """A tiny CLIP vision tower and the processor that resizes, crops and normalizes for it."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    config = CLIPVisionConfig(hidden_size=cfg.clip_dim, intermediate_size=2 * cfg.clip_dim, num_hidden_layers=2,
                              num_attention_heads=2, image_size=cfg.clip_image_size, patch_size=cfg.clip_patch)
    processor = CLIPImageProcessor(size={"shortest_edge": cfg.clip_image_size},
                                   crop_size={"height": cfg.clip_image_size, "width": cfg.clip_image_size})
    return CLIPVisionModel(config).eval(), processor


def _scheduler(cfg: TinyWanConfig):
    from diffusers import UniPCMultistepScheduler

    # As Wan2.1-T2V-*-Diffusers ships it: UniPC integrating a flow.
    return UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=cfg.flow_shift, num_train_timesteps=1000
    )


def tiny_wan_pipeline(config: TinyWanConfig | None = None, *, seed: int = 0, tokenizer_folder: Path,
                      layout: str = "t2v"):
    """diffusers' pipeline of one of `LAYOUTS` over random components, the global RNG untouched."""
    import diffusers
    from transformers import AutoTokenizer

    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}: choose one of {', '.join(LAYOUTS)}")
    cfg = config or TinyWanConfig()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        parts = dict(text_encoder=_text_encoder(cfg), vae=_vae(cfg, layout), transformer=_transformer(cfg, layout))
        if layout in BOUNDARY_RATIO:
            parts.update(transformer_2=_transformer(cfg, layout), boundary_ratio=BOUNDARY_RATIO[layout])
        if layout in ("i2v", "flf2v"):
            parts["image_encoder"], parts["image_processor"] = _image_parts(cfg)
    if layout == "ti2v":
        parts["expand_timesteps"] = True
    pipeline_class = getattr(diffusers, LAYOUTS[layout][1])
    return pipeline_class(tokenizer=AutoTokenizer.from_pretrained(tokenizer_folder), scheduler=_scheduler(cfg),
                          **parts)


def build_tiny_wan_folder(folder: str | Path, config: TinyWanConfig | None = None, *, seed: int = 0,
                          layout: str = "t2v") -> Path:
    """Save a random pipeline of one of `LAYOUTS` (default: Wan2.1-T2V) in the diffusers layout
    (model_index.json, transformer/, vae/, text_encoder/, tokenizer/, scheduler/, and the layout's
    transformer_2/, image_encoder/, image_processor/) and return the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer_folder = save_byte_tokenizer(folder / "tokenizer")
    pipe = tiny_wan_pipeline(config, seed=seed, tokenizer_folder=tokenizer_folder, layout=layout)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder
