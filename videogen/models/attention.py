"""One attention entry point with a small registry of backends.

``attention(q, k, v, *, mask=None, backend=None)`` computes softmax(q k^T / sqrt(d)) v (Vaswani et al. 2017,
Equation 1) for q/k/v laid out ``(B, L, heads, dim)``, the layout of the transformer around it, so no caller
transposes. Four backends give the same numbers up to rounding:

- ``xformers``: ``xformers.ops.memory_efficient_attention`` (Rabe & Staats 2021; CUDA, fp16/bf16, optional);
- ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention`` (flash / memory-efficient kernels on GPU,
  a fused flash kernel on CPU);
- ``chunked``: exact attention computed one block of queries at a time, with the block size chosen from a
  memory budget, so the score matrix never exists whole on any device (forward or backward);
- ``math``: the plain formula in fp32, the reference the others are tested against.

The backend is chosen by, in order: the ``backend=`` argument, the context manager ``backend(name)``, the
environment variable ``VIDEOGEN_ATTENTION``, and otherwise automatically (xformers where it can run, else
sdpa). A backend asked for by name that is unknown (`InputError`) or cannot run on these tensors
(`ResourceError`, with the reason) is an error, never a silent fallback. Nothing here touches CUDA or
imports xformers until a backend is actually checked or used.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import os
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from einops import rearrange

from videogen.errors import InputError, ResourceError

ENV_VAR = "VIDEOGEN_ATTENTION"
AUTO = "auto"

# Bytes one query block of the `chunked` backend may hold in fp32 scores. A block keeps about three
# (B, heads, rows, Lk) fp32 tensors alive at once (scores, probabilities, a temporary), so its rows are sized
# for all three to fit; the attention's peak stays near this budget however long the sequence
# (docs/benchmarks.md: about 100 MiB forward, 250 MiB forward + backward, at 16k tokens).
DEFAULT_CHUNK_BYTES = 128 * 2**20
_LIVE_SCORE_COPIES = 3

_XFORMERS_DTYPES = (torch.float16, torch.bfloat16)

_context_backend: contextvars.ContextVar[str | None] = contextvars.ContextVar("videogen_attention", default=None)


# ------------------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Backend:
    """An attention implementation and a readable check of whether it can run on given tensors."""

    name: str
    run: Callable[..., torch.Tensor]  # (q, k, v, mask, scale, chunk_bytes) -> (B, Lq, heads, dim)
    unavailable: Callable[[torch.Tensor], str | None]  # q -> None if it can run, else the reason why not
    summary: str


BACKENDS: dict[str, Backend] = {}


def _register(name: str, summary: str, unavailable: Callable[[torch.Tensor], str | None] | None = None):
    def wrap(fn):
        BACKENDS[name] = Backend(name, fn, unavailable or (lambda q: None), summary)
        return fn

    return wrap


# --------------------------------------------------------------------------------- availability checks


@functools.cache
def _xformers_import_problem() -> str | None:
    """Why ``import xformers.ops`` fails here, or None. Imported on first check only, then remembered."""
    try:
        import xformers.ops  # noqa: F401
    except Exception as e:  # not installed, or a build that does not match this torch / CUDA
        return f"xformers is not installed or does not load ({e}); install it with: pip install 'videogen[xformers]'"
    return None


def _xformers_unavailable(q: torch.Tensor) -> str | None:
    if q.device.type != "cuda":
        return f"xformers needs CUDA tensors, these are on {q.device.type}"
    if q.dtype not in _XFORMERS_DTYPES:
        return f"xformers runs in fp16 or bf16 here, these tensors are {str(q.dtype).removeprefix('torch.')}"
    return _xformers_import_problem()


def _sdpa_unavailable(q: torch.Tensor) -> str | None:
    if not hasattr(F, "scaled_dot_product_attention"):
        return f"torch {torch.__version__} has no scaled_dot_product_attention (needs torch >= 2.0)"
    return None


def why_unavailable(name: str, q: torch.Tensor) -> str | None:
    """None if backend ``name`` can run on tensors like ``q``, else a sentence saying why not."""
    return _known(name).unavailable(q)


def available_backends(q: torch.Tensor) -> dict[str, str | None]:
    """Every backend mapped to None (it can run on tensors like ``q``) or the reason it cannot."""
    return {name: b.unavailable(q) for name, b in BACKENDS.items()}


# ---------------------------------------------------------------------------------------------- choice


def backend_name(name: str) -> str:
    """The registry spelling of backend ``name`` (or ``"auto"``); `InputError` if there is no such backend."""
    return AUTO if name.strip().lower() == AUTO else _known(name).name


def _known(name: str, source: str = "attention backend") -> Backend:
    key = name.strip().lower()
    if key not in BACKENDS:
        known = ", ".join([*BACKENDS, AUTO])
        raise InputError(f"unknown {source} {name!r}; choose one of: {known}")
    return BACKENDS[key]


@contextlib.contextmanager
def backend(name: str | None) -> Iterator[None]:
    """Use attention backend ``name`` (or ``"auto"``) for the attention calls in this block that name none.

    ``None`` defers to the environment variable again. An unknown name fails here, on entry.
    """
    token = _context_backend.set(None if name is None else backend_name(name))
    try:
        yield
    finally:
        _context_backend.reset(token)


def _automatic(q: torch.Tensor) -> str:
    for name in ("xformers", "sdpa"):
        if BACKENDS[name].unavailable(q) is None:
            return name
    return "math"


def resolve_backend(q: torch.Tensor, name: str | None = None) -> str:
    """The backend an attention call over tensors like ``q`` uses: argument > context > env var > automatic.

    Raises `InputError` for an unknown name and `ResourceError` for a named backend that cannot run here.
    """
    choices = (
        (name, "attention backend"),
        (_context_backend.get(), "attention backend"),
        (os.environ.get(ENV_VAR) or None, f"{ENV_VAR} value"),
    )
    name, source = next(((n, s) for n, s in choices if n is not None), (AUTO, ""))
    if name.strip().lower() == AUTO:
        return _automatic(q)
    chosen = _known(name, source)
    problem = chosen.unavailable(q)
    if problem is not None:
        raise ResourceError(f"attention backend {chosen.name!r} cannot run here: {problem}")
    return chosen.name


# --------------------------------------------------------------------------------------- entry point


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    backend: str | None = None,
    scale: float | None = None,
    chunk_bytes: int | None = None,
) -> torch.Tensor:
    """Scaled dot-product attention over ``(B, L, heads, dim)`` tensors.

    Args:
        q: queries ``(B, Lq, heads, dim)``.
        k: keys ``(B, Lk, heads, dim)``.
        v: values ``(B, Lk, heads, dim)``.
        mask: optional key mask ``(B, Lk)``, bool, True where a key may be attended; every row must keep at
            least one key (a row with none has no defined softmax).
        backend: a name from `BACKENDS` or ``"auto"``; None defers to the context manager, then the env var.
        scale: the logit scale, ``1 / sqrt(dim)`` by default.
        chunk_bytes: memory budget of one query block of the ``chunked`` backend (`DEFAULT_CHUNK_BYTES`).

    Returns:
        ``(B, Lq, heads, dim)`` in the dtype of ``q``.
    """
    _check_shapes(q, k, v, mask)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    chosen = BACKENDS[resolve_backend(q, backend)]
    return chosen.run(q, k, v, mask, scale, chunk_bytes or DEFAULT_CHUNK_BYTES)


def _check_shapes(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> None:
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        shapes = [tuple(t.shape) for t in (q, k, v)]
        raise InputError(f"attention takes (B, L, heads, dim) tensors, got shapes {shapes}")
    b, _, h, d = q.shape
    if k.shape != v.shape or k.shape[0] != b or k.shape[2] != h or k.shape[3] != d:
        raise InputError(f"attention q/k/v shapes disagree: {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if mask is not None and (mask.dtype != torch.bool or tuple(mask.shape) != (b, k.shape[1])):
        expected = (b, k.shape[1])
        raise InputError(f"attention mask must be bool (B, Lk) = {expected}, got {mask.dtype} {tuple(mask.shape)}")


# ------------------------------------------------------------------------------------------- backends


@_register("math", "plain softmax(q k^T) v in fp32: the reference, memory O(L^2)")
def _math(q, k, v, mask, scale, chunk_bytes=None) -> torch.Tensor:
    k_t = rearrange(k.float(), "b l h d -> b h d l")  # (B, heads, dim, Lk)
    v_t = rearrange(v.float(), "b l h d -> b h l d")  # (B, heads, Lk, dim)
    return _math_block(q, k_t, v_t, mask, scale)


def _math_block(q, k_t, v_t, mask, scale) -> torch.Tensor:
    """Attention of a block of queries ``(B, rows, heads, dim)`` to keys already laid out for matmul."""
    q_t = rearrange(q.float(), "b l h d -> b h l d")  # (B, heads, rows, dim)
    scores = torch.matmul(q_t * scale, k_t)  # (B, heads, rows, Lk)
    if mask is not None:
        scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
    out = torch.matmul(scores.softmax(dim=-1), v_t)  # (B, heads, rows, dim)
    return rearrange(out, "b h l d -> b l h d").to(q.dtype)


def chunk_rows(batch: int, heads: int, keys: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """How many queries one block of the ``chunked`` backend takes so its fp32 scores fit ``chunk_bytes``."""
    per_row = _LIVE_SCORE_COPIES * batch * heads * keys * 4
    return max(1, chunk_bytes // per_row)


@_register("chunked", "exact attention in query blocks sized from a memory budget: bounded memory on any device")
def _chunked(q, k, v, mask, scale, chunk_bytes=DEFAULT_CHUNK_BYTES) -> torch.Tensor:
    b, lq, h, _ = q.shape
    rows = chunk_rows(b, h, k.shape[1], chunk_bytes)
    k_t = rearrange(k.float(), "b l h d -> b h d l")  # (B, heads, dim, Lk)
    v_t = rearrange(v.float(), "b l h d -> b h l d")  # (B, heads, Lk, dim)
    # With autograd on, each block is recomputed in backward instead of keeping its probabilities, so
    # training memory stays bounded too (activation checkpointing, Chen et al. 2016).
    recompute = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    blocks = []
    for start in range(0, lq, rows):
        q_block = q[:, start : start + rows]  # (B, rows, heads, dim)
        if recompute:
            block = torch.utils.checkpoint.checkpoint(_math_block, q_block, k_t, v_t, mask, scale, use_reentrant=False)
        else:
            block = _math_block(q_block, k_t, v_t, mask, scale)
        blocks.append(block)
    return torch.cat(blocks, dim=1)  # (B, Lq, heads, dim)


@_register("sdpa", "torch scaled_dot_product_attention: flash / memory-efficient kernels", _sdpa_unavailable)
def _sdpa(q, k, v, mask, scale, chunk_bytes=None) -> torch.Tensor:
    q_t, k_t, v_t = (rearrange(t, "b l h d -> b h l d") for t in (q, k, v))  # (B, heads, L, dim)
    attn_mask = None if mask is None else mask[:, None, None, :]  # (B, 1, 1, Lk), True = attend
    out = F.scaled_dot_product_attention(q_t, k_t, v_t, attn_mask=attn_mask, scale=scale)
    return rearrange(out, "b h l d -> b l h d")


@_register("xformers", "xformers memory_efficient_attention (CUDA, fp16/bf16)", _xformers_unavailable)
def _xformers(q, k, v, mask, scale, chunk_bytes=None) -> torch.Tensor:
    import xformers.ops as xops

    bias = None if mask is None else _xformers_bias(mask, q)
    return xops.memory_efficient_attention(q, k, v, attn_bias=bias, scale=scale)


def _xformers_bias(mask: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The key mask as the additive bias xformers takes, broadcast (not copied) to (B, heads, Lq, Lk).

    xformers wants the bias' last-dimension storage aligned to 8 elements, hence the padded allocation.
    """
    b, lq, h, _ = q.shape
    lk = mask.shape[1]
    padded = torch.full((b, 1, 1, -(-lk // 8) * 8), float("-inf"), dtype=q.dtype, device=q.device)
    padded[..., :lk] = torch.zeros_like(mask, dtype=q.dtype).masked_fill(~mask, float("-inf"))[:, None, None, :]
    return padded[..., :lk].expand(b, h, lq, lk)  # (B, heads, Lq, Lk), stride 0 over heads and queries
