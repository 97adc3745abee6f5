"""The training run's typed configuration: one dataclass per section of the YAML file.

A run is described completely by one `TrainConfig`; the trainer saves it as ``config.yaml`` in the run
folder, so a run folder describes itself (as nanoGPT's ``GPTConfig`` and diffusers' ``ConfigMixin`` do).
Loading, ``--set key.sub=value`` overrides and the refusal of unknown keys are the shared loader's job
(``videogen.config``); this module only declares the fields and checks the values that depend on each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from videogen.errors import ConfigError
from videogen.config import load_config

# ------------------------------------------------------------------------------------------- the model


@dataclass
class DiTArch:
    """A VideoDiT trained from scratch (keys of diffusers' WanTransformer3DModel)."""

    num_layers: int = 2  # transformer blocks
    num_attention_heads: int = 2  # heads per attention layer
    attention_head_dim: int = 16  # channels per head; the width is heads * head_dim
    ffn_dim: int = 64  # hidden width of the feed-forward
    freq_dim: int = 32  # sinusoidal timestep embedding size
    text_dim: int = 32  # width of the text states (the T5 d_model)
    patch_size: list[int] = field(default_factory=lambda: [1, 2, 2])  # latent (t, h, w) per token
    frame_position_dim: int = 0  # features of each token's place in the frame; 0: none, as Wan2.1 (not a Wan key)


@dataclass
class VAEArch:
    """A CausalVideoVAE trained from scratch (keys of diffusers' AutoencoderKLWan)."""

    base_dim: int = 16  # channels of the first stage
    z_dim: int = 16  # latent channels (16 in the Wan2.1 layout)
    dim_mult: list[int] = field(default_factory=lambda: [1, 2, 2, 2])  # channel multiplier per stage
    num_res_blocks: int = 1  # residual blocks per stage
    temperal_downsample: list[bool] = field(default_factory=lambda: [False, True, True])  # diffusers' spelling


@dataclass
class TextArch:
    """A small T5 encoder trained from scratch, with a byte-level tokenizer (the demo model)."""

    d_model: int = 32  # width, and so the DiT's text_dim
    num_layers: int = 2  # encoder blocks
    num_heads: int = 2  # attention heads
    d_kv: int = 16  # channels per head
    d_ff: int = 64  # feed-forward width


@dataclass
class ModelConfig:
    pretrained: Optional[str] = None  # model folder (diffusers layout) to start from; None: from scratch
    vae: Optional[str] = None  # VAE folder for a DiT run when `pretrained` is None (e.g. a VAE run's model/)
    text_encoder: Optional[str] = None  # folder with text_encoder/ + tokenizer/ when `pretrained` is None
    dit_init: Optional[str] = None  # model folder whose transformer starts a new DiT where names and shapes match
    # (train.components.warm_start): a DiT moved to another VAE's latents keeps its blocks, relearns its patch in/out
    latent_stats: Literal["keep", "measure"] = "keep"  # VAE runs: "measure" writes the trained VAE's own per-channel
    # latent mean/std into its config (what normalize() uses); "keep" leaves them (a fine-tuned Wan VAE must keep Wan's)
    inflate_vae: bool = False  # VAE runs from a VAE trained on single frames: see train.surgery.inflate_temporal
    freeze_encoder: bool = False  # VAE runs: train the decoder only, so latents (and a DiT trained on them) stay valid
    train_text_encoder: bool = False  # train the T5 too (the demo model trains its small T5 from scratch)
    # a two-expert folder (Wan2.2 A14B): which experts train. "both": optimizer steps alternate, the high-noise
    # expert (transformer/, lora.safetensors) first, then the low-noise one (transformer_2/, lora_2.safetensors),
    # each on timesteps drawn from objective.timestep_sampling restricted to its own range (high: t >=
    # boundary_ratio x 1000, low: below), so each gets half the steps; "high" or "low": that one alone, the
    # other left as it is. A one-transformer folder takes "both" (its transformer)
    experts: Literal["both", "high", "low"] = "both"
    max_text_length: int = 64  # tokens per caption (Wan uses 512; short captions need far fewer)
    dit: DiTArch = field(default_factory=DiTArch)
    vae_arch: VAEArch = field(default_factory=VAEArch)
    text: TextArch = field(default_factory=TextArch)


# -------------------------------------------------------------------------------------------- the data


@dataclass
class DataConfig:
    kind: Literal["footage", "shapes"] = "footage"  # a folder of videos/images, or the procedural shapes world
    path: Optional[str] = None  # the footage folder (CLI --data)
    fps: Optional[float] = None  # frames per second clips are resampled to; None: each file's own rate
    frames: list[int] = field(default_factory=lambda: [17])  # clip-length buckets, each 4k+1
    stride: int = 0  # frames between the starts of two clips of one video; 0: one clip per video
    resolutions: list[str] = field(default_factory=lambda: ["64x64"])  # "HxW" buckets, multiples of 16
    shapes_samples: int = 1024  # clips in the shapes world's epoch
    shapes_size: int = 64  # shapes canvas side
    crop: Optional[int] = None  # VAE runs: train on random square crops of this side (the VAE is convolutional)
    cache: bool = True  # precompute VAE latents and text states once (DiT runs)
    cache_dir: Optional[str] = None  # where the cache lives; None: <data>/.videogen-cache or <output>/cache
    num_workers: int = 0  # DataLoader worker processes


# ----------------------------------------------------------------------------------------- objectives


TI2V_P_FIRST = 0.5  # objective.p_first for a Wan2.2 TI2V folder: as many image-conditioned clips as text-only ones


@dataclass
class ObjectiveConfig:
    timestep_sampling: Literal["logit_normal", "uniform"] = "logit_normal"  # SD3 (Esser et al. 2024) sec. 3.1
    shift: float = 1.0  # timestep shift s' = shift s / (1 + (shift - 1) s) applied to sampled sigmas
    logit_mean: float = 0.0  # logit-normal location
    logit_std: float = 1.0  # logit-normal scale
    p_image: float = 0.0  # probability a batch trains text-to-image: its first latent frame(s), given nothing
    # latent frames a text-to-image batch keeps, given nothing: 2 is the opening (5 frames) that image-first
    # sampling with image_first_frames 5 draws, the first frame with the motion after it in view
    image_latent_frames: int = 1
    # probability a sample keeps its first latent frame(s) known, clean at timestep 0 (image-to-video); None: the
    # model's own, TI2V_P_FIRST for a Wan2.2 TI2V folder (its image conditioning is exactly this), else 0
    p_first: Optional[float] = None
    p_first_last: float = 0.0  # probability the first and last latent frames are known (interpolation)
    known_frames: int = 1  # latent frames known at the start in "first" mode
    caption_dropout: float = 0.1  # probability a caption is replaced by "" (classifier-free guidance)
    l1: float = 1.0  # VAE: weight of the L1 reconstruction loss
    ssim: float = 0.2  # VAE: weight of (1 - SSIM), the structural term
    mse: float = 0.0  # VAE: weight of the mean squared error (pulls hardest on the largest errors)
    foreground_weight: float = 0.0  # VAE: extra L1/MSE weight on pixels away from the clip's background
    kl: float = 1e-6  # VAE: weight of the KL divergence to N(0, I)
    sample_posterior: bool = True  # VAE: decode a posterior sample; false: decode the mean, std fixed ~0


@dataclass
class LoRAConfig:
    rank: int = 16  # r
    alpha: float = 16.0  # the update is scaled by alpha / r
    targets: list[str] = field(
        default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2"]
    )  # module-name suffixes inside the DiT's blocks: attention and feed-forward linears
    dropout: float = 0.0  # dropout on the LoRA input


@dataclass
class OptimConfig:
    lr: float = 1e-4  # peak learning rate of AdamW
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.01
    eps: float = 1e-8
    warmup_steps: int = 0  # linear warm-up, then cosine decay to min_lr_ratio * lr at max_steps
    min_lr_ratio: float = 0.1
    max_grad_norm: float = 1.0  # gradient clipping; 0 disables
    ema_decay: float = 0.0  # EMA of the trained weights; 0 disables


@dataclass
class TrainLoopConfig:
    max_steps: int = 100  # optimizer steps
    max_minutes: float = 0.0  # wall-time budget of one invocation: past it, end as at max_steps (checkpoint,
    # export, validation) at that step; --resume goes on toward max_steps. 0: no budget
    stop_step: int = 0  # end at this step (checkpoint, export, validation) as at max_steps, while the learning-rate
    # schedule still spans max_steps: how a run stopped by a budget is reproduced step for step; 0: at max_steps
    batch_size: int = 1  # samples per process per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    mixed_precision: Literal["auto", "no", "bf16"] = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU
    gradient_checkpointing: bool = False
    distributed: Literal["ddp", "fsdp"] = "ddp"  # how several processes share the work
    checkpoint_every: int = 100  # steps between checkpoints
    keep_checkpoints: int = 2  # checkpoints kept; older ones are deleted
    log_every: int = 1  # steps between log rows
    validate_every: int = 0  # steps between validation videos; 0: only at the end
    compile: bool = False  # torch.compile the trained network in place (for GPUs; no gain measured on a CPU)

    @property
    def end_step(self) -> int:
        """The step a run ends at: ``stop_step`` when set and sooner, else ``max_steps``."""
        return min(self.stop_step, self.max_steps) if self.stop_step else self.max_steps


@dataclass
class ValidationConfig:
    prompts: list[str] = field(default_factory=list)  # DiT runs: one MP4 per prompt
    frames: int = 17
    height: int = 64
    width: int = 64
    steps: int = 20
    guidance: float = 5.0
    shift: float = 3.0
    seed: int = 0


@dataclass
class TrainConfig:
    task: Literal["dit", "vae"] = "dit"  # which network trains
    mode: Literal["full", "lora"] = "full"  # all weights, or LoRA adapters on the DiT
    seed: int = 0  # data order, noise, timesteps and initial weights derive from it
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)


