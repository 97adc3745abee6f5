"""Peak-memory estimates for generation, made before any work starts.

A request that cannot fit (a 720p clip of 201 frames on a 16 GB card, or on a laptop's RAM) should be
refused in a second with the numbers in the message, not killed by the OS forty minutes in. The
estimate is deliberately simple -- weights plus the largest working set of each phase -- and its accuracy
is measured against real peaks by ``tools/bench_pipeline.py`` (docs/benchmarks.md), not assumed.

Phases of one generation, each holding the weights resident at that point plus its own working set:

1. encode: the text encoder over (1 or 2) x 512 tokens, and a CLIP image encoder where the model has one;
2. denoise: the DiT over 2 x L tokens with guidance (B = 2), L = T' * H'/2 * W'/2; inference keeps one
   block's activations alive at a time: the residual stream, q/k/v and attention output, and the
   feed-forward's hidden layer;
3. decode: the streaming VAE decoder, which holds a causal cache of two frames per convolution and works
   on one latent frame (4 output frames) at a time, plus the decoded frames kept in memory when no output
   file is given.

The working sets are here; which weights are resident in which phase, for a loaded pipeline or a folder's
configs alone, is `videogen.footprint`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from videogen.errors import ResourceError

GIB = 1024**3
DECODE_MAPS = 7  # feature maps alive per decoder level (measured, see `vae_decode_working_bytes`)


def module_bytes(module: torch.nn.Module | None) -> int:
    """Bytes of a module's parameters and buffers."""
    if module is None:
        return 0
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


PHASES = {"encode": "encoding", "denoise": "denoising", "decode": "decoding"}  # field -> what describe() says


@dataclass
class MemoryEstimate:
    """Peak bytes of one generation by phase (weights included in each phase that holds them).

    weights: the bytes of each network as loaded (``transformer``, ``text_encoder``...), where known.
    """

    encode: int
    denoise: int
    decode: int
    weights: dict[str, int] = field(default_factory=dict)

    @property
    def peak(self) -> int:
        return max(self.encode, self.denoise, self.decode)

    @property
    def peak_phase(self) -> str:
        """The phase that reaches the peak: ``"encode"``, ``"denoise"`` or ``"decode"`` (the first on a tie)."""
        return max(PHASES, key=lambda phase: getattr(self, phase))

    def describe(self) -> str:
        """One line: the peak and each phase in GiB."""
        phases = ", ".join(f"{what} {getattr(self, phase) / GIB:.1f}" for phase, what in PHASES.items())
        return f"about {self.peak / GIB:.1f} GiB at peak ({phases})"

    def report(self) -> str:
        """Several lines: each phase in GiB with the peak marked, then the weights of each network."""
        lines = [f"peak memory: about {self.peak / GIB:.1f} GiB, while {PHASES[self.peak_phase]}"]
        for phase, what in PHASES.items():
            mark = "  <- peak" if phase == self.peak_phase else ""
            lines.append(f"  {what:<10} {getattr(self, phase) / GIB:7.2f} GiB{mark}")
        if self.weights:
            parts = ", ".join(f"{name} {size / GIB:.2f}" for name, size in self.weights.items())
            lines.append(f"  weights (GiB): {parts}")
        return "\n".join(lines)


