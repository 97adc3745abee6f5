"""Peak-memory estimates for generation, made before any work starts.

A request that cannot fit (a 720p clip of 201 frames on a 16 GB card, or on a laptop's RAM) should be
refused in a second with the numbers in the message, not killed by the OS forty minutes in. The
estimate is deliberately simple -- weights plus the largest working set of each phase -- and its accuracy
is measured against real peaks by ``tools/bench_pipeline.py`` (docs/benchmarks.md), not assumed.

Phases of one generation, each holding the weights resident at that point plus its own working set:

1. encode: the text encoder over (1 or 2) x 512 tokens;
2. denoise: the DiT over 2 x L tokens with guidance (B = 2), L = T' * H'/2 * W'/2; inference keeps one
   block's activations alive at a time: the residual stream, q/k/v and attention output, and the
   feed-forward's hidden layer;
3. decode: the streaming VAE decoder, which holds a causal cache of two frames per convolution and works
   on one latent frame (4 output frames) at a time, plus the decoded frames kept in memory when no output
   file is given.
"""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass
class MemoryEstimate:
    """Peak bytes of one generation by phase (weights included in each phase that holds them)."""

    encode: int
    denoise: int
    decode: int

    @property
    def peak(self) -> int:
        return max(self.encode, self.denoise, self.decode)

    def describe(self) -> str:
        return (
            f"about {self.peak / GIB:.1f} GiB at peak (text encoding {self.encode / GIB:.1f}, "
            f"denoising {self.denoise / GIB:.1f}, decoding {self.decode / GIB:.1f})"
        )


def dit_working_bytes(config, latent_shape: tuple[int, int, int, int, int], dtype_bytes: int) -> int:
    """Working set of one DiT forward over latents ``(B, C, T', H', W')`` (B includes the guidance batch).

    Per token: the fp32 residual stream and its norm (2 x 4 bytes x D), q, k, v and the attention output
    (4 x D), the feed-forward's hidden layer (ffn_dim) and the GELU output (ffn_dim); attention itself runs
    in fused kernels that do not store the L x L scores. Text states add N x D per sample.
    """
    b, _, t, h, w = latent_shape
    pt, ph, pw = config.patch_size
    tokens = b * (t // pt) * (h // ph) * (w // pw)
    dim = config.num_attention_heads * config.attention_head_dim
    per_token = 2 * 4 * dim + (4 * dim + 2 * config.ffn_dim) * dtype_bytes
    return tokens * per_token


def text_working_bytes(config, batch: int, tokens: int) -> int:
    """Working set of a T5 encoder over ``(batch, tokens)``: attention scores, their softmax and the
    position bias (3 x heads x N^2 in fp32) dominate; the states add about 8 x N x D in flight
    (measured 32 MiB for 2 x 512 tokens, 4 heads, D = 256; this gives 32)."""
    scores = 3 * config.num_heads * tokens * tokens * 4
    states = 8 * tokens * config.d_model * 4
    return batch * (scores + states)


def vae_decode_working_bytes(vae_config, height: int, width: int, batch: int = 1) -> int:
    """Working set of the streaming decoder for one latent frame, summed over the decoder's levels.

    Wan's decoder mirrors the encoder: level i (of ``len(dim_mult)``) runs at H / 2^(levels - 1 - i) with
    ``base_dim * dim_mult[-1 - i]`` channels, over up to 4 frames in fp32. The number of such feature maps
    alive at once (inputs, outputs, norms, the upsamplers' doubled maps and the 2-frame causal caches) is
    `DECODE_MAPS`, measured: the peak scales with H x W and is 7.0 maps at 128x128 and 256x256
    (tools/bench_pipeline.py's sampler, docs/benchmarks.md).
    """
    base = vae_config.get("decoder_base_dim") or vae_config["base_dim"]
    mults = list(vae_config["dim_mult"])
    levels = len(mults)
    total = 0
    for i in range(levels):
        scale = 2 ** (levels - 1 - i)
        total += DECODE_MAPS * 4 * base * mults[levels - 1 - i] * (height // scale) * (width // scale) * 4
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
