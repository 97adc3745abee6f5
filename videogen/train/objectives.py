"""Training objectives: rectified flow with frame conditioning for the DiT, reconstruction for the VAE.

The flow maths (interpolation, velocity target, timestep sampling and shift, per-token timesteps) lives in
the shared flow module; this module decides *what* is trained: whether a batch is a clip or only its
first frame (text-to-image), which latent frames a sample is given (none, the first, or the first and
the last), which captions are dropped for classifier-free guidance,
and which tokens the loss covers. The DiT sees a sample exactly as the sampler will later show it a
conditioned generation: known frames clean and at timestep 0.

All randomness comes from one explicit `torch.Generator` (no global RNG, as in k-diffusion and EDM2), which
the trainer checkpoints; that is what makes a resumed run bit-exact.
"""

from __future__ import annotations

import math

import torch

from videogen.diffusion import flow
from videogen.metrics import psnr_from_mse, ssim
from videogen.train.config import ObjectiveConfig

MODES = ("none", "first", "first_last")

# ------------------------------------------------------------------------------------ frame conditioning


def sample_modes(batch: int, cfg: ObjectiveConfig, generator: torch.Generator) -> torch.Tensor:
    """A conditioning mode per sample, indices into `MODES`: (B,) long."""
    p_first = cfg.p_first or 0.0  # None: the model's default, which the run resolves; none here
    probs = torch.tensor([1.0 - p_first - cfg.p_first_last, p_first, cfg.p_first_last])
    u = torch.rand(batch, generator=generator)
    return torch.bucketize(u, probs.cumsum(0)[:-1], right=True)  # (B,)


def known_frames(modes: torch.Tensor, num_frames: int, first: int = 1) -> torch.Tensor:
    """Which latent frames each sample is given: (B,) modes -> (B, T') bool.

    ``first`` frames are known in mode "first" (image-to-video, extension); the first and the last in
    mode "first_last" (interpolation). At least one frame always stays unknown, so a 1-frame latent (an
    image) is never conditioned and a 2-frame one can at most have its first frame given.
    """
    known = torch.zeros(len(modes), num_frames, dtype=torch.bool)  # (B, T')
    if num_frames < 2:
        return known
    known[modes == 1, : min(first, num_frames - 1)] = True
    both = modes == 2
    known[both, 0] = True
    if num_frames >= 3:
        known[both, -1] = True
    return known


def drop_captions(batch: int, p: float, generator: torch.Generator) -> torch.Tensor:
    """Which captions are replaced by the empty one for classifier-free guidance: (B,) bool."""
    return torch.rand(batch, generator=generator) < p


# ------------------------------------------------------------------------------------------ two experts


def expert_range(boundary_ratio: float, expert: int) -> tuple[float, float]:
    """The noise levels ``[low, high]`` one expert of a two-expert model (Wan2.2 A14B) is trained on.

    The sampler runs the high-noise expert (0) while the timestep is at least ``boundary_ratio`` x 1000 and the
    low-noise one (1) below (`videogen.pipeline.Pipeline`), so each learns only the levels it will be given. The
    edge is the smallest float32 level whose float32 timestep ``1000 s`` reaches the boundary: rounding then
    never puts a sample on the other expert's side.
    """
    boundary = boundary_ratio * flow.NUM_TRAIN_TIMESTEPS
    up, down = torch.tensor(2.0), torch.tensor(-1.0)
    edge = torch.tensor(boundary_ratio, dtype=torch.float32)
    while float(flow.to_timesteps(edge)) < boundary:
        edge = torch.nextafter(edge, up)
    while float(flow.to_timesteps(torch.nextafter(edge, down))) >= boundary:
        edge = torch.nextafter(edge, down)
    return (float(edge), 1.0) if expert == 0 else (0.0, float(torch.nextafter(edge, down)))


