"""What a run trains: loading or building the networks, and the modules the objectives call.

A run starts from a model folder (diffusers layout: ``transformer/``, ``vae/``, ``text_encoder/``,
``tokenizer/``, ``scheduler/``) or from scratch with the sizes in the config (the demo model). The
objectives call one `torch.nn.Module` per step -- `FlowModel` (DiT, plus the T5 when it trains) or
`Autoencoder` (the VAE's parallel path) -- so data parallelism wraps exactly what has gradients, and
the forward that DDP/FSDP hooks into is the one that runs.

What a run writes besides checkpoints also lives here: the final model folder, and validation videos
(``RUN/validation/step-NNNNNNN[-k].mp4``) so progress can be watched, not only read off a loss curve --
for a DiT run one MP4 per configured prompt, sampled by the pipeline (the code ``videogen generate``
runs) from the weights being trained with a fixed seed; for a VAE run the first clip of the data beside
its reconstruction.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from videogen.errors import ModelError
from videogen.train.config import TrainConfig

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------- loading


def component_folder(folder: str | Path, name: str) -> Path:
    """``folder/name`` for a model folder, or ``folder`` itself when it is that component's folder."""
    folder = Path(folder)
    if (folder / name / "config.json").is_file():
        return folder / name
    if (folder / "config.json").is_file():
        return folder
    raise ModelError(f"{folder}: no {name}/ model here (expected {folder / name / 'config.json'})")


@dataclass
class Components:
    """The networks of a run; a frozen one is in eval mode without gradients."""

    dit: torch.nn.Module | None
    vae: torch.nn.Module | None
    text_encoder: torch.nn.Module | None
    tokenizer: object | None


def _vae(cfg: TrainConfig):
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


def _text(cfg: TrainConfig):
    from transformers import ByT5Tokenizer, UMT5Config, UMT5EncoderModel

    source = cfg.model.text_encoder or cfg.model.pretrained
    if source is not None:
        from videogen.models.text import TextEncoder

        folder = Path(source)
        loaded = TextEncoder.from_pretrained(folder / "tokenizer", folder / "text_encoder")
        return loaded.encoder.requires_grad_(cfg.model.train_text_encoder), loaded.tokenizer
    tokenizer = ByT5Tokenizer()  # byte-level: no vocabulary file to ship
    t = cfg.model.text
    config = UMT5Config(vocab_size=len(tokenizer), d_model=t.d_model, d_kv=t.d_kv, d_ff=t.d_ff,
                        num_layers=t.num_layers, num_heads=t.num_heads, feed_forward_proj="gated-gelu",
                        dropout_rate=0.0, pad_token_id=tokenizer.pad_token_id)
    return UMT5EncoderModel(config), tokenizer


