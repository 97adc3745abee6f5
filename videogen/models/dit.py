"""The Wan2.1 text-to-video diffusion transformer (DiT), our own implementation, diffusers' weight layout.

Latents ``(B, C, T', H', W')`` are cut into spacetime patches (1x2x2) by a strided Conv3d, each patch a token
with a 3-D rotary position (RoPE, Su et al. 2021, split over time, height and width). Every block is
self-attention with RMS-normed queries and keys, cross-attention to the projected T5 states, and a GELU(tanh)
feed-forward; the timestep drives adaLN modulation (Peebles & Xie 2023, "DiT", Section 3.2) through one
projection shared by all blocks plus a learned per-block offset table (the Wan 2025 technical report's
transformer design). An output head with its own table projects tokens back to patches and un-patchifies them.

The timestep is one per sample ``(B,)`` or one per token ``(B, L)``: tokens of known frames get timestep 0,
which is how one model does text-to-video, image-to-video, extension and interpolation. Norms, modulation,
RoPE and the timestep embedding run in fp32 whatever the weights' dtype.

Config keys and state-dict names are those of diffusers' ``WanTransformer3DModel`` (text-to-video layout), so
``VideoDiT.from_pretrained(folder)`` loads the ``transformer/`` folder of a Wan2.1-T2V diffusers checkpoint
(sharded or not) and ``save_pretrained`` writes one that diffusers loads.
"""

from __future__ import annotations

import json
import math
from typing import Sequence

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from einops import rearrange
from torch import nn

from videogen.errors import InputError, ModelError
from videogen.models.attention import attention, backend_name, resolve_backend
from videogen.models.config import as_own_class

# Published configurations (the ``transformer/config.json`` of the Wan2.1 diffusers checkpoints), and a tiny one
# for tests and the CPU demo. Keys not given take the constructor defaults.
PRESETS: dict[str, dict] = {
    "wan2.1-t2v-1.3b": dict(num_attention_heads=12, attention_head_dim=128, ffn_dim=8960, num_layers=30),
    "wan2.1-t2v-14b": dict(num_attention_heads=40, attention_head_dim=128, ffn_dim=13824, num_layers=40),
    "tiny": dict(num_attention_heads=2, attention_head_dim=16, text_dim=32, freq_dim=32, ffn_dim=64, num_layers=2),
}

QK_NORM = "rms_norm_across_heads"  # the only query/key norm Wan uses: one RMSNorm over all heads together


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: normalized ``x`` shifted and scaled per sample or per token (DiT, Section 3.2)."""
    return torch.addcmul(shift, x, 1 + scale)


def _checkpoint(module: nn.Module, *args):
    return torch.utils.checkpoint.checkpoint(module.__call__, *args, use_reentrant=False)


def _linear_fp32(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` computed in fp32 whatever the layer's dtype (the timestep path is tiny, precision matters)."""
    bias = None if layer.bias is None else layer.bias.float()
    return F.linear(x.float(), layer.weight.float(), bias)


# --------------------------------------------------------------------------------------------- norms