def dit_working_bytes(config, latent_shape: tuple[int, int, int, int, int], dtype_bytes: int, *,
                      context_tokens: int = 0, per_token_timesteps: bool = False) -> int:
    """Working set of one DiT forward over latents ``(B, C, T', H', W')`` (B includes the guidance batch).

    Per token: the fp32 residual stream and its norm (2 x 4 bytes x D), q, k, v and the attention output
    (4 x D), the feed-forward's hidden layer (ffn_dim) and the GELU output (ffn_dim); attention itself runs
    in fused kernels that do not store the L x L scores. Per context token (``context_tokens`` per sample:
    the text's, plus the CLIP image tokens of an image-conditioned model): its states in the model width
    and one cross-attention's keys and values (4 x D). With ``per_token_timesteps`` (Wan2.2 TI2V, or known
    frames held at timestep 0) each token carries its own modulation: the (6 x D) table every block reads,
    its sum with the block's offsets (6 x D) and the head's embedding (D), all fp32 (13 x 4 bytes x D).
    """
    b, _, t, h, w = latent_shape
    pt, ph, pw = config.patch_size
    tokens = b * (t // pt) * (h // ph) * (w // pw)
    dim = config.num_attention_heads * config.attention_head_dim
    per_token = 2 * 4 * dim + (4 * dim + 2 * config.ffn_dim) * dtype_bytes
    if per_token_timesteps:
        per_token += 13 * 4 * dim
    return tokens * per_token + b * context_tokens * 4 * dim * dtype_bytes


def text_working_bytes(config, batch: int, tokens: int) -> int:
    """Working set of a T5 encoder over ``(batch, tokens)``: attention scores, their softmax and the
    position bias (3 x heads x N^2 in fp32) dominate; the states add about 8 x N x D in flight
    (measured 32 MiB for 2 x 512 tokens, 4 heads, D = 256; this gives 32)."""
    scores = 3 * config.num_heads * tokens * tokens * 4
    states = 8 * tokens * config.d_model * 4
    return batch * (scores + states)


def image_working_bytes(config, images: int) -> int:
    """Working set of a CLIP vision tower over ``images`` images of N = (image_size / patch_size)^2 + 1 tokens:
    every layer's hidden states are kept, since the penultimate one is read ((layers + 1) x N x D), plus one
    layer's attention scores and their softmax (2 x heads x N^2) and its states and MLP hidden layer in flight
    (4 x D + 2 x intermediate per token), counted in fp32."""
    tokens = (config.image_size // config.patch_size) ** 2 + 1
    states = (config.num_hidden_layers + 1) * tokens * config.hidden_size
    scores = 2 * config.num_attention_heads * tokens**2
    layer = scores + tokens * (4 * config.hidden_size + 2 * config.intermediate_size)
    return images * (states + layer) * 4


def vae_decode_working_bytes(vae_config, height: int, width: int, batch: int = 1) -> int:
    """Working set of the streaming decoder for one latent frame, summed over the decoder's levels.

    Wan's decoder mirrors the encoder: level i (of ``len(dim_mult)``) runs at H / 2^(levels - 1 - i) with
    ``base_dim * dim_mult[-1 - i]`` channels, over up to 4 frames in fp32; H is the decoder's own output
    size, the image's divided by ``patch_size`` when the VAE patchifies (Wan2.2 TI2V: 2x2 patches). The
    number of such feature maps alive at once (inputs, outputs, norms, the upsamplers' doubled maps and the
    2-frame causal caches) is measured: the peak scales with H x W and is `DECODE_MAPS` = 7.0 maps at
    128x128 and 256x256 (tools/bench_pipeline.py's sampler, docs/benchmarks.md); Wan2.2's residual decoder
    (``is_residual``), whose upsamplers keep the width and whose stage shortcuts add maps the size of the
    stage's output, holds 8.9 (the live tensor bytes of its decode_frames at 64x64 to 256x256, with two
    residual blocks per stage as published, tests/test_vae22.py).
    """
    base = vae_config.get("decoder_base_dim") or vae_config["base_dim"]
    mults = list(vae_config["dim_mult"])
    patch = vae_config.get("patch_size") or 1
    maps = 9 if vae_config.get("is_residual") else DECODE_MAPS
    height, width, levels = height // patch, width // patch, len(mults)
    total = 0
    for i in range(levels):
        scale = 2 ** (levels - 1 - i)
        total += maps * 4 * base * mults[levels - 1 - i] * (height // scale) * (width // scale) * 4
    return batch * total


def available_bytes(device: torch.device) -> int:
    """Memory a generation can still use on ``device``: free GPU memory, or the system's available RAM."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free
    import psutil  # a dependency of accelerate

    return psutil.virtual_memory().available


def check_fits(estimate: MemoryEstimate, device: torch.device, *, resident: int = 0) -> None:
    """Refuse a request whose estimated peak exceeds what ``device`` has, before any work is done.

    resident: bytes of the estimate already allocated (weights loaded on the device), which the free
    memory reported by the system no longer includes.
    """
    free = available_bytes(device) + resident
    if estimate.peak > free:
        raise ResourceError(
            f"this request needs {estimate.describe()}, but only {free / GIB:.1f} GiB is available on "
            f"{device}: use fewer frames, a smaller size, --offload or a larger device"
        )