# --------------------------------------------------------------------------------------------- checks


def parse_resolution(text: str) -> tuple[int, int]:
    """``"480x832"`` -> (480, 832), refusing sizes the models cannot take."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"data.resolutions: {text!r} is not HxW (e.g. 480x832)") from None
    if h <= 0 or w <= 0 or h % 16 or w % 16:
        raise ConfigError(f"data.resolutions: {text!r}: height and width must be positive multiples of 16")
    return h, w


def validate(cfg: TrainConfig) -> TrainConfig:
    """Refuse values that are wrong together (the loader has already checked each one's type)."""
    bad = [n for n in cfg.data.frames if n < 1 or (n - 1) % 4]
    if bad or not cfg.data.frames:
        raise ConfigError(f"data.frames: {bad or '[]'}: each clip length must be 4k+1 (1, 5, 9, 17, 33, ...)")
    for text in cfg.data.resolutions:
        parse_resolution(text)
    if cfg.data.crop is not None and (cfg.data.kind != "shapes" or cfg.task != "vae"):
        raise ConfigError("data.crop: random crops are for VAE runs on the shapes world (task: vae, data.kind: shapes)")
    o = cfg.objective
    for name in ("p_image", "p_first", "p_first_last", "caption_dropout"):
        if getattr(o, name) is not None and not 0.0 <= getattr(o, name) <= 1.0:
            raise ConfigError(f"objective.{name}: {getattr(o, name)} is not a probability")
    if (o.p_first or 0.0) + o.p_first_last > 1.0:
        raise ConfigError("objective.p_first + objective.p_first_last must not exceed 1")
    if o.image_latent_frames < 1:
        raise ConfigError(f"objective.image_latent_frames: {o.image_latent_frames} must be at least 1")
    if o.shift <= 0:
        raise ConfigError(f"objective.shift: {o.shift} must be positive")
    t = cfg.train
    for name in ("max_steps", "batch_size", "grad_accum", "checkpoint_every", "keep_checkpoints", "log_every"):
        if getattr(t, name) < 1:
            raise ConfigError(f"train.{name}: {getattr(t, name)} must be at least 1")
    if t.stop_step < 0:
        raise ConfigError(f"train.stop_step: {t.stop_step} must be 0 (stop at max_steps) or more")
    if not t.max_minutes >= 0:
        raise ConfigError(f"train.max_minutes: {t.max_minutes} must be 0 (no budget) or more")
    if cfg.model.freeze_encoder and (cfg.task != "vae" or cfg.model.latent_stats != "keep"):
        raise ConfigError("model.freeze_encoder applies to VAE runs with model.latent_stats: keep (the latents do not change)")
    if cfg.model.dit_init is not None and (cfg.task != "dit" or cfg.model.pretrained is not None):
        raise ConfigError("model.dit_init starts a new DiT (task: dit, no model.pretrained)")
    if cfg.mode == "lora" and cfg.task != "dit":
        raise ConfigError("mode: lora applies to the DiT only (task: dit)")
    if cfg.mode == "lora" and cfg.lora.rank < 1:
        raise ConfigError(f"lora.rank: {cfg.lora.rank} must be at least 1")
    if not 0.0 <= cfg.optim.ema_decay < 1.0:
        raise ConfigError(f"optim.ema_decay: {cfg.optim.ema_decay} must be in [0, 1)")
    return cfg


def load_train_config(path: str | Path | None, overrides: list[str] = ()) -> TrainConfig:
    """Read a run's YAML file, apply ``--set`` overrides, check the result."""
    return validate(load_config(TrainConfig, path, list(overrides)))
