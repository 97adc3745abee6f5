"""How much memory a model folder's generation needs, from its configs alone: no weights are read.

A 14B model's folder holds tens of GB of weights, and whether a request fits a device should be known before
any of them load (``videogen generate --dry-run``), in the same numbers a loaded pipeline checks against
(`Pipeline.check_memory`). Both go through one function, `estimate`, over a `Footprint`: the bytes of each
network as loaded and the configs that size the working sets (`videogen.memory`).

- A loaded pipeline makes its footprint from its modules (`footprint_of_modules`).
- A folder's footprint is made from the same classes built on the meta device (`meta_models`): tensors with
  shapes and dtypes but no storage, so ``module_bytes`` counts what loading will allocate without reading or
  allocating anything (a 14B transformer is built in a fraction of a second). Each network gets the dtypes
  its loader gives it: the requested one, except the VAE (fp32) and the modules a library keeps in fp32
  (diffusers' ``_keep_in_fp32_modules``; transformers' for float16, and its strict list for bfloat16 too).

The phases (`videogen.memory.MemoryEstimate`), with offload each network on the device only while it works:

1. encode: the text encoder over 512 tokens per prompt (two prompts with guidance), then the CLIP image
   encoder of an image-conditioned model (Wan2.1 I2V, FLF2V);
2. denoise: one transformer's forward and the sampler's latents; a two-expert model (Wan2.2 A14B) holds both
   experts without offload, and only one at a time with it, so the larger counts;
3. decode: the streaming VAE decoder, the latents, and the frames when they are kept in memory.

Encoding given frames (image-to-video, extend) runs the VAE's streaming encoder, whose working set is of the
decoder's size; it is not a phase of its own, since decoding, which also holds the latents, is never smaller.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from videogen.errors import ModelError, VideogenError
from videogen.memory import (
    MemoryEstimate,
    dit_working_bytes,
    image_working_bytes,
    module_bytes,
    text_working_bytes,
    vae_decode_working_bytes,
)
from videogen.modelfolder import check_folder, read_defaults, read_json, read_layout
from videogen.models.text import MAX_SEQUENCE_LENGTH
from videogen.settings import Geometry, Settings

EXPERTS = ("transformer", "transformer_2")  # the high-noise expert first
# The transformers classes each encoder may be, as a folder's model_index.json names them.
ENCODER_CLASSES = {"text_encoder": ("UMT5EncoderModel", "T5EncoderModel"),
                   "image_encoder": ("CLIPVisionModel", "CLIPVisionModelWithProjection")}
LATENT_COPIES = 6  # latents the sampler holds in fp32: x, velocity, noise and the solver's history


@dataclass(frozen=True)
class Footprint:
    """What one generation's memory depends on besides its settings: the networks' bytes and sizes."""

    weights: dict[str, int]  # bytes of each network as loaded: text_encoder, vae, transformer[, _2, image_encoder]
    dit_config: Any  # the (first) transformer's config: width, feed-forward, patch, channels
    vae_config: Any  # the VAE's config: its decoder's widths
    text_config: Any  # the T5 encoder's config: heads and width
    text_tokens: int  # tokens per prompt (Wan: 512)
    geometry: Geometry  # latent shape of a clip
    dit_dtype_bytes: int  # bytes per element of the transformer's activations
    image_config: Any = None  # the CLIP vision config of an image-conditioned model
    image_tokens: int = 0  # CLIP tokens the transformer attends to per sample (257 per image)
    per_token_timesteps: bool = False  # a timestep per token (Wan2.2 TI2V, frames held at timestep 0)


# ------------------------------------------------------------------------------------------- footprints


def footprint_of_modules(*, text_encoder: torch.nn.Module, text_tokens: int, vae, transformers: Sequence,
                         image_encoder: torch.nn.Module | None = None,
                         per_token_timesteps: bool = False) -> Footprint:
    """The footprint of networks built or loaded: text_encoder and image_encoder the transformers models
    (``TextEncoder.encoder``, ``ImageEncoder.encoder``), vae a `CausalVideoVAE`, transformers the experts
    (`VideoDiT`), the high-noise one first. Meta-device modules count as loaded ones (`meta_models`)."""
    dit = transformers[0]
    weights = {"text_encoder": module_bytes(text_encoder), "vae": module_bytes(vae)}
    weights.update((name, module_bytes(model)) for name, model in zip(EXPERTS, transformers))
    if image_encoder is not None:
        weights["image_encoder"] = module_bytes(image_encoder)
    geometry = Geometry(temporal=vae.temporal_compression, spatial=vae.spatial_compression,
                        patch=tuple(dit.config.patch_size), latent_channels=vae.latent_channels)
    image = image_encoder.config if image_encoder is not None else None
    return Footprint(weights=weights, dit_config=dit.config, vae_config=vae.config, text_config=text_encoder.config,
                     text_tokens=text_tokens, geometry=geometry, dit_dtype_bytes=dit.dtype.itemsize,
                     image_config=image, image_tokens=image_tokens(dit.config, image),
                     per_token_timesteps=per_token_timesteps)


def footprint_of_folder(folder: str | Path, *, dtype: torch.dtype | None = None) -> Footprint:
    """A model folder's footprint from its configs alone, for a pipeline loaded with ``dtype``
    (`Pipeline.from_pretrained`); a folder that cannot be built is a `ModelError`."""
    folder = Path(folder)
    index = check_folder(folder)
    layout = read_layout(folder, index)
    models = meta_models(folder, dtype)
    return footprint_of_modules(
        text_encoder=models["text_encoder"], text_tokens=read_text_tokens(folder), vae=models["vae"],
        transformers=[models[name] for name in EXPERTS if name in models], image_encoder=models.get("image_encoder"),
        per_token_timesteps=layout.expand_timesteps or read_defaults(folder, index).frame_conditioning,
    )


def image_tokens(dit_config, image_config) -> int:
    """CLIP tokens per sample the transformer attends to: (size / patch)^2 + 1 per image (257 for ViT-H/14 at
    224), of one image, or two for a first-last-frame model (``pos_embed_seq_len``); 0 without an encoder."""
    if image_config is None:
        return 0
    return images_per_sample(dit_config) * ((image_config.image_size // image_config.patch_size) ** 2 + 1)


def images_per_sample(dit_config) -> int:
    """Images an image-conditioned transformer sees: a first and a last frame with ``pos_embed_seq_len``
    (FLF2V), else one."""
    return 2 if getattr(dit_config, "pos_embed_seq_len", None) else 1


def read_text_tokens(folder: Path) -> int:
    """Tokens per prompt, as `TextEncoder.from_pretrained` chooses them: the tokenizer's ``model_max_length``
    where it is at most 512 (a model trained on shorter captions), else Wan's 512."""
    path = Path(folder) / "tokenizer" / "tokenizer_config.json"
    config = read_json(path) if path.is_file() else {}
    return min(MAX_SEQUENCE_LENGTH, int(config.get("model_max_length") or MAX_SEQUENCE_LENGTH))