class RMSNorm(nn.Module):
    """RMS normalization (Zhang & Sennrich 2019) computed in fp32, returned in the input dtype."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps).to(x.dtype)


class LayerNormFP32(nn.Module):
    """LayerNorm computed and returned in fp32, optionally with a learned affine transform."""

    def __init__(self, dim: int, eps: float, affine: bool = False):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None
        self.bias = nn.Parameter(torch.zeros(dim)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), (x.shape[-1],), weight, bias, self.eps)


# --------------------------------------------------------------------------------- positions and time


def rope_axis_dims(head_dim: int) -> tuple[int, int, int]:
    """Channels of each head given to time, height and width: height and width get 2*(d//6) each (Wan)."""
    hw = 2 * (head_dim // 6)
    return head_dim - 2 * hw, hw, hw


class RotaryEmbedding3D(nn.Module):
    """3-D RoPE tables: each axis rotates its own slice of a head's channel pairs by position * frequency.

    The cos/sin tables are fp32 non-persistent buffers (not in checkpoints) that stay fp32 when the model is
    cast to bf16/fp16: a bf16 angle table would misplace far positions.
    """

    def __init__(self, head_dim: int, max_len: int, theta: float = 10000.0):
        super().__init__()
        self.max_len = max_len
        self.axis_dims = rope_axis_dims(head_dim)
        if head_dim % 2 or any(d % 2 for d in self.axis_dims):
            raise ModelError(f"attention_head_dim {head_dim} cannot be split into even RoPE axes {self.axis_dims}")
        positions = torch.arange(max_len, dtype=torch.float64)
        # theta_i = 10000^(-2i/d) per axis (RoFormer, Section 3.2); angles in fp64 before the fp32 cos/sin, as Wan.
        angles = torch.cat([torch.outer(positions, self._frequencies(d, theta)) for d in self.axis_dims], dim=1)
        self.register_buffer("cos", angles.cos().float(), persistent=False)  # (max_len, head_dim / 2)
        self.register_buffer("sin", angles.sin().float(), persistent=False)  # (max_len, head_dim / 2)

    @staticmethod
    def _frequencies(dim: int, theta: float) -> torch.Tensor:
        return 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # (dim / 2,)

    def _apply(self, fn, recurse=True):
        # Follow the model to its device, but never to a lower precision.
        tables = self.cos, self.sin
        super()._apply(fn, recurse)
        self.cos, self.sin = (t.to(device=self.cos.device, dtype=torch.float32) for t in tables)
        return self

    def forward(self, grid: tuple[int, int, int]) -> torch.Tensor:
        """Unit complex rotations ``(L, head_dim / 2)`` for the tokens of a ``(T, H, W)`` grid, (t h w) order."""
        if max(grid) > self.max_len:
            raise InputError(f"latent patch grid {grid} exceeds the model's rope_max_seq_len {self.max_len}")
        return torch.complex(self._table(self.cos, grid), self._table(self.sin, grid))  # complex64

    def _table(self, table: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        t, h, w = grid
        tt, th, tw = table.split([d // 2 for d in self.axis_dims], dim=1)
        full = torch.cat(
            [
                tt[:t, None, None].expand(t, h, w, -1),
                th[None, :h, None].expand(t, h, w, -1),
                tw[None, None, :w].expand(t, h, w, -1),
            ],
            dim=-1,
        )  # (T, H, W, head_dim / 2)
        return rearrange(full, "t h w d -> (t h w) d")


def apply_rope(x: torch.Tensor, cis: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (x[2i], x[2i+1]) of ``x`` ``(B, L, heads, dim)`` by the unit complex numbers ``cis``
    ``(L, dim / 2)``, in fp32 (RoFormer, Section 3.2, in its complex form), returned in the dtype of ``x``.

    One complex multiply instead of four real ones and a re-interleave: the same numbers, a fraction of the
    memory traffic.
    """
    pairs = torch.view_as_complex(rearrange(x.float(), "b l h (d two) -> b l h d two", two=2).contiguous())
    rotated = torch.view_as_real(pairs * cis[None, :, None])  # (B, L, heads, dim / 2, 2)
    return rearrange(rotated, "b l h d two -> b l h (d two)").to(x.dtype)


class FramePosition(nn.Module):
    """Where each token sits in its frame, as features added to its embedding (not in Wan2.1).

    RoPE makes attention see only offsets between tokens, so a DiT cannot tell where in the frame a token
    is: from noise it cannot put an object "on the right" of the frame. Here each token gets sin/cos
    features of its row and column centre, normalised to (0, 1) so that they mean the same place at every
    resolution, projected to the model width by a linear layer that starts at zero (a warm-started model
    begins exactly as it was). diffusers' WanTransformer3DModel has no such part: it would load such a
    checkpoint without it, so a model that uses it is ours alone.
    """

    def __init__(self, features: int, dim: int):
        super().__init__()
        self.proj = nn.Linear(features, dim)

    def forward(self, grid: tuple[int, int, int]) -> torch.Tensor:
        """``(L, dim)`` for the tokens of a ``(T, H, W)`` grid, (t h w) order; the same in every frame."""
        t, h, w = grid
        device = self.proj.weight.device
        per_axis = self.proj.in_features // 4  # frequencies per axis, each a cos and a sin
        frequencies = math.pi * torch.arange(1, per_axis + 1, device=device, dtype=torch.float32)

        def axis(size: int) -> torch.Tensor:  # (size, 2 * per_axis)
            angles = ((torch.arange(size, device=device, dtype=torch.float32) + 0.5) / size)[:, None] * frequencies
            return torch.cat([angles.cos(), angles.sin()], dim=-1)

        rows = axis(h)[None, :, None].expand(t, h, w, -1)
        cols = axis(w)[None, None, :].expand(t, h, w, -1)
        features = rearrange(torch.cat([rows, cols], dim=-1), "t h w d -> (t h w) d")
        return self.proj(features.to(self.proj.weight.dtype))


def timestep_sinusoid(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding ``(..., dim)`` of timesteps on the 0..1000 scale, cosines first
    (Vaswani et al. 2017, Section 3.5; the [cos, sin] order of Wan and diffusers' ``flip_sin_to_cos``)."""
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    angles = t.float()[..., None] * torch.exp(exponent)  # (..., dim / 2)
    emb = torch.cat([angles.cos(), angles.sin()], dim=-1)
    return F.pad(emb, (0, dim % 2))


class TimestepMLP(nn.Module):
    """Sinusoid -> Linear -> SiLU -> Linear (diffusers' ``TimestepEmbedding`` names)."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _linear_fp32(self.linear_2, F.silu(_linear_fp32(self.linear_1, x)))


class TextProjection(nn.Module):
    """T5 states -> Linear -> GELU(tanh) -> Linear, into the model width (diffusers' names)."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.gelu(self.linear_1(x), approximate="tanh"))


class ConditionEmbedder(nn.Module):
    """Timestep -> (embedding for the head, 6 modulation vectors shared by all blocks); text -> model width."""

    def __init__(self, dim: int, freq_dim: int, text_dim: int):
        super().__init__()
        self.freq_dim = freq_dim
        self.time_embedder = TimestepMLP(freq_dim, dim)
        self.time_proj = nn.Linear(dim, 6 * dim)
        self.text_embedder = TextProjection(text_dim, dim)

    def time(self, timestep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``timestep`` ``(B, S)`` (S = 1 or L) -> temb ``(B, S, D)`` and modulation ``(B, S, 6, D)``, fp32."""
        temb = self.time_embedder(timestep_sinusoid(timestep, self.freq_dim))  # (B, S, D)
        mod = _linear_fp32(self.time_proj, F.silu(temb))  # (B, S, 6 * D)
        return temb, rearrange(mod, "b s (six d) -> b s six d", six=6)  # (B, S, 6, D)


# ---------------------------------------------------------------------------------------------- block


class Attention(nn.Module):
    """Multi-head attention with one RMSNorm over all heads' queries and keys (Wan's ``qk_norm``)."""

    def __init__(self, dim: int, heads: int, eps: float):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])  # diffusers' `to_out.0`
        self.norm_q = RMSNorm(dim, eps)
        self.norm_k = RMSNorm(dim, eps)

    def forward(self, x, context=None, *, rope=None, mask=None, backend=None) -> torch.Tensor:
        """``x`` ``(B, L, D)`` attends to ``context`` ``(B, N, D)`` (itself if None) -> ``(B, L, D)``."""
        context = x if context is None else context
        q = rearrange(self.norm_q(self.to_q(x)), "b l (h d) -> b l h d", h=self.heads)  # (B, L, heads, dim)
        k = rearrange(self.norm_k(self.to_k(context)), "b n (h d) -> b n h d", h=self.heads)  # (B, N, heads, dim)
        v = rearrange(self.to_v(context), "b n (h d) -> b n h d", h=self.heads)  # (B, N, heads, dim)
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        out = attention(q, k, v, mask=mask, backend=backend)
        return self.to_out[0](rearrange(out, "b l h d -> b l (h d)"))  # (B, L, D)


class GELUProjection(nn.Module):
    def __init__(self, dim: int, inner_dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, inner_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.proj(x), approximate="tanh")


class FeedForward(nn.Module):
    """Linear -> GELU(tanh) -> Linear, as diffusers' ``FeedForward`` names it (``net.0.proj``, ``net.2``)."""

    def __init__(self, dim: int, inner_dim: int):
        super().__init__()
        self.net = nn.ModuleList([GELUProjection(dim, inner_dim), nn.Identity(), nn.Linear(inner_dim, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class DiTBlock(nn.Module):
    """Self-attention, cross-attention to text, feed-forward; modulated by the timestep through a table.

    ``gradient_checkpointing`` is per block: `ModelMixin.enable_gradient_checkpointing` sets it on all blocks,
    `VideoDiT.set_gradient_checkpointing` on chosen ones.
    """

    def __init__(self, dim: int, ffn_dim: int, heads: int, cross_attn_norm: bool, eps: float):
        super().__init__()
        self.norm1 = LayerNormFP32(dim, eps)
        self.attn1 = Attention(dim, heads, eps)
        self.attn2 = Attention(dim, heads, eps)
        self.norm2 = LayerNormFP32(dim, eps, affine=True) if cross_attn_norm else None
        self.ffn = FeedForward(dim, ffn_dim)
        self.norm3 = LayerNormFP32(dim, eps)
        # Learned offsets added to the modulation shared by all blocks (Wan 2025 technical report).
        self.scale_shift_table = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)
        self.gradient_checkpointing = False
        self._gradient_checkpointing_func = _checkpoint

    def forward(self, x, text, mod, rope, text_mask=None, backend=None) -> torch.Tensor:
        """``x`` ``(B, L, D)``, ``text`` ``(B, N, D)``, ``mod`` fp32 ``(B, S, 6, D)`` with S = 1 or L, ``rope``
        complex ``(L, head_dim / 2)``."""
        shift, scale, gate, ff_shift, ff_scale, ff_gate = (self.scale_shift_table.float() + mod).unbind(dim=-2)

        # 1. self-attention, modulated and gated (residual in fp32)
        h = modulate(self.norm1(x), shift, scale).to(x.dtype)
        x = torch.addcmul(x.float(), self.attn1(h, rope=rope, backend=backend), gate).to(x.dtype)

        # 2. cross-attention to the text states, unmodulated
        h = x if self.norm2 is None else self.norm2(x).to(x.dtype)
        x = x + self.attn2(h, text, mask=text_mask, backend=backend)

        # 3. feed-forward, modulated and gated
        h = modulate(self.norm3(x), ff_shift, ff_scale).to(x.dtype)
        return torch.addcmul(x.float(), self.ffn(h), ff_gate).to(x.dtype)


# ---------------------------------------------------------------------------------------------- model


class VideoDiT(ModelMixin, ConfigMixin):
    """The Wan2.1 text-to-video transformer: ``model(latents, timestep, text_states) -> velocity``."""

    _supports_gradient_checkpointing = True
    _no_split_modules = ["DiTBlock"]
    _repeated_blocks = ["DiTBlock"]
    # Loaded in fp32 even when from_pretrained(torch_dtype=bf16) (diffusers keeps the same modules).
    _keep_in_fp32_modules = ["rope", "time_embedder", "scale_shift_table", "norm1", "norm2", "norm3"]
    _skip_layerwise_casting_patterns = ["patch_embedding", "condition_embedder", "norm"]

    @classmethod
    def extract_init_dict(cls, config_dict, **kwargs):
        """diffusers' config parsing, minus its import of the class a folder names (see `as_own_class`)."""
        return super().extract_init_dict(as_own_class(cls, config_dict, "WanTransformer3DModel"), **kwargs)

    @register_to_config
    def __init__(
        self,
        patch_size: Sequence[int] = (1, 2, 2),  # latent frames, rows, columns per token
        num_attention_heads: int = 40,  # heads; the width is heads * attention_head_dim
        attention_head_dim: int = 128,  # channels per head, split over RoPE's t/h/w axes
        in_channels: int = 16,  # latent channels in (the VAE's)
        out_channels: int = 16,  # velocity channels out
        text_dim: int = 4096,  # width of the text encoder's states (umT5-XXL: 4096)
        freq_dim: int = 256,  # width of the sinusoidal timestep embedding
        ffn_dim: int = 13824,  # feed-forward hidden width
        num_layers: int = 40,  # transformer blocks
        cross_attn_norm: bool = True,  # LayerNorm (affine) before cross-attention
        qk_norm: str | None = QK_NORM,  # RMSNorm across heads on queries and keys
        eps: float = 1e-6,  # epsilon of every norm
        image_dim: int | None = None,  # image-to-video CLIP width: must be None (text-to-video only)
        added_kv_proj_dim: int | None = None,  # image-to-video extra key/value width: must be None
        rope_max_seq_len: int = 1024,  # longest patch-grid axis RoPE tables cover
        pos_embed_seq_len: int | None = None,  # image-to-video only; unused in text-to-video
        frame_position_dim: int = 0,  # features of a token's place in its frame (`FramePosition`); 0: none (Wan)
    ):
        super().__init__()
        _check_config(image_dim, added_kv_proj_dim, qk_norm, patch_size, frame_position_dim)
        dim = num_attention_heads * attention_head_dim
        out_channels = out_channels or in_channels
        self.attention_backend: str | None = None  # see set_attention_backend

        # 1. patches and positions
        self.rope = RotaryEmbedding3D(attention_head_dim, rope_max_seq_len)
        self.patch_embedding = nn.Conv3d(in_channels, dim, kernel_size=tuple(patch_size), stride=tuple(patch_size))
        self.frame_position = FramePosition(frame_position_dim, dim) if frame_position_dim else None
        # 2. timestep and text
        self.condition_embedder = ConditionEmbedder(dim, freq_dim, text_dim)
        # 3. blocks
        self.blocks = nn.ModuleList(
            [DiTBlock(dim, ffn_dim, num_attention_heads, cross_attn_norm, eps) for _ in range(num_layers)]
        )
        # 4. output head
        self.norm_out = LayerNormFP32(dim, eps)
        self.proj_out = nn.Linear(dim, out_channels * math.prod(patch_size))
        self.scale_shift_table = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)
        self.initialize_weights()

    def to_json_string(self) -> str:
        """The saved config; without frame positions it is exactly a Wan2.1 config, as diffusers writes it."""
        text = super().to_json_string()
        if self.config.frame_position_dim:
            return text
        config = json.loads(text)
        del config["frame_position_dim"]
        return json.dumps(config, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "VideoDiT":
        """A randomly initialized model of a named configuration in `PRESETS`, with keys overridden."""
        if name not in PRESETS:
            raise InputError(f"unknown DiT preset {name!r}; choose one of: {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    @torch.no_grad()
    def initialize_weights(self) -> None:
        """Wan's initialization: Xavier-uniform linears with zero biases, N(0, 0.02) condition MLPs, and a
        zero output projection so a fresh model predicts zero velocity (DiT, Section 3.2, "adaLN-Zero")."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.xavier_uniform_(self.patch_embedding.weight.view(self.patch_embedding.out_channels, -1))
        for mlp in (self.condition_embedder.time_embedder, self.condition_embedder.text_embedder):
            for layer in (mlp.linear_1, mlp.linear_2):
                nn.init.normal_(layer.weight, std=0.02)
        nn.init.zeros_(self.proj_out.weight)
        if self.frame_position is not None:
            nn.init.zeros_(self.frame_position.proj.weight)  # starts as a model without it

    # ------------------------------------------------------------------------------------- switches

    def set_attention_backend(self, backend: str | None) -> None:
        """Attention backend of every layer: a name from ``videogen.models.attention.BACKENDS``, ``"auto"``,
        or None to defer to the context manager and ``VIDEOGEN_ATTENTION`` (replaces diffusers' version)."""
        # An unknown name fails now; whether the backend can run is checked on the tensors of each forward.
        self.attention_backend = None if backend is None else backend_name(backend)

    def reset_attention_backend(self) -> None:
        self.attention_backend = None

    def enable_xformers_memory_efficient_attention(self, attention_op=None) -> None:
        """diffusers' switch, mapped onto the ``xformers`` backend (checked on the first forward)."""
        self.set_attention_backend("xformers")

    def disable_xformers_memory_efficient_attention(self) -> None:
        self.reset_attention_backend()

    def set_gradient_checkpointing(self, blocks: bool | Sequence[int]) -> None:
        """Recompute activations in backward for all blocks (True), none (False), or the listed indices."""
        chosen = set(range(len(self.blocks))) if blocks is True else set(blocks or ())
        for i, block in enumerate(self.blocks):
            block.gradient_checkpointing = i in chosen

    # -------------------------------------------------------------------------------------- forward

    def forward(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        text_states: torch.Tensor,
        *,
        text_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict the flow-matching velocity.

        Args:
            latents: ``(B, C, T', H', W')``; T', H', W' multiples of ``patch_size``.
            timestep: ``(B,)`` one per sample, or ``(B, L)`` one per token (L = T'/pt * H'/ph * W'/pw, in
                (t h w) order), on the 0..1000 scale.
            text_states: ``(B, N, text_dim)`` T5 states (Wan zero-pads them to 512 tokens).
            text_mask: optional ``(B, N)`` bool, True for real tokens; masked tokens get no attention.

        Returns:
            velocity ``(B, C_out, T', H', W')`` in the model's dtype.
        """
        grid = self._patch_grid(latents)
        dtype = self.patch_embedding.weight.dtype
        x = rearrange(self.patch_embedding(latents.to(dtype)), "b d t h w -> b (t h w) d")  # (B, L, D)
        # Made contiguous once here: elementwise ops keep a transposed layout, and every linear would copy it.
        x = x.contiguous()
        if self.frame_position is not None:
            x = x + self.frame_position(grid).to(dtype)
        timestep = self._check_timestep(timestep, x.shape[0], x.shape[1]).to(x.device)  # (B, S), S = 1 or L
        temb, mod = self.condition_embedder.time(timestep)  # (B, S, D), (B, S, 6, D) fp32
        text = self._check_text(text_states, x.shape[0]).to(device=x.device, dtype=dtype)
        text = self.condition_embedder.text_embedder(text)  # (B, N, D)
        text_mask = self._check_text_mask(text_mask, text)
        rope = self.rope(grid)  # (L, head_dim / 2) complex64
        # Resolved once per forward, so a checkpointed block recomputes with the same backend in backward.
        backend = resolve_backend(x.unflatten(-1, (self.config.num_attention_heads, -1)), self.attention_backend)

        for block in self.blocks:
            args = (x, text, mod, rope, text_mask, backend)
            if torch.is_grad_enabled() and block.gradient_checkpointing:
                x = block._gradient_checkpointing_func(block, *args)
            else:
                x = block(*args)

        shift, scale = (self.scale_shift_table.float() + temb.unsqueeze(-2)).unbind(dim=-2)  # (B, S, D)
        x = self.proj_out(modulate(self.norm_out(x), shift, scale).to(dtype))  # (B, L, pt * ph * pw * C_out)
        (pt, ph, pw), (t, h, w) = self.config.patch_size, grid
        return rearrange(
            x, "b (t h w) (pt ph pw c) -> b c (t pt) (h ph) (w pw)", t=t, h=h, w=w, pt=pt, ph=ph, pw=pw
        )  # (B, C_out, T', H', W')

    # ---------------------------------------------------------------------------------- input checks

    def _patch_grid(self, latents: torch.Tensor) -> tuple[int, int, int]:
        channels = self.config.in_channels
        if latents.ndim != 5 or latents.shape[1] != channels:
            raise InputError(f"DiT latents must be (B, {channels}, T', H', W'), got shape {tuple(latents.shape)}")
        sizes, patch = latents.shape[2:], tuple(self.config.patch_size)
        if any(s % p for s, p in zip(sizes, patch)):
            raise InputError(f"DiT latent size (T', H', W') = {tuple(sizes)} is not a multiple of the patch {patch}")
        return tuple(s // p for s, p in zip(sizes, patch))

    @staticmethod
    def _check_timestep(timestep: torch.Tensor, batch: int, tokens: int) -> torch.Tensor:
        timestep = torch.as_tensor(timestep)
        if timestep.ndim == 0:
            timestep = timestep.expand(batch)
        if timestep.ndim == 1 and timestep.shape[0] == batch:
            return timestep[:, None]  # (B, 1)
        if timestep.ndim == 2 and tuple(timestep.shape) == (batch, tokens):
            return timestep  # (B, L)
        raise InputError(
            f"DiT timestep must be (B,) = ({batch},) or per token (B, L) = ({batch}, {tokens}), "
            f"got shape {tuple(timestep.shape)}"
        )

    def _check_text(self, text_states: torch.Tensor, batch: int) -> torch.Tensor:
        width = self.config.text_dim
        if text_states.ndim != 3 or text_states.shape[0] != batch or text_states.shape[2] != width:
            shape = tuple(text_states.shape)
            raise InputError(f"DiT text states must be (B, N, {width}) with B = {batch}, got {shape}")
        return text_states

    @staticmethod
    def _check_text_mask(text_mask: torch.Tensor | None, text: torch.Tensor) -> torch.Tensor | None:
        if text_mask is None:
            return None
        if tuple(text_mask.shape) != tuple(text.shape[:2]):
            raise InputError(f"DiT text mask must be (B, N) = {tuple(text.shape[:2])}, got {tuple(text_mask.shape)}")
        text_mask = text_mask.to(device=text.device, dtype=torch.bool)
        if not bool(text_mask.any(dim=1).all()):
            raise InputError("DiT text mask leaves a sample with no text token to attend to")
        return text_mask


def _check_config(image_dim, added_kv_proj_dim, qk_norm, patch_size, frame_position_dim) -> None:
    if image_dim is not None or added_kv_proj_dim is not None:
        raise ModelError(
            f"this is an image-to-video transformer config (image_dim={image_dim}, "
            f"added_kv_proj_dim={added_kv_proj_dim}): CLIP image states are not supported yet"
        )
    if qk_norm != QK_NORM:
        raise ModelError(f"DiT config qk_norm={qk_norm!r} is not supported; Wan2.1 uses {QK_NORM!r}")
    if len(patch_size) != 3:
        raise ModelError(f"DiT config patch_size must have 3 entries (t, h, w), got {list(patch_size)}")
    if frame_position_dim < 0 or frame_position_dim % 4:
        raise ModelError(f"DiT config frame_position_dim must be a multiple of 4 (0: none), got {frame_position_dim}")