def _dit(cfg: TrainConfig, latent_channels: int, text_dim: int):
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
    folder it resolved to is written back into ``cfg`` (so the run's saved config names it).
    """
    if cfg.mode == "lora" and cfg.model.pretrained is None:
        from videogen.bundled import default_model_path

        cfg.model.pretrained = str(default_model_path())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        vae = _vae(cfg)
        if cfg.task == "vae":
            return Components(dit=None, vae=vae, text_encoder=None, tokenizer=None)
        text_encoder, tokenizer = _text(cfg)
        dit = _dit(cfg, vae.config.z_dim, text_encoder.config.d_model)
    vae.requires_grad_(False).eval()
    if not cfg.model.train_text_encoder:
        text_encoder.requires_grad_(False).eval()
    if dit.config.text_dim != text_encoder.config.d_model:
        raise ModelError(f"the DiT takes text_dim {dit.config.text_dim}, the text encoder gives "
                         f"{text_encoder.config.d_model}")
    return Components(dit=dit, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer)


# ----------------------------------------------------------------------------------------------- text


def tokenize(tokenizer, captions: list[str], max_length: int) -> dict[str, torch.Tensor]:
    """Token ids and mask of cleaned captions, padded to ``max_length`` as the pipeline does: (B, N) each."""
    from videogen.models.text import clean_prompt

    tokens = tokenizer([clean_prompt(c) for c in captions], padding="max_length", max_length=max_length, truncation=True,
                       add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
    return {"input_ids": tokens.input_ids, "attention_mask": tokens.attention_mask}


def encode_text(text_encoder, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """T5 states with padding positions zeroed, as the Wan pipeline feeds them: (B, N, D)."""
    states = text_encoder(input_ids, attention_mask=attention_mask).last_hidden_state
    return states * attention_mask[..., None].to(states.dtype)


# ------------------------------------------------------------------------------------ trained modules


class FlowModel(torch.nn.Module):
    """The DiT objective's network: velocity of noisy latents given text (states, or tokens to encode).

    When the text encoder trains, it is a submodule here, so one DDP/FSDP wrapper covers both.
    """

    def __init__(self, dit: torch.nn.Module, text_encoder: torch.nn.Module | None = None):
        super().__init__()
        self.dit = dit
        self.text_encoder = text_encoder

    def forward(self, x_t, timesteps, *, text_states=None, input_ids=None, attention_mask=None):
        """x_t (B, C, T', H', W'), timesteps (B,) or (B, L), text_states (B, N, D) -> velocity like x_t."""
        if input_ids is not None:
            text_states = encode_text(self.text_encoder, input_ids, attention_mask)
        return self.dit(x_t, timesteps, text_states)


class Autoencoder(torch.nn.Module):
    """The VAE objective's network: encode, sample the posterior (or take its mean), decode (parallel path)."""

    def __init__(self, vae: torch.nn.Module, sample_posterior: bool = True):
        super().__init__()
        self.vae = vae
        self.sample_posterior = sample_posterior

    def forward(self, video: torch.Tensor, generator: torch.Generator):
        """video (B, 3, T, H, W) -> (reconstruction like video, posterior mean and std (B, C, T', H', W'))."""
        posterior = self.vae.encode(video)
        z = posterior.mean
        if self.sample_posterior:
            noise = torch.randn(posterior.mean.shape, generator=generator).to(posterior.mean)
            z = posterior.mean + posterior.std * noise  # reparameterisation (Kingma & Welling 2014)
        return self.vae.decode(z, clamp=False), posterior.mean, posterior.std  # unclamped: see decode()


def fix_posterior_std(vae: torch.nn.Module, logvar: float = -30.0) -> None:
    """Make the VAE's posterior deterministic: its log-variance outputs become the constant ``logvar``.

    For runs that decode the posterior mean (``objective.sample_posterior: false``). The log-variance
    half of ``quant_conv`` then gets no gradient, so the saved VAE's std is exp(logvar / 2) (~3e-7 at
    -30, the clamp floor), and everything downstream that samples the posterior -- the DiT trainer's
    latent cache, encoding known frames -- sees the latents the decoder was trained on. Why not let it
    learn: with a small-image decoder a sampled std near 1 at initialisation drowns the means and the
    decoder settles on the grey average (measured: L1 0.45 after 150 steps against 0.05 for the clip's
    background alone), and any KL weight pushes a tiny std back up.
    """
    conv = vae.quant_conv
    channels = conv.weight.shape[0] // 2
    with torch.no_grad():
        conv.weight[channels:].zero_()
        conv.bias[channels:].fill_(logvar)


@torch.no_grad()
def inflate_temporal(vae: torch.nn.Module) -> None:
    """Turn a VAE trained on single frames into one that treats every frame like the first.

    Trained on 1-frame clips, a causal convolution's past-frame taps only ever saw zero padding, and the
    temporal resamplers never ran, so they hold their random initialisation. This zeroes the past taps
    (each frame then goes through exactly the computation the first frame does), makes each temporal
    downsampler keep the newest frame of its window, and each temporal upsampler repeat its frame
    twice: the VAE then encodes and decodes a clip frame by frame (a chunk decodes to its frame repeated),
    the starting point from which training on clips learns motion (the 2-D-to-3-D "inflation" of I3D).
    """
    from videogen.models.vae_blocks import CausalConv3d, Resample

    for module in vae.modules():
        if isinstance(module, Resample) and hasattr(module, "time_conv"):
            conv = module.time_conv
            conv.weight.zero_()
            conv.bias.zero_()
            eye = torch.eye(conv.weight.shape[1], dtype=conv.weight.dtype)
            newest = conv.weight[:, :, -1, 0, 0]  # (out, in): the tap on the newest frame
            newest.copy_(eye.repeat(conv.weight.shape[0] // eye.shape[0], 1))  # up: both halves; down: identity
        elif isinstance(module, CausalConv3d) and module.weight.shape[2] > 1:
            module.weight[:, :, :-1].zero_()


# ------------------------------------------------------------------------------------------- exporting


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
    """The sampling a DiT run's objective trained, as `GenerationDefaults` fields for the exported folder:
    frame conditioning (known frames at timestep 0) when samples were given frames, image-first sampling
    when text-to-image batches were trained as well."""
    if cfg.task != "dit":
        return {}
    o = cfg.objective
    declared = {}
    if o.p_first > 0 or o.p_first_last > 0:
        declared["frame_conditioning"] = True
        if o.p_image > 0 and o.p_first > 0:
            declared["image_first"] = True
    return declared


def save_model_folder(cfg: TrainConfig, parts: Components, folder: Path) -> Path:
    """A complete model folder: the base folder's files, with the trained components written over them."""
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    base = cfg.model.pretrained
    if base is not None:
        shutil.copytree(base, tmp)
    elif cfg.task == "dit":
        return save_new_pipeline(cfg, parts, folder)
    trained = {"vae": parts.vae} if cfg.task == "vae" else {"transformer": parts.dit}
    if cfg.model.train_text_encoder:
        trained["text_encoder"] = parts.text_encoder
    for name, module in trained.items():
        shutil.rmtree(tmp / name, ignore_errors=True)
        module.save_pretrained(tmp / name)
    declared = trained_sampling(cfg)
    if declared:  # what the DiT now knows, over what the base folder declared
        from videogen.pipeline import DEFAULTS_FILE

        path = tmp / DEFAULTS_FILE
        values = json.loads(path.read_text()) if path.is_file() else {}
        path.write_text(json.dumps({**values, **declared}, indent=2) + "\n")
    if folder.exists():
        shutil.rmtree(folder)
    tmp.replace(folder)
    return folder


def save_new_pipeline(cfg: TrainConfig, parts: Components, folder: Path) -> Path:
    """A model trained from scratch (the demo) as a complete folder, written by the pipeline itself."""
    from videogen.models.text import TextEncoder
    from videogen.pipeline import GenerationDefaults, VideoPipeline

    v = cfg.validation
    defaults = GenerationDefaults(num_frames=v.frames, height=v.height, width=v.width, num_steps=v.steps,
                                  guidance_scale=v.guidance, shift=v.shift, fps=cfg.data.fps or 8.0,
                                  **trained_sampling(cfg))
    with evaluating(parts.dit, parts.text_encoder):
        text = TextEncoder(parts.tokenizer, parts.text_encoder, max_sequence_length=cfg.model.max_text_length)
        pipe = VideoPipeline(text, parts.vae, parts.dit, scheduler_config(cfg), defaults=defaults,
                             device=parts.dit.device)
        return pipe.save_pretrained(folder, overwrite=True)


# ------------------------------------------------------------------------------------------ validation


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
    from videogen.io import write_video
    from videogen.pipeline import to_uint8
    from videogen.reconstruct import round_trip

    with evaluating(vae):
        recon = round_trip(vae, video)
    both = np.concatenate([to_uint8(video), to_uint8(recon)], axis=2)  # (T, H, 2W, 3)
    return write_video(path, both, fps, overwrite=True)


def scheduler_config(cfg: TrainConfig) -> dict:
    """The model folder's scheduler, or Wan2.1's (UniPC in flow mode) for a model trained from scratch."""
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
