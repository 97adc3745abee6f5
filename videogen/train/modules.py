"""The modules the objectives call, one per task: `FlowModel` for the DiT, `Autoencoder` for the VAE.

Each step calls exactly one `torch.nn.Module`, so data parallelism wraps exactly what has gradients, and the
forward that DDP/FSDP hooks into is the one that runs.
"""

from __future__ import annotations

import torch

from videogen.models.text import encode_states


class FlowModel(torch.nn.Module):
    """The DiT objective's network: velocity of noisy latents given text (states, or tokens to encode).

    When the text encoder trains, it is a submodule here, so one DDP/FSDP wrapper covers both.
    """

    def __init__(self, dit: torch.nn.Module, text_encoder: torch.nn.Module | None = None):
        super().__init__()
        self.dit = dit
        self.text_encoder = text_encoder

    def forward(self, x_t, timesteps, *, text_states=None, input_ids=None, attention_mask=None):
        """x_t (B, C, T', H', W'), timesteps (B,) or (B, L), text_states (B, N, D) -> velocity like x_t."""
        if input_ids is not None:
            text_states = encode_states(self.text_encoder, input_ids, attention_mask)
        return self.dit(x_t, timesteps, text_states)


class Autoencoder(torch.nn.Module):
    """The VAE objective's network: encode, sample the posterior (or take its mean), decode (parallel path)."""

    def __init__(self, vae: torch.nn.Module, sample_posterior: bool = True):
        super().__init__()
        self.vae = vae
        self.sample_posterior = sample_posterior

    def forward(self, video: torch.Tensor, generator: torch.Generator):
        """video (B, 3, T, H, W) -> (reconstruction like video, posterior mean and std (B, C, T', H', W'))."""
        posterior = self.vae.encode(video)
        z = posterior.mean
        if self.sample_posterior:
            noise = torch.randn(posterior.mean.shape, generator=generator).to(posterior.mean)
            z = posterior.mean + posterior.std * noise  # reparameterisation (Kingma & Welling 2014)
        return self.vae.decode(z, clamp=False), posterior.mean, posterior.std  # unclamped: see decode()
