"""The layers of the causal video VAE: the stream cache, causal convolutions, blocks, encoder, decoder.

The architecture is Wan2.1's VAE ("Wan: Open and Advanced Large-Scale Video Generative Models", 2025,
section 3.1, Figure 4): residual blocks of RMS norm, SiLU and causal 3x3x3 convolutions; 2x spatial
resampling at every stage but the last, 2x temporal resampling where ``temperal_downsample`` says; a
middle block of residual - spatial self-attention - residual. Wan2.2's TI2V VAE (``is_residual``) keeps
those layers and wraps each stage in a shortcut without parameters (`ResidualDownBlock`,
`ResidualUpBlock`). Module names and parameter shapes follow diffusers' ``WanEncoder3d`` /
``WanDecoder3d`` so a diffusers ``AutoencoderKLWan`` state dict loads as is.

Every block takes ``(x, cache)``: ``cache=None`` runs the parallel path over the whole clip,
a `StreamCache` runs one chunk of a stream. Gradient checkpointing (parallel path only, since a cached
chunk has side effects a recomputation would repeat) is switched on through diffusers'
``ModelMixin.enable_gradient_checkpointing``, which sets ``gradient_checkpointing`` and
``_gradient_checkpointing_func`` on the `Encoder` and `Decoder`.

Causality and streaming: the VAE is causal in time, output frame t depends on input frames <= t only.
Every temporal operation looks back a fixed number of frames, its *context*:

- a 3x3x3 causal convolution looks at 2 past frames (zeros before the first frame);
- the stride-2 temporal downsample passes the first frame through alone and reduces the rest in pairs,
  each window reaching 1 frame back;
- the temporal upsample passes the first frame through alone and doubles the rest, with a causal
  convolution over the frames after the first one (zeros before them);
- Wan2.2's stage shortcuts look at no past frame; they only need to know which chunk opens the stream.

So the whole clip can be processed at once (the *parallel* path, each layer padding its own past), or
chunk by chunk (the *streaming* path): a `StreamCache` then carries the last `context` frames each layer
saw into the next chunk, and the two paths compute the same numbers. `causal_window` is the one place
where that logic lives; every causal layer calls it.

"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

# ------------------------------------------------------------------------ causal layers and their cache


class StreamCache:
    """The frames each causal layer saw last, carried from one chunk of a streaming pass to the next.

    A parallel pass over a whole clip uses no cache (``cache=None``): every layer then starts at the
    beginning of its stream. A streaming pass makes one `StreamCache` and hands it, with each chunk, down
    through the layers. Layers are the keys, so no counter has to stay in step with the call order
    (compare Wan's ``feat_idx=[0]`` mutable default). Its size is bounded by the layers' contexts, not by
    the length of the clip.
    """

    def __init__(self) -> None:
        self._past: dict[nn.Module, torch.Tensor] = {}

    def started(self, layer: nn.Module) -> bool:
        """Whether `layer` has already seen the start of its stream."""
        return layer in self._past

    def past(self, layer: nn.Module) -> torch.Tensor | None:
        """The frames `layer` saw last, (B, C, context, H, W), or None before its first chunk."""
        return self._past.get(layer)

    def opens(self, layer: nn.Module) -> bool:
        """Whether this chunk opens `layer`'s stream (True once per stream), for a layer that needs no past."""
        if layer in self._past:
            return False
        self._past[layer] = torch.empty(0)
        return True

    def remember(self, layer: nn.Module, frames: torch.Tensor) -> None:
        # clone: a slice would keep the whole chunk it came from alive until the next chunk
        self._past[layer] = frames.clone()

    def nbytes(self) -> int:
        """Bytes held by the cache: constant once every layer has seen a full chunk."""
        return sum(t.numel() * t.element_size() for t in self._past.values())

    def clear(self) -> None:
        self._past.clear()


def causal_window(
    x: torch.Tensor,
    layer: nn.Module,
    cache: StreamCache | None,
    context: int,
    start: torch.Tensor | None = None,
) -> torch.Tensor:
    """`x` preceded by the `context` frames that come before it in its stream.

    Args:
        x: the chunk, (B, C, T, H, W); T may be 0.
        layer: the layer asking, the cache key.
        cache: None on the parallel path (the chunk is the whole stream).
        context: how many past frames the layer looks at.
        start: what precedes the very first chunk, (B, C, context, H, W); zeros when None (Wan's causal
            zero padding).

    Returns (B, C, context + T, H, W). When streaming, the last `context` frames of it are remembered as
    the past of the next chunk.
    """
    past = cache.past(layer) if cache is not None else None
    if past is None:
        past = start
    if past is None:
        window = F.pad(x, (0, 0, 0, 0, context, 0))  # (B, C, context + T, H, W)
    else:
        window = torch.cat([past.to(x.dtype), x], dim=2)  # (B, C, context + T, H, W)
    if cache is not None and context > 0:
        cache.remember(layer, window[:, :, window.shape[2] - context :])
    return window


def conv3d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, int, int] = (1, 1, 1),
    padding: tuple[int, int, int] = (0, 0, 0),
) -> torch.Tensor:
    """``F.conv3d`` that takes oneDNN's kernel on CPU whenever it can.

    PyTorch's backend choice sends a batch-1 CPU input with N*C*T*H below 20480 elements (every chunk of a
    small clip) to its reference im2col ``slow_conv3d``, 4-25x slower on a 2-core CPU than oneDNN for
    the same sum (see docs/benchmarks.md). The oneDNN op has its own backward, so autograd is unchanged.
    """
    if x.device.type == "cpu" and x.dtype in _ONEDNN_DTYPES and _onednn_available():
        return torch.mkldnn_convolution(x.contiguous(), weight, bias, padding, stride, (1, 1, 1), 1)
    return F.conv3d(x, weight, bias, stride, padding)


