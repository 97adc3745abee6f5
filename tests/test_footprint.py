"""Memory estimates from a model folder's configs alone (videogen.footprint).

Two kinds of folder: tiny random ones of every Wan layout (videogen.testing), whose configs-only weight bytes
must equal those of the loaded models exactly; and real-size ones holding only the published config.json files
(no weights), whose parameter counts must come out at the published sizes and whose estimates must be sane.
"""

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from videogen.errors import ModelError
from videogen.footprint import estimate, estimate_folder, footprint_of_folder, footprint_of_modules, meta_models
from videogen.memory import GIB, module_bytes
from videogen.modelfolder import load_components
from videogen.settings import Settings


def _takes_image_states() -> bool:
    """Whether VideoDiT builds an image-conditioned transformer (Wan2.1 I2V/FLF2V: image_dim, added k/v)."""
    from videogen.models.dit import VideoDiT

    try:
        with torch.device("meta"):
            VideoDiT(num_attention_heads=2, attention_head_dim=12, num_layers=1, ffn_dim=8, text_dim=8,
                     in_channels=36, image_dim=16, added_kv_proj_dim=24)
    except ModelError:
        return False
    return True


IMAGE_DIT = _takes_image_states()
needs_image_dit = pytest.mark.skipif(not IMAGE_DIT, reason="VideoDiT does not take CLIP image states yet")


# --------------------------------------------------------------------------- tiny folders: exact bytes


LAYOUTS = ["t2v", "ti2v", "t2v-a14b", "i2v-a14b",
           pytest.param("i2v", marks=needs_image_dit), pytest.param("flf2v", marks=needs_image_dit)]


@pytest.fixture(scope="module", params=LAYOUTS)
def tiny_folder(request, tmp_path_factory):
    from videogen.testing import build_tiny_wan_folder

    return build_tiny_wan_folder(tmp_path_factory.mktemp(request.param) / "model", layout=request.param)


def _loaded_footprint(folder: Path, dtype: torch.dtype):
    """The footprint of the folder's models loaded as the pipeline loads them, and those models by name."""
    parts = load_components(folder, dtype)
    experts = [parts["transformer"]] + ([parts["transformer_2"]] if parts["transformer_2"] is not None else [])
    image = parts["image_encoder"].encoder if parts["image_encoder"] is not None else None
    models = {"text_encoder": parts["text_encoder"].encoder, "vae": parts["vae"], "image_encoder": image,
              **dict(zip(("transformer", "transformer_2"), experts))}
    footprint = footprint_of_modules(
        text_encoder=models["text_encoder"], text_tokens=parts["text_encoder"].max_sequence_length,
        vae=parts["vae"], transformers=experts, image_encoder=image,
        per_token_timesteps=parts["layout"].expand_timesteps or parts["defaults"].frame_conditioning)
    return footprint, {name: model for name, model in models.items() if model is not None}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_configs_alone_give_the_loaded_bytes_exactly(tiny_folder, dtype):
    loaded, models = _loaded_footprint(tiny_folder, dtype)
    meta = meta_models(tiny_folder, dtype)
    assert sorted(meta) == sorted(models)
    for name, model in models.items():
        assert module_bytes(meta[name]) == module_bytes(model), name
        assert all(p.device.type == "meta" for p in meta[name].parameters())
    from_configs = footprint_of_folder(tiny_folder, dtype=dtype)
    assert from_configs.weights == loaded.weights
    settings = Settings(num_frames=9, height=32, width=32)
    for offload in (False, True):
        assert estimate(from_configs, settings, offload=offload, keep_frames=True) == \
            estimate(loaded, settings, offload=offload, keep_frames=True)


def test_a_folder_whose_transformer_config_cannot_be_built_is_one_line(tmp_path):
    folder = _write_folder(tmp_path / "broken", **WAN21_T2V_14B)
    config = folder / "transformer" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "num_attention_heads": "many"}))
    with pytest.raises(ModelError, match="cannot build VideoDiT"):
        footprint_of_folder(folder, dtype=torch.bfloat16)


# --------------------------------------------------------------------------- real sizes from configs alone

# The published diffusers configs (Wan-AI/*-Diffusers and diffusers' conversion script), written out in full
# except the VAEs' per-channel latent statistics, which do not change any size.
UMT5_XXL = {"architectures": ["UMT5EncoderModel"], "model_type": "umt5", "d_model": 4096, "d_ff": 10240, "d_kv": 64,
            "num_layers": 24, "num_decoder_layers": 24, "num_heads": 64, "vocab_size": 256384,
            "feed_forward_proj": "gated-gelu", "relative_attention_num_buckets": 32,
            "relative_attention_max_distance": 128, "layer_norm_epsilon": 1e-6, "tie_word_embeddings": False}