# ------------------------------------------------------------------------------------------- estimates


def estimate(footprint: Footprint, settings: Settings, *, offload: bool, keep_frames: bool) -> MemoryEstimate:
    """Peak memory of one sampling run by phase, weights included (see the module docstring).

    settings: the run's resolved settings (frames, height, width and whether it guides). offload: each network
    on the device only while it works. keep_frames: the decoded frames are held in memory (no output file).
    """
    fp, weights = footprint, footprint.weights
    shape = fp.geometry.latent_shape(settings.num_frames, settings.height, settings.width)
    batch = 2 if settings.guides else 1
    latents = latent_bytes(fp.dit_config, shape)
    dit = dit_working_bytes(fp.dit_config, (batch, *shape[1:]), fp.dit_dtype_bytes,
                            context_tokens=fp.text_tokens + fp.image_tokens, per_token_timesteps=fp.per_token_timesteps)
    vae = vae_decode_working_bytes(fp.vae_config, settings.height, settings.width)
    frames = settings.num_frames * settings.height * settings.width * 3 if keep_frames else 0
    everything = sum(weights.values())
    expert = max(weights[name] for name in EXPERTS if name in weights)
    return MemoryEstimate(
        encode=_encode_bytes(fp, batch, offload),
        denoise=(expert if offload else everything) + dit + latents,
        decode=(weights["vae"] if offload else everything) + vae + latents + frames,
        weights=dict(weights),
    )


def estimate_folder(folder: str | Path, settings: Settings, *, dtype: torch.dtype | None = None, offload: bool,
                    keep_frames: bool = False) -> MemoryEstimate:
    """`estimate` for a model folder from its configs alone (`footprint_of_folder`), without loading it:
    what `Pipeline.from_pretrained(folder, dtype=dtype, offload=offload)` would estimate for ``settings``,
    which are validated against the folder's geometry first (`InputError`)."""
    footprint = footprint_of_folder(folder, dtype=dtype)
    return estimate(footprint, settings.resolve(footprint.geometry), offload=offload, keep_frames=keep_frames)


def latent_bytes(dit_config, latent_shape: tuple[int, int, int, int, int]) -> int:
    """The sampler's latents, fp32: `LATENT_COPIES` of ``(1, C, T', H', W')``, plus the condition channels (mask
    and encoded frames) an image-to-video transformer takes beside them (``in_channels - out_channels``)."""
    _, channels, t, h, w = latent_shape
    condition = dit_config.in_channels - (dit_config.out_channels or dit_config.in_channels)
    return (LATENT_COPIES * channels + condition) * t * h * w * 4


def _encode_bytes(fp: Footprint, batch: int, offload: bool) -> int:
    """The encode phase: the text encoder over ``batch`` prompts, then the image encoder over its images."""
    text = text_working_bytes(fp.text_config, batch, fp.text_tokens)
    image = 0
    if fp.image_config is not None:
        image = image_working_bytes(fp.image_config, images_per_sample(fp.dit_config))
    if not offload:
        return sum(fp.weights.values()) + max(text, image)
    return max(fp.weights["text_encoder"] + text, fp.weights.get("image_encoder", 0) + image)