_ONEDNN_DTYPES = (torch.float32, torch.bfloat16)


def _onednn_available() -> bool:
    mkldnn = torch.backends.mkldnn
    return hasattr(torch, "mkldnn_convolution") and mkldnn.is_available() and mkldnn.enabled


class CausalConv3d(nn.Conv3d):
    """A 3-D convolution that only looks back in time (Wan's ``CausalConv3d``).

    Spatial padding is symmetric as usual; the temporal padding ``2 * padding[0]`` goes entirely before
    the clip, so a kernel of 3 frames sees frames t-2, t-1, t.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int, int],
        stride: int | tuple[int, int, int] = 1,
        padding: int | tuple[int, int, int] = 0,
    ) -> None:
        pad_t, pad_h, pad_w = (padding,) * 3 if isinstance(padding, int) else padding
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=(0, pad_h, pad_w))
        self.context = 2 * pad_t  # frames of the past each output frame sees

    def forward(self, x: torch.Tensor, cache: StreamCache | None = None) -> torch.Tensor:
        """x: (B, C_in, T, H, W) -> (B, C_out, T, H, W) (stride 1 in time)."""
        window = causal_window(x, self, cache, self.context) if self.context else x  # (B, C_in, ctx + T, H, W)
        return conv3d(window, self.weight, self.bias, self.stride, self.padding)


def conv_frames(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """Apply a 2-D convolution to every frame of x (B, C, T, H, W).

    Runs as a 3-D convolution with a 1-frame kernel, which is the same sum as folding time into the batch
    but skips the two layout copies that folding costs.
    """
    weight = conv.weight.unsqueeze(2)  # (C_out, C_in, 1, kh, kw)
    return conv3d(x, weight, conv.bias, (1, *conv.stride), (0, *conv.padding))


class _SpatialUpsample(nn.Module):
    """Nearest-neighbour 2x upsampling of every frame, (B, C, T, H, W) -> (B, C, T, 2H, 2W)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # for an integer factor 'nearest-exact' (Wan's mode) picks the same pixels as 'nearest'
        return F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest")


class _PadBottomRight(nn.Module):
    """Zero-pad one row at the bottom and one column at the right of every frame (Wan's ``ZeroPad2d``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (0, 1, 0, 1))  # (B, C, T, H + 1, W + 1)


class _FrameConv(nn.Conv2d):
    """A `nn.Conv2d` (same weights and names) applied to each frame of a (B, C, T, H, W) tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv_frames(self, x)