CLIP_VIT_H = {"architectures": ["CLIPVisionModel"], "model_type": "clip_vision_model", "hidden_size": 1280,
              "intermediate_size": 5120, "num_hidden_layers": 32, "num_attention_heads": 16, "patch_size": 14,
              "image_size": 224, "projection_dim": 1024, "hidden_act": "gelu", "layer_norm_eps": 1e-5}
WAN21_VAE = {"_class_name": "AutoencoderKLWan", "base_dim": 96, "z_dim": 16, "dim_mult": [1, 2, 4, 4],
             "num_res_blocks": 2, "attn_scales": [], "temperal_downsample": [False, True, True], "dropout": 0.0}
WAN22_VAE = {**WAN21_VAE, "base_dim": 160, "decoder_base_dim": 256, "z_dim": 48, "is_residual": True,
             "in_channels": 12, "out_channels": 12, "patch_size": 2, "scale_factor_temporal": 4,
             "scale_factor_spatial": 16, "clip_output": False, "latents_mean": [0.0] * 48, "latents_std": [1.0] * 48}


def _dit(heads: int, ffn: int, layers: int, channels: int, out: int | None = None, **extra) -> dict:
    return {"_class_name": "WanTransformer3DModel", "patch_size": [1, 2, 2], "num_attention_heads": heads,
            "attention_head_dim": 128, "in_channels": channels, "out_channels": out or channels, "text_dim": 4096,
            "freq_dim": 256, "ffn_dim": ffn, "num_layers": layers, "cross_attn_norm": True,
            "qk_norm": "rms_norm_across_heads", "eps": 1e-6, "image_dim": None, "added_kv_proj_dim": None,
            "rope_max_seq_len": 1024, "pos_embed_seq_len": None, **extra}


TI2V_5B = dict(transformer=_dit(24, 14336, 30, 48), vae=WAN22_VAE, index={"expand_timesteps": True})
T2V_A14B = dict(transformer=_dit(40, 13824, 40, 16), transformer_2=_dit(40, 13824, 40, 16), vae=WAN21_VAE,
                index={"boundary_ratio": 0.875})
I2V_A14B = dict(transformer=_dit(40, 13824, 40, 36, 16), transformer_2=_dit(40, 13824, 40, 36, 16), vae=WAN21_VAE,
                index={"_class_name": "WanImageToVideoPipeline", "boundary_ratio": 0.9})
WAN21_T2V_14B = dict(transformer=_dit(40, 13824, 40, 16), vae=WAN21_VAE)
WAN21_I2V_14B = dict(transformer=_dit(40, 13824, 40, 36, 16, image_dim=1280, added_kv_proj_dim=5120),
                     vae=WAN21_VAE, image_encoder=CLIP_VIT_H,
                     index={"_class_name": "WanImageToVideoPipeline"})


def _write_folder(folder: Path, *, transformer: dict, vae: dict, transformer_2: dict | None = None,
                  image_encoder: dict | None = None, index: dict | None = None) -> Path:
    """A model folder of config.json files only, as a diffusers Wan folder lays them out (no weights)."""
    configs = {"transformer": transformer, "transformer_2": transformer_2, "vae": vae, "text_encoder": UMT5_XXL,
               "image_encoder": image_encoder}
    model_index = {"_class_name": "WanPipeline", "scheduler": ["diffusers", "UniPCMultistepScheduler"],
                   "text_encoder": ["transformers", "UMT5EncoderModel"],
                   "tokenizer": ["transformers", "T5TokenizerFast"],
                   "transformer": ["diffusers", "WanTransformer3DModel"], "vae": ["diffusers", "AutoencoderKLWan"],
                   "transformer_2": ["diffusers", "WanTransformer3DModel"] if transformer_2 else [None, None],
                   **(index or {})}
    if image_encoder:
        model_index.update(image_encoder=["transformers", "CLIPVisionModel"],
                           image_processor=["transformers", "CLIPImageProcessor"])
    for name in ("tokenizer", "scheduler", "image_processor"):
        (folder / name).mkdir(parents=True)
    for name, config in configs.items():
        if config is not None:
            (folder / name).mkdir(parents=True)
            (folder / name / "config.json").write_text(json.dumps(config))
    (folder / "model_index.json").write_text(json.dumps(model_index))
    return folder


def _params(model: torch.nn.Module) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e9


def test_published_sizes_from_configs_alone(tmp_path):
    ti2v = meta_models(_write_folder(tmp_path / "ti2v", **TI2V_5B), torch.bfloat16)
    a14b = meta_models(_write_folder(tmp_path / "a14b", **I2V_A14B), torch.bfloat16)
    assert _params(ti2v["transformer"]) == pytest.approx(5.0, rel=0.01)  # TI2V-5B
    assert _params(a14b["transformer"]) == pytest.approx(14.3, rel=0.01)  # each A14B expert
    assert _params(a14b["transformer_2"]) == _params(a14b["transformer"])
    assert _params(ti2v["text_encoder"]) == pytest.approx(5.7, rel=0.01)  # umT5-XXL's encoder
    assert _params(ti2v["vae"]) == pytest.approx(0.705, rel=0.01)  # Wan2.2's VAE (2.8 GB in fp32)
    assert _params(a14b["vae"]) == pytest.approx(0.127, rel=0.01)  # Wan2.1's (0.5 GB in fp32)
    assert all(p.device.type == "meta" for m in ti2v.values() for p in m.parameters())
    assert next(ti2v["vae"].parameters()).dtype == torch.float32  # the VAE is kept in fp32
    # bf16 weights, save the few modules diffusers keeps in fp32 (norms, modulation tables, timestep MLP)
    dit = _params(ti2v["transformer"])
    assert 2 * dit < module_bytes(ti2v["transformer"]) / 1e9 < 2.01 * dit


