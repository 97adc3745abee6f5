"""The encoder and decoder of the causal video VAE, and the blocks they are built from.

The architecture is Wan2.1's VAE ("Wan: Open and Advanced Large-Scale Video Generative Models", 2025,
section 3.1, Figure 4): residual blocks of RMS norm, SiLU and causal 3x3x3 convolutions; 2x spatial
resampling at every stage but the last, 2x temporal resampling where ``temperal_downsample`` says; a
middle block of residual - spatial self-attention - residual. Module names and parameter shapes follow
diffusers' ``WanEncoder3d`` / ``WanDecoder3d`` so a diffusers ``AutoencoderKLWan`` state dict loads as is.

Every block takes ``(x, cache)``: ``cache=None`` runs the parallel path over the whole clip,
a `StreamCache` runs one chunk of a stream. Gradient checkpointing (parallel path only, since a cached
chunk has side effects a recomputation would repeat) is switched on through diffusers'
``ModelMixin.enable_gradient_checkpointing``, which sets ``gradient_checkpointing`` and
``_gradient_checkpointing_func`` on the `Encoder` and `Decoder`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from videogen.models.causal import CausalConv3d, Resample, StreamCache


class RMSNorm(nn.Module):
    """RMS norm over channels (dim 1): ``x / rms(x) * gamma``, computed in fp32 for half inputs.

    Wan writes it as ``F.normalize(x) * sqrt(C) * gamma``, which is the same quantity. The gamma shape
    (C, 1, 1, 1) or (C, 1, 1) is the checkpoint's; it is broadcast over any number of trailing axes.
    """

    def __init__(self, dim: int, images: bool = False) -> None:
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim, 1, 1) if images else torch.ones(dim, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, ...) -> same shape and dtype."""
        gamma = self.gamma.reshape(-1, *([1] * (x.dim() - 2)))  # (C, 1, ..., 1)
        if x.dtype in (torch.float16, torch.bfloat16):
            return (F.normalize(x.float(), dim=1) * (self.scale * gamma.float())).to(x.dtype)
        return F.normalize(x, dim=1) * (self.scale * gamma)


class ResidualBlock(nn.Module):
    """norm - SiLU - causal conv - norm - SiLU - dropout - causal conv, plus a (1x1x1 conv) shortcut."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = RMSNorm(in_dim)
        self.conv1 = CausalConv3d(in_dim, out_dim, 3, padding=1)
        self.norm2 = RMSNorm(out_dim)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = CausalConv3d(out_dim, out_dim, 3, padding=1)
        self.conv_shortcut = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: torch.Tensor, cache: StreamCache | None = None) -> torch.Tensor:
        """x: (B, C_in, T, H, W) -> (B, C_out, T, H, W)."""
        shortcut = self.conv_shortcut(x)
        x = self.conv1(F.silu(self.norm1(x)), cache)
        x = self.conv2(self.dropout(F.silu(self.norm2(x))), cache)
        return x + shortcut


class AttentionBlock(nn.Module):
    """Single-head self-attention within each frame (no attention across time, so it stays causal)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = RMSNorm(dim, images=True)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor, cache: StreamCache | None = None) -> torch.Tensor:
        """x: (B, C, T, H, W) -> same shape; `cache` is unused (nothing crosses frames)."""
        b, c, t, h, w = x.shape
        tokens = rearrange(self.norm(x), "b c t h w -> (b t) (h w) c")  # (B*T, H*W, C)
        qkv = F.linear(tokens, self.to_qkv.weight.flatten(1), self.to_qkv.bias)  # (B*T, H*W, 3C)
        q, k, v = qkv.unsqueeze(1).chunk(3, dim=-1)  # each (B*T, 1, H*W, C): one head
        out = F.scaled_dot_product_attention(q, k, v).squeeze(1)  # (B*T, H*W, C)
        out = F.linear(out, self.proj.weight.flatten(1), self.proj.bias)  # (B*T, H*W, C)
        return x + rearrange(out, "(b t) (h w) c -> b c t h w", b=b, h=h)  # (B, C, T, H, W)


class MidBlock(nn.Module):
    """residual - attention - residual, at the lowest resolution."""

    def __init__(self, dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.attentions = nn.ModuleList([AttentionBlock(dim)])
        self.resnets = nn.ModuleList([ResidualBlock(dim, dim, dropout), ResidualBlock(dim, dim, dropout)])

    def forward(self, x: torch.Tensor, cache: StreamCache | None = None) -> torch.Tensor:
        x = self.resnets[0](x, cache)
        x = self.attentions[0](x)
        return self.resnets[1](x, cache)


class UpBlock(nn.Module):
    """num_res_blocks + 1 residual blocks, then an optional 2x upsample (diffusers' ``WanUpBlock``)."""

    def __init__(
        self, in_dim: int, out_dim: int, num_res_blocks: int, dropout: float, upsample_mode: str | None
    ) -> None:
        super().__init__()
        dims = [in_dim] + [out_dim] * (num_res_blocks + 1)
        self.resnets = nn.ModuleList([ResidualBlock(i, o, dropout) for i, o in zip(dims[:-1], dims[1:])])
        self.upsamplers = nn.ModuleList([Resample(out_dim, upsample_mode)]) if upsample_mode else None

    def forward(self, x: torch.Tensor, cache: StreamCache | None = None) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x, cache)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, cache)
        return x