def expert_sigmas(batch: int, levels: tuple[float, float], cfg: ObjectiveConfig,
                  generator: torch.Generator) -> torch.Tensor:
    """Training noise levels ``(B,)`` from ``cfg``'s distribution (after its shift) restricted to ``levels``.

    Inverse-CDF sampling: a uniform draw between the distribution's CDF at the two ends, mapped through its
    quantile function, so the restricted distribution keeps the shape of the whole (the logit-normal of Esser et
    al. 2024, eq. 19, or uniform) within the expert's range, at one draw per sample.
    """
    low, high = (_level_cdf(v, cfg) for v in levels)
    u = low + (high - low) * torch.rand(batch, generator=generator, dtype=torch.float64)  # (B,)
    if cfg.timestep_sampling == "logit_normal":
        u = torch.sigmoid(cfg.logit_mean + cfg.logit_std * torch.special.ndtri(u))
    return flow.shift_sigmas(u, cfg.shift).float().clamp(*levels)


def _level_cdf(sigma: float, cfg: ObjectiveConfig) -> float:
    """P(level <= sigma) under ``cfg``'s distribution after its shift (the shift inverted, then that CDF)."""
    s = sigma / (cfg.shift - (cfg.shift - 1) * sigma)  # the unshifted level
    if cfg.timestep_sampling == "uniform" or s <= 0.0 or s >= 1.0:
        return min(max(s, 0.0), 1.0)
    z = (math.log(s / (1 - s)) - cfg.logit_mean) / cfg.logit_std
    return 0.5 * math.erfc(-z / math.sqrt(2))


# ------------------------------------------------------------------------------------------- DiT: flow


