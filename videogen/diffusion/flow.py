"""Rectified flow: the one module that says what the DiT is trained to predict and how noise levels are chosen.

Everything the sampler and the trainer must agree on lives here, so they cannot drift apart
(k-diffusion's ``Denoiser`` and EDM2 keep their maths in one place for the same reason):

- the forward process ``x_s = (1 - s) x0 + s noise`` for a noise level ``s`` in [0, 1]
  (rectified flow, Liu et al. 2022, eq. 1; Esser et al. 2024 "Scaling Rectified Flow Transformers", eq. 3
  with a_t = 1 - t, b_t = t);
- the network's target, the velocity ``v = dx_s/ds = noise - x0``;
- the timestep shift ``s' = shift * s / (1 + (shift - 1) * s)`` that spends more steps at high noise for
  large inputs (Esser et al. 2024, section 5.3.2; the same formula as Wan's ``flow_shift``);
- training noise levels: uniform or logit-normal (Esser et al. 2024, eq. 19), then shifted;
- per-frame and per-token timesteps, so that latent frames known in advance (extension, interpolation,
  image-to-video) are fed at timestep 0 while the rest are denoised.

Noise levels ``s`` ("sigmas") are in [0, 1]; the DiT takes timesteps on diffusers' 0..1000 scale,
``t = 1000 * s`` (`NUM_TRAIN_TIMESTEPS`). Known-frame masks are over latent frames: a bool tensor ``(T',)``
shared by the batch or ``(B, T')`` per sample.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from einops import repeat

NUM_TRAIN_TIMESTEPS = 1000  # diffusers' and Wan's timestep scale: t = 1000 * sigma

TimestepDistribution = Literal["uniform", "logit_normal"]


# ----------------------------------------------------------------------------------- forward process


def _per_sample(sigma: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Broadcast noise levels over a latent ``(B, C, T', H', W')``.

    ``sigma`` is a scalar, ``(B,)`` one level per sample, or ``(B, T')`` one level per latent frame.
    """
    sigma = torch.as_tensor(sigma, device=like.device, dtype=torch.float32)
    if sigma.ndim == 0:
        return sigma
    if sigma.ndim == 1:
        return sigma.view(-1, 1, 1, 1, 1)  # (B, 1, 1, 1, 1)
    if sigma.ndim == 2:
        return sigma.view(sigma.shape[0], 1, sigma.shape[1], 1, 1)  # (B, 1, T', 1, 1)
    raise ValueError(f"noise levels must be a scalar, (B,) or (B, T'), got shape {tuple(sigma.shape)}")