# ------------------------------------------------------------------------------------------- meta models


def meta_models(folder: str | Path, dtype: torch.dtype | None = None) -> dict[str, torch.nn.Module]:
    """Every network of a model folder, built on the meta device from its configs in the dtypes
    `Pipeline.from_pretrained(folder, dtype=dtype)` loads them in: ``text_encoder``, ``vae``, ``transformer``,
    and ``transformer_2`` and ``image_encoder`` where the folder has them. No weights are read; ``module_bytes``
    of each is the bytes it takes once loaded. dtype None: fp32, or an encoder's ``dtype`` in its config (what
    transformers' ``dtype="auto"`` reads)."""
    from videogen.models.dit import VideoDiT
    from videogen.models.vae import CausalVideoVAE

    folder = Path(folder)
    index = check_folder(folder)
    layout = read_layout(folder, index)
    names = EXPERTS[: layout.experts]
    models = {name: _diffusers_model(VideoDiT, folder / name, dtype) for name in names}
    models["vae"] = _diffusers_model(CausalVideoVAE, folder / "vae", torch.float32)  # as loading keeps it
    models["text_encoder"] = _transformers_model(folder, index, "text_encoder", dtype)
    if layout.image_encoder:
        models["image_encoder"] = _transformers_model(folder, index, "image_encoder", dtype)
    return models


def _diffusers_model(cls, folder: Path, dtype: torch.dtype | None) -> torch.nn.Module:
    """One of our diffusers-style classes built from ``folder/config.json`` on the meta device."""
    config = read_json(folder / "config.json")
    try:
        with torch.device("meta"):
            model = cls.from_config(config)
    except VideogenError:
        raise
    except Exception as e:  # diffusers raises TypeError or ValueError for a config our classes cannot take
        raise ModelError(f"{folder}: cannot build {cls.__name__} from its config ({_reason(e)})") from None
    # diffusers loads with a dtype as: floating tensors in it, those of `_keep_in_fp32_modules` in fp32
    return _as_loaded(model, dtype or torch.float32, cls._keep_in_fp32_modules or ())


def _transformers_model(folder: Path, index: dict, name: str, dtype: torch.dtype | None) -> torch.nn.Module:
    """The folder's ``name`` encoder (a transformers class of `ENCODER_CLASSES`) built on the meta device."""
    import transformers

    class_name = _declared_class(folder, index, name)
    cls = getattr(transformers, class_name)
    try:
        config = cls.config_class.from_pretrained(folder / name)
        with torch.device("meta"):
            model = cls(config)
    except Exception as e:  # transformers raises OSError, ValueError or TypeError for a bad config
        raise ModelError(f"{folder / name}: cannot build {class_name} from its config ({_reason(e)})") from None
    dtype = dtype or _config_dtype(config)
    # transformers keeps `_keep_in_fp32_modules` in fp32 for float16 only, its strict list for bfloat16 too
    keep = list(cls._keep_in_fp32_modules or ()) if dtype == torch.float16 else []
    if dtype in (torch.float16, torch.bfloat16):
        keep += list(getattr(cls, "_keep_in_fp32_modules_strict", None) or ())
    return _as_loaded(model, dtype, keep)


def _declared_class(folder: Path, index: dict, name: str) -> str:
    """The class model_index.json declares for component ``name`` (else its config's ``architectures``)."""
    entry = index.get(name)
    class_name = entry[1] if isinstance(entry, list) and len(entry) == 2 else None
    if class_name is None:
        class_name = (read_json(folder / name / "config.json").get("architectures") or [None])[0]
    if class_name not in ENCODER_CLASSES[name]:
        raise ModelError(f"{folder / name}: a {class_name} model; videogen runs {' or '.join(ENCODER_CLASSES[name])}")
    return class_name


def _as_loaded(model: torch.nn.Module, dtype: torch.dtype, keep_fp32: Sequence[str]) -> torch.nn.Module:
    """``model`` with the dtypes loading gives it: floating tensors in ``dtype`` (a module's own rules apply,
    such as RoPE tables that stay fp32), parameters of a module named in ``keep_fp32`` in fp32."""
    # torch's own `to`: diffusers' override warns about the modules kept in fp32, which are handled next
    torch.nn.Module.to(model, dtype)
    keep = set(keep_fp32)
    for param_name, param in model.named_parameters():
        if param.is_floating_point() and keep & set(param_name.split(".")):
            param.data = param.data.to(torch.float32)
    return model.eval().requires_grad_(False)


def _config_dtype(config) -> torch.dtype:
    """The dtype a transformers config records (``dtype`` or the older ``torch_dtype``), else fp32."""
    value = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(value, str):
        value = getattr(torch, value, None)
    return value if isinstance(value, torch.dtype) else torch.float32


def _reason(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