class Resample(nn.Module):
    """2x spatial down- or upsampling, optionally with 2x in time (diffusers' ``WanResample``).

    Modes: ``downsample2d``, ``downsample3d`` (encoder), ``upsample2d``, ``upsample3d`` (decoder).
    ``resample.1`` is the per-frame convolution and ``time_conv`` the temporal one, as in the checkpoint.
    """

    MODES = ("downsample2d", "downsample3d", "upsample2d", "upsample3d")

    def __init__(self, dim: int, mode: str, upsample_out_dim: int | None = None) -> None:
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"unknown resample mode {mode!r}; expected one of {self.MODES}")
        self.mode = mode
        if mode.startswith("upsample"):
            out_dim = upsample_out_dim if upsample_out_dim is not None else dim // 2  # Wan2.1 halves width
            self.resample = nn.Sequential(_SpatialUpsample(), _FrameConv(dim, out_dim, 3, padding=1))
        else:
            self.resample = nn.Sequential(_PadBottomRight(), _FrameConv(dim, dim, 3, stride=2))
        if mode == "upsample3d":
            # one causal conv makes two output frames per input frame, stacked along channels
            self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0))
        elif mode == "downsample3d":
            self.time_conv = nn.Conv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1))

    def forward(self, x: torch.Tensor, cache: StreamCache | None = None) -> torch.Tensor:
        """x: (B, C, T, H, W) -> (B, C', T', H * 2^±1, W * 2^±1), T' = 1 + 2 (T - 1) up, 1 + (T - 1) / 2 down."""
        if self.mode == "upsample3d":
            x = self._upsample_time(x, cache)
        x = self.resample(x)
        if self.mode == "downsample3d":
            x = self._downsample_time(x, cache)
        return x

    def _first_and_rest(self, x: torch.Tensor, cache: StreamCache | None):
        """Split off the stream's first frame, which both time resamplers pass through unchanged."""
        if cache is not None and cache.started(self):
            return None, x
        return x[:, :, :1], x[:, :, 1:]

    def _join(self, first: torch.Tensor | None, rest: torch.Tensor) -> torch.Tensor:
        return rest if first is None else torch.cat([first, rest], dim=2)

    def _upsample_time(self, x: torch.Tensor, cache: StreamCache | None) -> torch.Tensor:
        # The frames after the first go through a causal conv that starts from zeros, not from the
        # first frame: that is what Wan's streaming decoder computes (its cache starts as "Rep").
        first, rest = self._first_and_rest(x, cache)
        if cache is not None and first is not None:
            cache.remember(self, x[:, :, :0])  # mark the stream as started
        if rest.shape[2] > 0:
            rest = self.time_conv(rest, cache)  # (B, 2C, T, H, W)
            rest = rearrange(rest, "b (two c) t h w -> b c (t two) h w", two=2)  # (B, C, 2T, H, W)
        return self._join(first, rest)

    def _downsample_time(self, x: torch.Tensor, cache: StreamCache | None) -> torch.Tensor:
        # Stride-2 windows (x[2i], x[2i+1], x[2i+2]) over the stream: each reaches 1 frame back, and the
        # first frame both passes through alone and opens the first window.
        first, rest = self._first_and_rest(x, cache)
        window = causal_window(rest, self, cache, context=1, start=first)  # (B, C, 1 + T, H, W)
        if rest.shape[2] > 0:
            conv = self.time_conv
            rest = conv3d(window, conv.weight, conv.bias, conv.stride)  # (B, C, T / 2, H, W)
        return self._join(first, rest)


# ---------------------------------------------------------------------------------------------- blocks


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


# ---------------------------------------------------------------------- Wan2.2's residual stages
#
# Wan2.2's VAE (the TI2V-5B one) wraps each whole encoder and decoder stage in a shortcut without
# parameters: the encoder's averages the stage's input down to the stage's output shape, the decoder's
# repeats it up (diffusers' ``AvgDown3D`` / ``DupUp3D``). Both only move values between channels and a
# block of frames x pixels, so they hold no past: each chunk of a stream is reshaped on its own, and only
# the stream's first chunk is treated apart (its first frame stands alone, as in the stage's resampler).