def dit_loss(
    model,
    latents: torch.Tensor,
    text: dict,
    cfg: ObjectiveConfig,
    generator: torch.Generator,
    *,
    patch_size: tuple[int, int, int] = (1, 2, 2),
    levels: tuple[float, float] | None = None,
) -> tuple[torch.Tensor, dict]:
    """The rectified-flow loss of one batch (Liu et al. 2022; Esser et al. 2024, eq. 1 and sec. 3.1).

    Args:
        model: ``model(x_t, timesteps, **text)`` is the velocity (B, C, T', H', W'); a `FlowModel`,
            possibly wrapped for data parallelism.
        latents: clean normalised latents (B, C, T', H', W').
        text: the caption inputs ``model`` takes (text states, or token ids when the encoder trains),
            captions already dropped where the batch drops them.
        generator: CPU generator for timesteps, modes and noise.
        levels: the noise levels ``[low, high]`` to draw from (`expert_range`: one expert of two); None: all.

    Returns the loss and a few numbers to log.
    """
    opening = min(cfg.image_latent_frames, latents.shape[2] - 1)
    from_text = False
    if cfg.p_image > 0 and opening > 0 and torch.rand((), generator=generator).item() < cfg.p_image:
        # 0. a text-to-image batch: the causal VAE codes the first frame alone into the first latent frame,
        #    so that frame is the image's latent (what image-first sampling generates before the motion);
        #    with image_latent_frames > 1, the clip's opening, as image-first sampling's first pass draws it
        latents, from_text = latents[:, :, :opening], True
    b, _, t, h, w = latents.shape
    device = latents.device
    # 1. a noise level per sample, shifted toward noise as the sampler will be (SD3 eq. 23)
    if levels is None:
        sigmas = flow.sample_sigmas(b, distribution=cfg.timestep_sampling, shift=cfg.shift, mean=cfg.logit_mean,
                                    std=cfg.logit_std, generator=generator)
    else:
        sigmas = expert_sigmas(b, levels, cfg, generator)
    # 2. which latent frames each sample is given
    known = known_frames(sample_modes(b, cfg, generator), t, cfg.known_frames)  # (B, T')
    if from_text:
        known[:] = False  # the first pass is given nothing
    # 3. noisy latents on the straight path; given frames stay clean
    noise = torch.randn(latents.shape, generator=generator).to(device=device, dtype=latents.dtype)
    x_t = flow.hold_known(flow.interpolate(latents, noise, sigmas.to(device)), latents, known.to(device))
    # 4. timesteps: one per sample, or one per token when some frames are given (they get 0)
    timesteps = flow.to_timesteps(sigmas)  # (B,)
    if known.any():
        tokens_per_frame = (h // patch_size[1]) * (w // patch_size[2])
        timesteps = flow.token_timesteps(flow.frame_timesteps(timesteps, known, b), tokens_per_frame)  # (B, L)
    # 5. velocity prediction; loss over the unknown frames only
    pred = model(x_t, timesteps.to(device), **text)
    loss = flow.flow_loss(pred, latents, noise, known=known.to(device))
    return loss, {"sigma": sigmas.mean().item(), "known": known.float().mean().item()}


# --------------------------------------------------------------------------------- VAE: reconstruction


def clip_ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean structural similarity of two clips in [-1, 1], frame by frame, in float32 (`videogen.metrics.ssim`).

    Args:
        x, y: (B, 3, T, H, W). An 11x11 Gaussian window (sigma 1.5), smaller for tiny frames.
    """
    x = (x.float().transpose(1, 2).flatten(0, 1) + 1) / 2  # (B*T, 3, H, W) in [0, 1]
    y = (y.float().transpose(1, 2).flatten(0, 1) + 1) / 2  # (B*T, 3, H, W)
    return ssim(x, y, data_range=1.0, dtype=torch.float32, reduction="mean", small_frames="shrink")


def gaussian_kl(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, std^2) || N(0, 1)) averaged over every latent element (Kingma & Welling 2014, app. B)."""
    var = std.float().pow(2)
    return 0.5 * (mean.float().pow(2) + var - 1.0 - torch.log(var.clamp(min=1e-20))).mean()


def foreground_mask(video: torch.Tensor) -> torch.Tensor:
    """Pixels away from their clip's background, (B, 1, T, H, W) bool.

    The background is each channel's median over the clip; a pixel is foreground when its absolute
    differences from it, summed over the channels, exceed 0.5 (on the [-1, 1] scale).
    """
    background = video.flatten(2).median(dim=2).values[:, :, None, None, None]  # (B, 3, 1, 1, 1)
    return (video - background).abs().sum(dim=1, keepdim=True) > 0.5


def vae_loss(model, video: torch.Tensor, cfg: ObjectiveConfig, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
    """L1 + MSE + (1 - SSIM) + KL of one batch through the VAE's parallel path, each with its weight.

    Args:
        model: ``model(video, generator)`` is (reconstruction, posterior mean, posterior std); an
            `Autoencoder`, possibly wrapped for data parallelism.
        video: (B, 3, T, H, W) in [-1, 1], T = 4k + 1.
    """
    recon, mean, std = model(video, generator)
    error = recon.float() - video.float()
    l1 = error.abs().mean()
    structural = 1.0 - clip_ssim(recon, video)
    if cfg.sample_posterior:
        kl = gaussian_kl(mean, std)
    else:  # the std is fixed (fix_posterior_std): only the KL's mean term acts, keeping the latents' scale
        kl = 0.5 * mean.float().pow(2).mean()
    squared = error.pow(2).mean()
    if cfg.foreground_weight:  # sparse objects on flat backgrounds (the shapes world): see ObjectiveConfig
        weight = 1.0 + cfg.foreground_weight * foreground_mask(video).float()
        loss = cfg.l1 * (error.abs() * weight).mean() + cfg.mse * (error.pow(2) * weight).mean()
    else:
        loss = cfg.l1 * l1 + cfg.mse * squared
    loss = loss + cfg.ssim * structural + cfg.kl * kl
    mse = squared.item() / 4  # on the [0, 1] scale, for the PSNR
    return loss, {"l1": l1.item(), "ssim": 1.0 - structural.item(), "kl": kl.item(),
                  "psnr": psnr_from_mse(max(mse, 1e-12), peak=1.0)}
