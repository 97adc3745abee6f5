"""TEMPORARY stand-ins for pieces other branches are writing right now; delete after merging main.

Each name here follows the contract its owner builds to, so swapping the import
for the real module is the whole migration:

- flow-matching maths                            -> ``videogen.diffusion.flow`` (branch ``pipe``)
- `CausalVideoVAE`                              -> ``videogen.models.vae``     (branch ``vae``)

The VAE stand-in is a thin adapter over diffusers' AutoencoderKLWan, which has the same config keys and
state-dict names as ours by contract.
"""

from __future__ import annotations

import functools

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


# ------------------------------------------------------------------------------- models (dit/vae branch)


@functools.cache
def _vae_class():
    from diffusers import AutoencoderKLWan

    class CausalVideoVAE(AutoencoderKLWan):
        def encode(self, video, *, streaming=False):
            return super().encode(video).latent_dist

        def decode(self, latents, *, streaming=False):
            return super().decode(latents).sample

        def normalize(self, z):
            mean = torch.tensor(self.config.latents_mean, device=z.device, dtype=z.dtype)
            std = torch.tensor(self.config.latents_std, device=z.device, dtype=z.dtype)
            return (z - mean.view(1, -1, 1, 1, 1)) / std.view(1, -1, 1, 1, 1)

        def denormalize(self, z):
            mean = torch.tensor(self.config.latents_mean, device=z.device, dtype=z.dtype)
            std = torch.tensor(self.config.latents_std, device=z.device, dtype=z.dtype)
            return z * std.view(1, -1, 1, 1, 1) + mean.view(1, -1, 1, 1, 1)

        @property
        def latent_channels(self):
            return self.config.z_dim

        temporal_compression = 4
        spatial_compression = 8

    return CausalVideoVAE


def __getattr__(name):
    if name == "CausalVideoVAE":
        return _vae_class()
    raise AttributeError(name)

