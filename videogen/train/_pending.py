"""TEMPORARY stand-ins for pieces other branches are writing right now; delete after merging main.

Each name here follows the contract its owner builds to, so swapping the import
for the real module is the whole migration:

- flow-matching maths                            -> ``videogen.diffusion.flow`` (branch ``pipe``)
"""

from __future__ import annotations

import torch

# ------------------------------------------------------------------------------------ flow (pipe branch)
# The API of pipe:videogen/diffusion/flow.py, reduced to what the trainer calls.

NUM_TRAIN_TIMESTEPS = 1000


def interpolate(x0, noise, sigma):
    s = sigma.view(-1, 1, 1, 1, 1).float()
    return ((1 - s) * x0.float() + s * noise.float()).to(x0.dtype)


def velocity_target(x0, noise):
    return noise - x0


def flow_loss(velocity, x0, noise, *, known=None):
    err = (velocity.float() - velocity_target(x0, noise).float()).square()
    if known is None:
        return err.mean()
    weight = (~known).float().view(known.shape[0], 1, known.shape[1], 1, 1).expand_as(err)
    return (err * weight).sum() / weight.sum().clamp_min(1.0)


def shift_sigmas(sigma, shift):
    return shift * sigma / (1 + (shift - 1) * sigma)


def to_timesteps(sigma):
    return sigma * NUM_TRAIN_TIMESTEPS


def sample_sigmas(batch, *, distribution="logit_normal", shift=1.0, mean=0.0, std=1.0, generator=None,
                  device="cpu"):
    if distribution == "logit_normal":
        sigma = torch.sigmoid(torch.randn(batch, generator=generator) * std + mean)
    else:
        sigma = torch.rand(batch, generator=generator)
    return shift_sigmas(sigma, shift).to(device)


def frame_timesteps(t, known, batch):
    return torch.where(known, torch.zeros_like(t).view(-1, 1), t.view(-1, 1)).expand(batch, known.shape[1])


def token_timesteps(timestep, tokens_per_frame):
    return timestep.repeat_interleave(tokens_per_frame, dim=1)


def hold_known(latents, clean, known):
    return torch.where(known.view(known.shape[0], 1, known.shape[1], 1, 1), clean.to(latents.dtype), latents)