class AverageDown(nn.Module):
    """The shortcut of a residual encoder stage: (B, C_in, T, H, W) -> (B, C_out, T / ft, H / fs, W / fs).

    Each block of ft frames x fs x fs pixels is folded into channels, channel-major as in the checkpoint
    (c, ft, fh, fw), and consecutive groups of those channels are averaged down to C_out. A chunk is padded
    at its front to a whole number of ft-frame groups: the stream's first frame (alone in the first chunk,
    or first of the whole clip) is grouped with ft - 1 zero frames, as the stage's time downsample passes
    it on alone; later chunks hold whole groups.
    """

    def __init__(self, in_dim: int, out_dim: int, factor_t: int, factor_s: int) -> None:
        super().__init__()
        self.factor_t, self.factor_s = factor_t, factor_s
        self.group = in_dim * factor_t * factor_s**2 // out_dim  # folded channels per output channel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (0, 0, 0, 0, -x.shape[2] % self.factor_t, 0))  # (B, C_in, ft * T', H, W)
        ft, fs = self.factor_t, self.factor_s
        x = rearrange(x, "b c (t ft) (h fh) (w fw) -> b (c ft fh fw) t h w", ft=ft, fh=fs, fw=fs)
        return rearrange(x, "b (o g) t h w -> b o g t h w", g=self.group).mean(dim=2)  # (B, C_out, T', H', W')


class DuplicateUp(nn.Module):
    """The shortcut of a residual decoder stage: (B, C_in, T, H, W) -> (B, C_out, T * ft, H * fs, W * fs).

    The layout inverse of `AverageDown`: every channel is repeated, then each group of ft * fs * fs
    channels unfolds into ft frames x fs x fs pixels. The stream's first chunk drops its first ft - 1
    frames, so that the first latent frame gives one frame, as the stage's time upsample does.
    """

    def __init__(self, in_dim: int, out_dim: int, factor_t: int, factor_s: int) -> None:
        super().__init__()
        self.factor_t, self.factor_s = factor_t, factor_s
        self.repeats = out_dim * factor_t * factor_s**2 // in_dim

    def forward(self, x: torch.Tensor, cache: StreamCache | None = None) -> torch.Tensor:
        ft, fs = self.factor_t, self.factor_s
        x = x.repeat_interleave(self.repeats, dim=1)  # (B, C_out * ft * fs * fs, T, H, W)
        x = rearrange(x, "b (c ft fh fw) t h w -> b c (t ft) (h fh) (w fw)", ft=ft, fh=fs, fw=fs)
        opens = cache is None or cache.opens(self)
        return x[:, :, ft - 1 :] if opens and ft > 1 else x  # (B, C_out, T * ft (- ft + 1), H * fs, W * fs)


class ResidualDownBlock(nn.Module):
    """A Wan2.2 encoder stage (diffusers' ``WanResidualDownBlock``): residual blocks, then an optional 2x
    downsample (in space, and in time where `temporal`), plus an `AverageDown` shortcut over the stage."""

    def __init__(
        self, in_dim: int, out_dim: int, num_res_blocks: int, dropout: float, temporal: bool, spatial: bool
    ) -> None:
        super().__init__()
        self.avg_shortcut = AverageDown(in_dim, out_dim, 2 if temporal else 1, 2 if spatial else 1)
        dims = [in_dim] + [out_dim] * num_res_blocks
        self.resnets = nn.ModuleList([ResidualBlock(i, o, dropout) for i, o in zip(dims[:-1], dims[1:])])
        mode = "downsample3d" if temporal else "downsample2d"
        self.downsampler = Resample(out_dim, mode) if spatial else None

    def forward(self, x: torch.Tensor, cache: StreamCache | None = None) -> torch.Tensor:
        """x: (B, C_in, T, H, W) -> (B, C_out, T', H', W'), halved where the stage downsamples."""
        shortcut = self.avg_shortcut(x)  # taken first: it is smaller than x, which can then go
        for resnet in self.resnets:
            x = resnet(x, cache)
        if self.downsampler is not None:
            x = self.downsampler(x, cache)
        return x + shortcut