class _CheckpointedStages(nn.Module):
    """Runs a list of stages, each under gradient checkpointing when it is switched on and allowed."""

    gradient_checkpointing: bool

    def run_stage(self, stage: nn.Module, x: torch.Tensor, cache: StreamCache | None) -> torch.Tensor:
        if self.gradient_checkpointing and cache is None and torch.is_grad_enabled():
            return self._gradient_checkpointing_func(stage, x)
        return stage(x, cache)


class Encoder(_CheckpointedStages):
    """Pixels (B, 3, T, H, W) -> posterior moments (B, 2 z_dim, 1 + (T - 1) / 4, H / 8, W / 8).

    Args:
        dim: base width; stage i has ``dim * dim_mult[i]`` channels.
        z_dim: output channels (twice the latent channels: mean and log-variance).
        dim_mult: width multipliers, one stage each; every stage but the last halves H and W.
        num_res_blocks: residual blocks per stage.
        attn_scales: resolutions (1.0 = input, 0.5 = after one downsample, ...) with attention blocks.
        temperal_downsample: per downsampling stage, whether it also halves time (Wan's spelling).
        dropout: dropout rate inside the residual blocks.
        in_channels: pixel channels.
    """

    def __init__(
        self,
        dim: int,
        z_dim: int,
        dim_mult: Sequence[int],
        num_res_blocks: int,
        attn_scales: Sequence[float],
        temperal_downsample: Sequence[bool],
        dropout: float = 0.0,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        dims = [dim * m for m in [1, *dim_mult]]
        self.conv_in = CausalConv3d(in_channels, dims[0], 3, padding=1)
        self.down_blocks = nn.ModuleList(self._down_blocks(dims, num_res_blocks, attn_scales, temperal_downsample, dropout))
        self.mid_block = MidBlock(dims[-1], dropout)
        self.norm_out = RMSNorm(dims[-1])
        self.conv_out = CausalConv3d(dims[-1], z_dim, 3, padding=1)
        self.gradient_checkpointing = False

    @staticmethod
    def _down_blocks(dims, num_res_blocks, attn_scales, temperal_downsample, dropout) -> list[nn.Module]:
        # one flat list, in the order diffusers numbers ``down_blocks.{i}``
        blocks, scale, last = [], 1.0, len(dims) - 2
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            for _ in range(num_res_blocks):
                blocks.append(ResidualBlock(in_dim, out_dim, dropout))
                if scale in attn_scales:
                    blocks.append(AttentionBlock(out_dim))
                in_dim = out_dim
            if i != last:
                blocks.append(Resample(out_dim, "downsample3d" if temperal_downsample[i] else "downsample2d"))
                scale /= 2.0
        return blocks

    def forward(self, x: torch.Tensor, cache: StreamCache | None = None) -> torch.Tensor:
        """x: (B, C_in, T, H, W) -> (B, z_dim, T', H', W')."""
        x = self.conv_in(x, cache)
        for block in self.down_blocks:
            x = self.run_stage(block, x, cache)
        x = self.run_stage(self.mid_block, x, cache)
        return self.conv_out(F.silu(self.norm_out(x)), cache)


class Decoder(_CheckpointedStages):
    """Latents (B, z_dim, T', H', W') -> pixels (B, 3, 1 + 4 (T' - 1), 8 H', 8 W'), not clamped.

    Args mirror `Encoder`; ``temperal_upsample`` is the encoder's ``temperal_downsample`` reversed.
    """

    def __init__(
        self,
        dim: int,
        z_dim: int,
        dim_mult: Sequence[int],
        num_res_blocks: int,
        temperal_upsample: Sequence[bool],
        dropout: float = 0.0,
        out_channels: int = 3,
    ) -> None:
        super().__init__()
        dims = [dim * m for m in [dim_mult[-1], *dim_mult[::-1]]]
        self.conv_in = CausalConv3d(z_dim, dims[0], 3, padding=1)
        self.mid_block = MidBlock(dims[0], dropout)
        self.up_blocks = nn.ModuleList()
        last = len(dim_mult) - 1
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            if i > 0:
                in_dim //= 2  # Wan2.1's upsamplers halve the width
            mode = None if i == last else ("upsample3d" if temperal_upsample[i] else "upsample2d")
            self.up_blocks.append(UpBlock(in_dim, out_dim, num_res_blocks, dropout, mode))
        self.norm_out = RMSNorm(dims[-1])
        self.conv_out = CausalConv3d(dims[-1], out_channels, 3, padding=1)
        self.gradient_checkpointing = False

    def forward(self, x: torch.Tensor, cache: StreamCache | None = None) -> torch.Tensor:
        """x: (B, z_dim, T', H', W') -> (B, C_out, T, H, W)."""
        x = self.conv_in(x, cache)
        x = self.run_stage(self.mid_block, x, cache)
        for block in self.up_blocks:
            x = self.run_stage(block, x, cache)
        return self.conv_out(F.silu(self.norm_out(x)), cache)
