"""The causal video VAE: Wan2.1's and Wan2.2's architectures, diffusers' ``AutoencoderKLWan`` checkpoint format.

`CausalVideoVAE` compresses pixels (B, 3, T, H, W) in [-1, 1] into latents (B, C, 1 + (T - 1) / 4, H / s,
W / s): 4x in time, causal in time, the first frame encoded on its own. Two layouts, one class:

- Wan2.1 (and the Wan2.2 A14B models): C = 16, s = 8;
- Wan2.2's TI2V-5B VAE (``is_residual=True, patch_size=2, z_dim=48``): a 2x2 patchify folds pixels into
  12 channels in front of an 8x VAE whose stages carry parameter-free shortcuts, and a decoder of its own
  width (``decoder_base_dim``): C = 48, s = 16.

Its config keys and state-dict names are those of diffusers' ``AutoencoderKLWan`` (including the
``temperal_downsample`` spelling), so ``CausalVideoVAE.from_pretrained(folder)`` loads the ``vae/`` of a
Wan diffusers checkpoint as is, and ``save_pretrained`` writes a folder diffusers loads.

Two paths compute the same numbers (see `videogen.models.vae_blocks`):

- parallel (``streaming=False``): each layer runs over the whole clip; what training uses, with optional
  gradient checkpointing (``vae.enable_gradient_checkpointing()``);
- streaming (``streaming=True``, `encode_frames`, `decode_frames`): the first frame, then chunks of 4
  frames to encode, one latent frame at a time to decode, with a `StreamCache` carrying the causal
  context. Memory stays constant however long the clip; no autograd graph is kept.

Frames larger than ``vae.tiling.auto_pixels`` (or any, with ``tiled=True``) are processed in
overlapping, cross-faded spatial tiles (see the tiling section at the end).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence

import math
from dataclasses import dataclass

import torch
from einops import rearrange
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from videogen.errors import ConfigError, InputError
from videogen.models.config import as_own_class
from videogen.models.vae_blocks import CausalConv3d, Decoder, Encoder, StreamCache

# Per-channel statistics of Wan2.1 latents (diffusers' AutoencoderKLWan defaults); Wan pipelines feed
# the transformer (z - mean) / std.
WAN21_LATENTS_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)  # fmt: skip
WAN21_LATENTS_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)  # fmt: skip


class DiagonalGaussian:
    """The encoder's posterior N(mean, std^2), one independent Gaussian per latent element.

    Args:
        moments: (B, 2C, T', H', W'), mean then log-variance along channels.
    """

    def __init__(self, moments: torch.Tensor) -> None:
        self.moments = moments
        self.mean, logvar = moments.chunk(2, dim=1)  # each (B, C, T', H', W')
        self.logvar = logvar.clamp(-30.0, 20.0)  # as diffusers / LDM, keeps exp() finite
        self.std = torch.exp(0.5 * self.logvar)

    def mode(self) -> torch.Tensor:
        return self.mean

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """mean + std * noise, the noise drawn from `generator` (on its own device) when given."""
        device = generator.device if generator is not None else self.mean.device
        noise = torch.randn(self.mean.shape, generator=generator, device=device, dtype=self.mean.dtype)
        return self.mean + self.std * noise.to(self.mean.device)

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) per sample, (B,), summed over every latent element (Kingma & Welling, App. B)."""
        terms = self.mean.pow(2) + self.std.pow(2) - 1.0 - self.logvar
        return 0.5 * terms.flatten(1).sum(dim=1)


class CausalVideoVAE(ModelMixin, ConfigMixin):
    """Wan's causal 3-D video VAE (2.1 and 2.2). Config keys are diffusers' ``AutoencoderKLWan`` ones.

    Args:
        base_dim: width of the first encoder stage.
        decoder_base_dim: width of the last decoder stage (None: ``base_dim``; Wan2.2 TI2V: 256 to 160).
        z_dim: latent channels (Wan2.1: 16, Wan2.2 TI2V: 48).
        dim_mult: width multiplier of each stage; every stage but the last halves H and W.
        num_res_blocks: residual blocks per encoder stage (the decoder has one more).
        attn_scales: encoder resolutions (1.0, 0.5, ...) with extra attention blocks (Wan2.1: none;
            unused by residual stages, as in diffusers).
        temperal_downsample: per downsampling stage, whether it also halves time (Wan: F, T, T).
        dropout: dropout inside residual blocks.
        latents_mean, latents_std: per-channel latent statistics for `normalize` / `denormalize`.
        is_residual: Wan2.2's stages, each wrapped in a parameter-free shortcut, the decoder's upsamplers
            keeping the width (see `videogen.models.vae_blocks`).
        in_channels, out_channels: the encoder's input and the decoder's output channels, counted after
            the patchify: pixel channels times ``patch_size ** 2`` (Wan2.2 TI2V: 12 for RGB).
        patch_size: pixels per side folded into channels before the encoder (and unfolded after the
            decoder); None or 1 for none (Wan2.1), 2 for Wan2.2 TI2V.
        scale_factor_temporal, scale_factor_spatial: the compression factors, as pipelines read them
            (the spatial one includes the patchify); must agree with the architecture; None records the
            architecture's own.
    """

    _supports_gradient_checkpointing = True

    @classmethod
    def extract_init_dict(cls, config_dict, **kwargs):
        """diffusers' config parsing, minus its import of the class a folder names (see `as_own_class`)."""
        return super().extract_init_dict(as_own_class(cls, config_dict, "AutoencoderKLWan"), **kwargs)

    @register_to_config
    def __init__(
        self,
        base_dim: int = 96,
        decoder_base_dim: int | None = None,
        z_dim: int = 16,
        dim_mult: Sequence[int] = (1, 2, 4, 4),
        num_res_blocks: int = 2,
        attn_scales: Sequence[float] = (),
        temperal_downsample: Sequence[bool] = (False, True, True),
        dropout: float = 0.0,
        latents_mean: Sequence[float] = WAN21_LATENTS_MEAN,
        latents_std: Sequence[float] = WAN21_LATENTS_STD,
        is_residual: bool = False,
        in_channels: int = 3,
        out_channels: int = 3,
        patch_size: int | None = None,
        scale_factor_temporal: int | None = 4,
        scale_factor_spatial: int | None = 8,
    ) -> None:
        super().__init__()
        _check_config(self.config)
        if scale_factor_temporal is None or scale_factor_spatial is None:
            self.register_to_config(scale_factor_temporal=self.temporal_compression,
                                    scale_factor_spatial=self.spatial_compression)
        self.encoder = Encoder(
            base_dim, z_dim * 2, dim_mult, num_res_blocks, attn_scales, temperal_downsample, dropout, in_channels,
            is_residual,
        )
        self.quant_conv = CausalConv3d(z_dim * 2, z_dim * 2, 1)
        self.post_quant_conv = CausalConv3d(z_dim, z_dim, 1)
        decoder_dim = decoder_base_dim or base_dim
        temperal_upsample = temperal_downsample[::-1]
        self.decoder = Decoder(
            decoder_dim, z_dim, dim_mult, num_res_blocks, temperal_upsample, dropout, out_channels, is_residual
        )
        self.tiling = Tiling()

    # ------------------------------------------------------------------------------------- properties

    @property
    def temporal_compression(self) -> int:
        """Pixel frames per latent frame after the first (4 for Wan2.1)."""
        return 2 ** sum(bool(t) for t in self.config.temperal_downsample)

    @property
    def spatial_compression(self) -> int:
        """Image pixels per latent pixel along H and W, the patchify included (8 for Wan2.1, 16 for Wan2.2 TI2V)."""
        return 2 ** (len(self.config.dim_mult) - 1) * self.patch

    @property
    def patch(self) -> int:
        """Pixels per side of the patches folded into channels before the encoder (config ``patch_size``; 1: none)."""
        return self.config.patch_size or 1

    @property
    def latent_channels(self) -> int:
        return self.config.z_dim

    # ------------------------------------------------------------------------------------------ scaling

    def _stats(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.tensor(self.config.latents_mean, device=z.device, dtype=z.dtype).view(1, -1, 1, 1, 1)
        std = torch.tensor(self.config.latents_std, device=z.device, dtype=z.dtype).view(1, -1, 1, 1, 1)
        return mean, std

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        """Latents as the transformer sees them: (z - mean) / std per channel. z: (B, C, T', H', W')."""
        mean, std = self._stats(z)
        return (z - mean) / std

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        """The inverse of `normalize`: z * std + mean per channel."""
        mean, std = self._stats(z)
        return z * std + mean

    # ------------------------------------------------------------------------------------------- encode

    def encode(self, video: torch.Tensor, *, streaming: bool = False, tiled: bool | None = None) -> DiagonalGaussian:
        """Pixels -> posterior over latents.

        Args:
            video: (B, 3, T, H, W) in [-1, 1], T = 1 + 4k, H and W multiples of s = `spatial_compression`.
            streaming: encode the first frame, then 4-frame chunks, with a stream cache (no autograd).
            tiled: force spatial tiling on or off; None decides by frame size (``self.tiling``).

        Returns a `DiagonalGaussian` over (B, z_dim, 1 + k, H / s, W / s).
        """
        video = self._check_video(video)
        if not streaming:
            return DiagonalGaussian(self.quant_conv(self._encode_chunk(video, None, video, tiled)))
        posteriors = list(self.encode_frames(video.split(self._chunk_lengths(video.shape[2]), dim=2), tiled=tiled))
        return DiagonalGaussian(torch.cat([p.moments for p in posteriors], dim=2))

    @torch.no_grad()
    def encode_frames(self, chunks: Iterable[torch.Tensor], *, tiled: bool | None = None) -> Iterator[DiagonalGaussian]:
        """Streaming encode: pixel chunks (B, 3, t, H, W) of any lengths in, one latent frame at a time out.

        Frames are regrouped into the first frame, then chunks of 4, each giving one latent frame (a
        `DiagonalGaussian` over (B, z_dim, 1, H / s, W / s)). Only the causal cache and at most one
        chunk of pixels are held. Frames left over at the end that do not fill a chunk raise InputError.
        """
        caches: defaultdict = defaultdict(StreamCache)
        pending, need = [], 1
        for chunk in chunks:
            pending.append(self._check_video(chunk, whole_clip=False))
            while sum(p.shape[2] for p in pending) >= need:
                frames = torch.cat(pending, dim=2)  # (B, 3, >= need, H, W)
                pending = [frames[:, :, need:]] if frames.shape[2] > need else []
                yield DiagonalGaussian(self.quant_conv(self._encode_chunk(frames[:, :, :need], caches, frames, tiled)))
                need = self.temporal_compression
        left = sum(p.shape[2] for p in pending)
        if left:
            raise InputError(
                f"the last {left} frame(s) do not fill a chunk of {self.temporal_compression}: "
                f"the VAE takes 1 + {self.temporal_compression}k frames"
            )

    def _encode_chunk(self, x: torch.Tensor, caches, like: torch.Tensor, tiled: bool | None) -> torch.Tensor:
        """Encoder over x (B, 3, t, H, W), patchified, tiled or not; caches is None (parallel) or one per tile."""
        x = patchify(x, self.patch)  # (B, 3 p^2, t, H / p, W / p)
        if not self.tiling.wanted(tiled, like.shape[-2], like.shape[-1]):
            return self.encoder(x, caches[0] if caches is not None else None)
        scale = self.spatial_compression // self.patch  # encoder input pixels per latent pixel
        grid = tile_grid(x.shape[-2] // scale, x.shape[-1] // scale, self.tiling)
        return run_tiled(lambda t, i: self.encoder(t, caches[i] if caches is not None else None), x, grid, scale, 1)

    def _chunk_lengths(self, frames: int) -> list[int]:
        return [1] + [self.temporal_compression] * ((frames - 1) // self.temporal_compression)

    # ------------------------------------------------------------------------------------------- decode

    def decode(
        self, latents: torch.Tensor, *, streaming: bool = False, tiled: bool | None = None, clamp: bool = True
    ) -> torch.Tensor:
        """Latents (B, z_dim, T', H', W') -> pixels (B, 3, 1 + 4 (T' - 1), s H', s W') in [-1, 1].

        streaming: one latent frame at a time with a stream cache (no autograd); tiled: as in `encode`;
        clamp=False returns the decoder's raw output, which training needs: clamping zeroes the gradient of
        every pixel pushed past the range, and a pixel stuck at the wrong extreme (black where the target is
        white, both range ends in the shapes world) would never recover.
        """
        latents = self._check_latents(latents)
        if streaming:
            return torch.cat(list(self.decode_frames(latents, tiled=tiled)), dim=2)
        out = self._decode_chunk(self.post_quant_conv(latents), None, tiled)
        return out.clamp(-1.0, 1.0) if clamp else out

    @torch.no_grad()
    def decode_frames(
        self, latents: torch.Tensor | Iterable[torch.Tensor], *, tiled: bool | None = None
    ) -> Iterator[torch.Tensor]:
        """Streaming decode: yields pixel chunks (B, 3, t, H, W) in [-1, 1], in order.

        Args:
            latents: (B, z_dim, T', H', W'), or an iterable of latent chunks (B, z_dim, t', H', W')
                (for example the means `encode_frames` yields).
            tiled: as in `encode`.

        Each latent frame is decoded on its own (1 pixel frame for the first, 4 for the others) and only
        the causal cache is held between chunks, so memory does not grow with the clip's length.
        """
        if isinstance(latents, torch.Tensor):
            latents = self._check_latents(latents).split(1, dim=2)
        caches: defaultdict = defaultdict(StreamCache)
        for z in latents:
            z = self._check_latents(z)
            yield self._decode_chunk(self.post_quant_conv(z), caches, tiled).clamp(-1.0, 1.0)

    def _decode_chunk(self, z: torch.Tensor, caches, tiled: bool | None) -> torch.Tensor:
        """Decoder over z (B, z_dim, t', H', W'), tiled or not, unpatchified; caches is None (parallel) or one
        per tile."""
        s = self.spatial_compression
        if not self.tiling.wanted(tiled, z.shape[-2] * s, z.shape[-1] * s):
            out = self.decoder(z, caches[0] if caches is not None else None)
        else:
            grid, scale = tile_grid(z.shape[-2], z.shape[-1], self.tiling), s // self.patch
            out = run_tiled(lambda t, i: self.decoder(t, caches[i] if caches is not None else None), z, grid, 1, scale)
        return unpatchify(out, self.patch)  # (B, 3, t, H' s, W' s)

    def forward(self, video: torch.Tensor, *, sample: bool = False, generator: torch.Generator | None = None):
        """Encode and decode (parallel path), for training: returns (reconstruction, posterior)."""
        posterior = self.encode(video)
        z = posterior.sample(generator) if sample else posterior.mode()
        return self.decode(z), posterior

    # --------------------------------------------------------------------------------------- checks

    def _check_video(self, video: torch.Tensor, whole_clip: bool = True) -> torch.Tensor:
        """video: (B, C, T, H, W) floats; T = 1 + 4k unless a chunk of a stream; H, W multiples of s."""
        c, s, tc = self.config.in_channels // self.patch**2, self.spatial_compression, self.temporal_compression
        if not isinstance(video, torch.Tensor) or video.dim() != 5 or video.shape[1] != c:
            shape = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
            raise InputError(f"video must be (batch, {c}, frames, height, width); got {shape}")
        t, h, w = video.shape[2:]
        if whole_clip and (t - 1) % tc != 0:
            raise InputError(f"video has {t} frames; the VAE takes 1 + {tc}k frames (1, {1 + tc}, {1 + 2 * tc}, ...)")
        if h % s or w % s or h == 0 or w == 0:
            raise InputError(f"video frames are {h}x{w} (HxW); height and width must be positive multiples of {s}")
        weights = self._first_weight()
        return video.to(device=weights.device, dtype=weights.dtype if video.is_floating_point() else torch.float32)

    def _check_latents(self, z: torch.Tensor) -> torch.Tensor:
        c = self.config.z_dim
        if not isinstance(z, torch.Tensor) or z.dim() != 5 or z.shape[1] != c or 0 in z.shape:
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise InputError(f"latents must be (batch, {c}, frames, height, width), none empty; got {shape}")
        weights = self._first_weight()
        return z.to(device=weights.device, dtype=weights.dtype)

    def _first_weight(self) -> torch.Tensor:
        """Where the weights are and in what dtype, read off one (diffusers' ``self.device`` imports its
        group-offloading hooks, and PEFT with them: 0.7 s of a cold `videogen generate`)."""
        return self.decoder.conv_in.weight


def _check_config(config) -> None:
    """Refuse, naming the key, what this implementation cannot build."""
    stages = len(config.dim_mult)
    if stages < 1 or len(config.temperal_downsample) != stages - 1:
        raise ConfigError(
            f"VAE config: temperal_downsample needs one entry per downsampling stage ({stages - 1}); "
            f"got {list(config.temperal_downsample)}"
        )
    if sum(bool(t) for t in config.temperal_downsample) > 2:
        raise ConfigError("VAE config: at most 2 temporal downsamples (4x) are supported, as in Wan2.1")
    for key in ("latents_mean", "latents_std"):
        if len(getattr(config, key)) != config.z_dim:
            raise ConfigError(f"VAE config: {key} has {len(getattr(config, key))} values; z_dim is {config.z_dim}")
    patch = _check_patch(config)
    if config.is_residual:
        _check_residual_widths(config)
    temporal = 2 ** sum(bool(t) for t in config.temperal_downsample)
    for key, value in (("scale_factor_temporal", temporal), ("scale_factor_spatial", 2 ** (stages - 1) * patch)):
        if getattr(config, key) not in (None, value):
            raise ConfigError(f"VAE config: {key}={getattr(config, key)} but the architecture gives {value}")


def _check_patch(config) -> int:
    """The patch side (1 for none); the encoder's and decoder's channels must be whole patches of pixels."""
    patch = config.patch_size or 1
    if not isinstance(patch, int) or isinstance(patch, bool) or patch < 1:
        raise ConfigError(f"VAE config: patch_size must be null or a positive integer; got {config.patch_size!r}")
    if config.is_residual and patch == 1:
        # every residual VAE published (Wan2.2 TI2V) patchifies; refused so a half-converted config shows
        raise ConfigError("VAE config: is_residual=True is the Wan2.2 VAE, which also patchifies: "
                          "give patch_size=2 and in_channels=out_channels=12")
    for key in ("in_channels", "out_channels"):
        if getattr(config, key) % patch**2:
            raise ConfigError(
                f"VAE config: patch_size={patch} is the Wan2.2 VAE, whose {key} counts channels after the "
                f"{patch}x{patch} patchify: {getattr(config, key)} is not a multiple of {patch**2} (Wan2.2: 12 for RGB)"
            )
    return patch


def _check_residual_widths(config) -> None:
    """Residual stages' shortcuts regroup channels x (frames x pixels) evenly: the widths must allow it."""
    mults, last = list(config.dim_mult), len(config.dim_mult) - 1
    down = [config.base_dim * m for m in [1, *mults]]
    up = [(config.decoder_base_dim or config.base_dim) * m for m in [mults[-1], *mults[::-1]]]
    time_down, time_up = [*config.temperal_downsample, False], list(config.temperal_downsample)[::-1]
    for i in range(last + 1):
        factor = (2 if time_down[i] else 1) * (4 if i < last else 1)  # frames x pixels one shortcut folds
        if down[i] * factor % down[i + 1]:
            raise ConfigError(f"VAE config: encoder stage {i} maps {down[i]} channels to {down[i + 1]}, which its "
                              f"shortcut cannot average ({down[i]} x {factor} is not a multiple of {down[i + 1]})")
        factor = (2 if i < last and time_up[i] else 1) * 4
        if i < last and up[i + 1] * factor % up[i]:
            raise ConfigError(f"VAE config: decoder stage {i} maps {up[i]} channels to {up[i + 1]}, which its "
                              f"shortcut cannot repeat ({up[i + 1]} x {factor} is not a multiple of {up[i]})")


def patchify(x: torch.Tensor, patch: int) -> torch.Tensor:
    """Fold each patch x patch block of pixels into channels: (B, C, T, H, W) -> (B, C p^2, T, H / p, W / p).

    The channel order (c, column, row) is Wan2.2's, which its checkpoint's first convolution expects.
    """
    if patch == 1:
        return x
    return rearrange(x, "b c t (h ph) (w pw) -> b (c pw ph) t h w", ph=patch, pw=patch)


def unpatchify(x: torch.Tensor, patch: int) -> torch.Tensor:
    """The inverse of `patchify`: (B, C p^2, T, H, W) -> (B, C, T, H p, W p)."""
    if patch == 1:
        return x
    return rearrange(x, "b (c pw ph) t h w -> b c t (h ph) (w pw)", ph=patch, pw=patch)


# -------------------------------------------------------------------------------------- tiling
#
# Spatial tiling for the video VAE: encode or decode frames too large to process at once.
#
# A frame is cut into overlapping tiles on a grid laid out in latent pixels; each tile goes through the
# encoder or decoder on its own (streaming keeps one `StreamCache` per tile), and the outputs are merged
# by a weighted average whose weights ramp linearly across each overlap, so neighbouring tiles cross-fade
# instead of meeting at a hard edge (the blending of diffusers' and Wan's tiled VAEs, written as one
# normalized sum, and keeping clear of each tile's own outer edge, see `ramp`). Tiles along an axis are
# spread evenly, so every overlap is at least the requested one.


@dataclass
class Tiling:
    """When and how to tile. Sizes are in latent pixels (one latent pixel = 8 image pixels in Wan2.1, 16 in
    Wan2.2 TI2V, whose decoder works on 2x2 patches: a tile of 32 there is 512 image pixels).

    Set ``vae.tiling`` to change it; ``tiled=True/False`` on a call overrides the automatic choice.
    """

    tile: int = 32  # tile side (32 latent = 256 image pixels in Wan2.1)
    overlap: int = 8  # minimum overlap of neighbouring tiles, cross-faded
    auto_pixels: int = 1280 * 720  # frames with more image pixels than this are tiled automatically

    def __post_init__(self) -> None:
        if not 0 < self.overlap < self.tile:
            raise ValueError(f"tiling overlap must be in (0, tile); got overlap={self.overlap}, tile={self.tile}")

    def wanted(self, tiled: bool | None, height: int, width: int) -> bool:
        """Whether to tile an image-pixel frame of `height` x `width` given the caller's `tiled` flag."""
        return self.auto_pixels < height * width if tiled is None else tiled


@dataclass(frozen=True)
class Span:
    """One tile along one axis, in latent pixels: [start, end), overlapping its neighbours by lo / hi."""

    start: int
    end: int
    lo: int  # overlap with the previous tile (0 for the first)
    hi: int  # overlap with the next tile (0 for the last)


def axis_spans(size: int, tile: int, overlap: int) -> list[Span]:
    """Evenly spread tiles of length `tile` covering [0, size), neighbours overlapping by >= `overlap`."""
    if size <= tile:
        return [Span(0, size, 0, 0)]
    count = math.ceil((size - overlap) / (tile - overlap))
    starts = [round(i * (size - tile) / (count - 1)) for i in range(count)]
    ends = [s + tile for s in starts]
    return [
        Span(s, e, ends[i - 1] - s if i > 0 else 0, e - starts[i + 1] if i + 1 < count else 0)
        for i, (s, e) in enumerate(zip(starts, ends))
    ]


def ramp(length: int, lo: int, hi: int) -> torch.Tensor:
    """Blend weights (length,): rising across the first `lo` entries, falling across the last `hi`, else 1.

    Within an overlap of n entries, the outer quarter next to the tile's own edge gets (almost) no weight:
    that is where the tile's zero padding distorts its output most, so the neighbour, for which those
    pixels are well inside, provides them. The middle half cross-fades linearly; there two neighbours'
    weights (k + 1) / (n/2 + 1) and (n/2 - k) / (n/2 + 1) sum to 1. Weights stay > 0, so the normalized
    sum is defined everywhere.
    """
    k = torch.arange(length, dtype=torch.float32)

    def rise(position: torch.Tensor, n: int) -> torch.Tensor:
        if n == 0:
            return torch.ones(length)
        margin = n // 4
        return ((position - margin + 1) / (n - 2 * margin + 1)).clamp(1e-4, 1.0)

    return torch.minimum(rise(k, lo), rise(length - 1 - k, hi))


def tile_grid(height: int, width: int, tiling: Tiling) -> list[tuple[Span, Span]]:
    """(row span, column span) of every tile of a latent frame of `height` x `width`, row-major."""
    rows = axis_spans(height, tiling.tile, tiling.overlap)
    cols = axis_spans(width, tiling.tile, tiling.overlap)
    return [(r, c) for r in rows for c in cols]


def run_tiled(
    fn: Callable[[torch.Tensor, int], torch.Tensor],
    x: torch.Tensor,
    grid: list[tuple[Span, Span]],
    scale_in: int,
    scale_out: int,
) -> torch.Tensor:
    """Apply `fn(tile, index)` to each tile of x and cross-fade the results into one tensor.

    Args:
        fn: maps a tile of x (B, C, T, h * scale_in, w * scale_in) to (B, C', T', h * scale_out,
            w * scale_out); ``index`` names the tile (for its stream cache).
        x: (B, C, T, H * scale_in, W * scale_in).
        grid: tiles in latent pixels, from `tile_grid`.
        scale_in, scale_out: pixels of x and of fn's output per latent pixel (8 for the encoder's input
            or the decoder's output, in patches when the VAE patchifies; 1 for latents).

    Returns (B, C', T', H * scale_out, W * scale_out).
    """
    out = weight_sum = None
    for index, (row, col) in enumerate(grid):
        tile = x[..., row.start * scale_in : row.end * scale_in, col.start * scale_in : col.end * scale_in]
        y = fn(tile, index)  # (B, C', T', h, w)
        if out is None:
            b, c, t = y.shape[:3]
            height, width = grid[-1][0].end * scale_out, grid[-1][1].end * scale_out
            out = y.new_zeros(b, c, t, height, width)  # (B, C', T', H, W)
            weight_sum = y.new_zeros(height, width)  # (H, W)
        w_rows = ramp(y.shape[-2], row.lo * scale_out, row.hi * scale_out)
        w_cols = ramp(y.shape[-1], col.lo * scale_out, col.hi * scale_out)
        weight = torch.outer(w_rows, w_cols).to(y)  # (h, w)
        rows = slice(row.start * scale_out, row.end * scale_out)
        cols = slice(col.start * scale_out, col.end * scale_out)
        out[..., rows, cols] += y * weight
        weight_sum[rows, cols] += weight
    return out / weight_sum