class ResidualUpBlock(nn.Module):
    """A Wan2.2 decoder stage (diffusers' ``WanResidualUpBlock``): num_res_blocks + 1 residual blocks, then
    an optional 2x upsample that keeps the width, plus a `DuplicateUp` shortcut over the stage."""

    def __init__(
        self, in_dim: int, out_dim: int, num_res_blocks: int, dropout: float, temporal: bool, spatial: bool
    ) -> None:
        super().__init__()
        self.avg_shortcut = DuplicateUp(in_dim, out_dim, 2 if temporal else 1, 2) if spatial else None
        dims = [in_dim] + [out_dim] * (num_res_blocks + 1)
        self.resnets = nn.ModuleList([ResidualBlock(i, o, dropout) for i, o in zip(dims[:-1], dims[1:])])
        mode = "upsample3d" if temporal else "upsample2d"
        self.upsampler = Resample(out_dim, mode, upsample_out_dim=out_dim) if spatial else None

    def forward(self, x: torch.Tensor, cache: StreamCache | None = None) -> torch.Tensor:
        """x: (B, C_in, T, H, W) -> (B, C_out, T', H', W'), doubled where the stage upsamples."""
        stage_input = x  # the shortcut is taken last: it is as large as the stage's output
        for resnet in self.resnets:
            x = resnet(x, cache)
        if self.upsampler is None:
            return x
        return self.upsampler(x, cache) + self.avg_shortcut(stage_input, cache)


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
        in_channels: input channels (pixel channels, times the patch area when the VAE patchifies).
        is_residual: Wan2.2's stages, each a `ResidualDownBlock` (``attn_scales`` is then unused, as in
            diffusers).
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
        is_residual: bool = False,
    ) -> None:
        super().__init__()
        dims = [dim * m for m in [1, *dim_mult]]
        self.conv_in = CausalConv3d(in_channels, dims[0], 3, padding=1)
        if is_residual:
            blocks = self._residual_down_blocks(dims, num_res_blocks, temperal_downsample, dropout)
        else:
            blocks = self._down_blocks(dims, num_res_blocks, attn_scales, temperal_downsample, dropout)
        self.down_blocks = nn.ModuleList(blocks)
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

    @staticmethod
    def _residual_down_blocks(dims, num_res_blocks, temperal_downsample, dropout) -> list[nn.Module]:
        last = len(dims) - 2  # the last stage keeps its resolution
        return [
            ResidualDownBlock(in_dim, out_dim, num_res_blocks, dropout, i != last and bool(temperal_downsample[i]),
                              spatial=i != last)
            for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:]))
        ]

    def forward(self, x: torch.Tensor, cache: StreamCache | None = None) -> torch.Tensor:
        """x: (B, C_in, T, H, W) -> (B, z_dim, T', H', W')."""
        x = self.conv_in(x, cache)
        for block in self.down_blocks:
            x = self.run_stage(block, x, cache)
        x = self.run_stage(self.mid_block, x, cache)
        return self.conv_out(F.silu(self.norm_out(x)), cache)


class Decoder(_CheckpointedStages):
    """Latents (B, z_dim, T', H', W') -> pixels (B, 3, 1 + 4 (T' - 1), 8 H', 8 W'), not clamped.

    Args mirror `Encoder`; ``temperal_upsample`` is the encoder's ``temperal_downsample`` reversed;
    ``is_residual``: Wan2.2's stages, each a `ResidualUpBlock` whose upsampler keeps the width.
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
        is_residual: bool = False,
    ) -> None:
        super().__init__()
        dims = [dim * m for m in [dim_mult[-1], *dim_mult[::-1]]]
        self.conv_in = CausalConv3d(z_dim, dims[0], 3, padding=1)
        self.mid_block = MidBlock(dims[0], dropout)
        self.up_blocks = nn.ModuleList()
        last = len(dim_mult) - 1
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            temporal = i != last and bool(temperal_upsample[i])
            if is_residual:
                self.up_blocks.append(ResidualUpBlock(in_dim, out_dim, num_res_blocks, dropout, temporal, i != last))
                continue
            if i > 0:
                in_dim //= 2  # Wan2.1's upsamplers halve the width
            mode = None if i == last else ("upsample3d" if temporal else "upsample2d")
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
