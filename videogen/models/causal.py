"""Causal-in-time layers of the video VAE and the cache that lets them stream.

Wan2.1's VAE ("Wan: Open and Advanced Large-Scale Video Generative Models", 2025, section 3.1) is causal
in time: output frame t depends on input frames <= t only. Every temporal operation looks back a fixed
number of frames, its *context*:

- a 3x3x3 causal convolution looks at 2 past frames (zeros before the first frame);
- the stride-2 temporal downsample passes the first frame through alone and reduces the rest in pairs,
  each window reaching 1 frame back;
- the temporal upsample passes the first frame through alone and doubles the rest, with a causal
  convolution over the frames after the first one (zeros before them).

So the whole clip can be processed at once (the *parallel* path, each layer padding its own past), or
chunk by chunk (the *streaming* path): a `StreamCache` then carries the last `context` frames each layer
saw into the next chunk, and the two paths compute the same numbers. `causal_window` is the one place
where that logic lives; every causal layer calls it.

The state-dict names and tensor shapes are those of diffusers' ``WanCausalConv3d`` and ``WanResample``
so that Wan2.1 checkpoints load as they are.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange


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
    return hasattr(torch, "mkldnn_convolution") and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled


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
            rest = conv3d(window, self.time_conv.weight, self.time_conv.bias, self.time_conv.stride)  # (B, C, T/2, H, W)
        return self._join(first, rest)