def _check_sane(est, weights_resident: int) -> None:
    phases = (est.encode, est.denoise, est.decode)
    assert all(weights_resident < p < 2**40 for p in phases)  # above the weights held, and finite
    assert est.peak == max(phases)


def test_wan22_ti2v_5b_at_1280x704x121_in_bf16(tmp_path):
    folder = _write_folder(tmp_path / "ti2v", **TI2V_5B)
    settings = Settings(num_frames=121, height=704, width=1280)
    whole = estimate_folder(folder, settings, dtype=torch.bfloat16, offload=False)
    offloaded = estimate_folder(folder, settings, dtype=torch.bfloat16, offload=True)
    weights = whole.weights
    assert sorted(weights) == ["text_encoder", "transformer", "vae"]
    _check_sane(whole, sum(weights.values()))
    _check_sane(offloaded, weights["vae"])
    assert offloaded.peak < whole.peak
    # 31 x 22 x 40 tokens, twice with guidance, each with its own modulation: far more than the text encoder
    assert whole.encode < whole.denoise and offloaded.encode < offloaded.denoise
    # offloaded, encoding holds the text encoder alone; denoising the transformer alone
    assert weights["text_encoder"] < offloaded.encode < weights["text_encoder"] + GIB
    assert offloaded.denoise - whole.denoise == weights["transformer"] - sum(weights.values())
    # per-token timesteps (expand_timesteps): each of the 2 x 31 x 22 x 40 tokens has its own fp32 modulation
    footprint = footprint_of_folder(folder, dtype=torch.bfloat16)
    shared = dataclasses.replace(footprint, per_token_timesteps=False)
    plain = estimate(shared, settings.resolve(footprint.geometry), offload=True, keep_frames=False)
    assert offloaded.denoise - plain.denoise == 2 * 31 * 22 * 40 * 13 * 4 * 3072


@pytest.mark.parametrize("kind", [T2V_A14B, I2V_A14B], ids=["t2v", "i2v"])
def test_wan22_a14b_at_1280x720x81_in_bf16(tmp_path, kind):
    folder = _write_folder(tmp_path / "a14b", **kind)
    settings = Settings(num_frames=81, height=720, width=1280)
    whole = estimate_folder(folder, settings, dtype=torch.bfloat16, offload=False)
    offloaded = estimate_folder(folder, settings, dtype=torch.bfloat16, offload=True)
    weights = whole.weights
    assert weights["transformer"] == weights["transformer_2"] > 28e9  # 14.3B in bf16, each
    _check_sane(whole, sum(weights.values()))
    _check_sane(offloaded, weights["vae"])
    # without offload both experts are resident; with it one at a time
    assert whole.denoise - offloaded.denoise == sum(weights.values()) - weights["transformer"]
    assert whole.peak_phase == offloaded.peak_phase == "denoise"
    assert "GiB at peak" in whole.describe() and "<- peak" in whole.report()


def test_wan21_t2v_14b_guidance_off_halves_the_denoising_working_set(tmp_path):
    folder = _write_folder(tmp_path / "t2v", **WAN21_T2V_14B)
    guided = estimate_folder(folder, Settings(height=720, width=1280), dtype=torch.bfloat16, offload=True)
    plain = estimate_folder(folder, Settings(height=720, width=1280, guidance_scale=1.0), dtype=torch.bfloat16,
                            offload=True)
    dit = guided.weights["transformer"]
    assert plain.denoise - dit < guided.denoise - dit < 2 * (plain.denoise - dit)  # latents are not doubled


@needs_image_dit
def test_wan21_i2v_14b_counts_its_clip_image_encoder(tmp_path):
    folder = _write_folder(tmp_path / "i2v", **WAN21_I2V_14B)
    footprint = footprint_of_folder(folder, dtype=torch.bfloat16)
    assert footprint.image_tokens == 257  # ViT-H/14 at 224: 16 x 16 patches and the class token
    assert footprint.weights["image_encoder"] / 2e9 == pytest.approx(0.63, rel=0.01)
    settings = Settings(height=480, width=832)
    whole = estimate(footprint, settings, offload=False, keep_frames=False)
    _check_sane(whole, sum(footprint.weights.values()))