def interpolate(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The noisy latent ``x_s = (1 - s) x0 + s noise`` (Esser et al. 2024, eq. 3; rectified flow).

    x0, noise: (B, C, T', H', W'); sigma: scalar, (B,) or (B, T') in [0, 1]. Computed in fp32, returned in
    x0's dtype.
    """
    s = _per_sample(sigma, x0)
    return ((1 - s) * x0.float() + s * noise.float()).to(x0.dtype)


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """What the DiT learns to predict: ``v = d x_s / d s = noise - x0``, constant along the straight path."""
    return noise - x0


def predict_x0(x_t: torch.Tensor, velocity: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The clean latent implied by a velocity: ``x0 = x_s - s v`` (the interpolation solved for x0)."""
    return (x_t.float() - _per_sample(sigma, x_t) * velocity.float()).to(x_t.dtype)


def flow_loss(
    velocity: torch.Tensor,
    x0: torch.Tensor,
    noise: torch.Tensor,
    *,
    known: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean squared error to the velocity target, over the frames that are not known.

    velocity, x0, noise: (B, C, T', H', W'). known: None, (T',) or (B, T') bool: known latent frames are given
    clean to the model and carry no loss (there is nothing to denoise there).
    """
    err = (velocity.float() - velocity_target(x0, noise).float()).square()  # (B, C, T', H', W')
    if known is None:
        return err.mean()
    weight = (~frame_mask(known, x0.shape[0], x0.device)).float()  # (B, T')
    weight = _per_sample(weight, err).expand_as(err)  # (B, C, T', H', W')
    return (err * weight).sum() / weight.sum().clamp_min(1.0)


# ----------------------------------------------------------------------------------------- timesteps


def shift_sigmas(sigma: torch.Tensor, shift: float) -> torch.Tensor:
    """Shift noise levels towards 1: ``s' = shift * s / (1 + (shift - 1) * s)``.

    Esser et al. 2024, section 5.3.2 (resolution-dependent shifting, with shift = sqrt(m / n)); Wan2.1 ships
    shift 3 for 480p and 5 for 720p. shift = 1 is the identity; the end points 0 and 1 are fixed.
    """
    if not math.isfinite(shift) or shift <= 0:
        raise ValueError(f"shift must be a positive number, got {shift}")
    return shift * sigma / (1 + (shift - 1) * sigma)


def to_timesteps(sigma: torch.Tensor) -> torch.Tensor:
    """Noise levels in [0, 1] -> timesteps on the DiT's 0..1000 scale."""
    return sigma * NUM_TRAIN_TIMESTEPS


def sample_sigmas(
    batch: int,
    *,
    distribution: TimestepDistribution = "logit_normal",
    shift: float = 1.0,
    mean: float = 0.0,
    std: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Training noise levels ``(B,)`` in (0, 1), drawn with the caller's generator and then shifted.

    ``logit_normal``: s = sigmoid(n), n ~ N(mean, std), which weights the middle of the path where the
    velocity is hardest to predict (Esser et al. 2024, eq. 19, their best "lognorm(0.00, 1.00)").
    ``uniform``: s ~ U(0, 1) (plain rectified flow).
    """
    if distribution == "logit_normal":
        n = torch.randn(batch, generator=generator, device="cpu") * std + mean
        sigma = torch.sigmoid(n)
    elif distribution == "uniform":
        sigma = torch.rand(batch, generator=generator, device="cpu")
    else:
        raise ValueError(f"unknown timestep distribution {distribution!r} (uniform, logit_normal)")
    return shift_sigmas(sigma, shift).to(device)


# ------------------------------------------------------------------------------------- known frames


def frame_mask(known: torch.Tensor, batch: int, device: torch.device | str) -> torch.Tensor:
    """A known-frame mask as ``(B, T')`` bool, from ``(T',)`` (shared by the batch) or ``(B, T')``."""
    known = torch.as_tensor(known, dtype=torch.bool, device=device)
    if known.ndim == 1:
        return repeat(known, "t -> b t", b=batch)  # (B, T')
    if known.ndim == 2 and known.shape[0] == batch:
        return known
    raise ValueError(f"known-frame mask must be (T',) or (B, T') with B={batch}, got {tuple(known.shape)}")


def frame_timesteps(t: torch.Tensor, known: torch.Tensor, batch: int) -> torch.Tensor:
    """Per-latent-frame timesteps ``(B, T')``: ``t`` for frames to denoise, 0 for known (clean) frames.

    t: scalar or (B,); known: (T',) or (B, T') bool.
    """
    t = torch.as_tensor(t)
    mask = frame_mask(known, batch, t.device)  # (B, T')
    t = t.view(-1, 1) if t.ndim == 1 else t  # (B, 1) or scalar
    return torch.where(mask, torch.zeros_like(t), t).expand(batch, mask.shape[1])  # (B, T')


def token_timesteps(timestep: torch.Tensor, tokens_per_frame: int) -> torch.Tensor:
    """Expand per-frame timesteps ``(B, T')`` to the DiT's per-token timesteps ``(B, L)``.

    The DiT orders its patch tokens frame-major, ``(t h w)``, so a frame's timestep repeats over its
    ``H'/ph * W'/pw`` tokens, L = T' * tokens_per_frame (diffusers' Wan2.2 TI2V pipeline builds its
    ``(B, L)`` timesteps the same way).
    """
    return repeat(timestep, "b t -> b (t n)", n=tokens_per_frame)  # (B, L)


def hold_known(latents: torch.Tensor, clean: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Reset the known latent frames to their clean values, leaving the others as they are.

    latents, clean: (B, C, T', H', W'); known: (T',) or (B, T') bool.
    """
    mask = frame_mask(known, latents.shape[0], latents.device)  # (B, T')
    mask = mask.view(mask.shape[0], 1, mask.shape[1], 1, 1)  # (B, 1, T', 1, 1)
    return torch.where(mask, clean.to(latents.dtype), latents)
