"""The modules the objectives call, one per task: `FlowModel` for the DiT, `Autoencoder` for the VAE.

Each step calls exactly one `torch.nn.Module`, so data parallelism wraps exactly what has gradients, and the
forward that DDP/FSDP hooks into is the one that runs.
"""

from __future__ import annotations

import torch

from videogen.models.text import encode_states


class FlowModel(torch.nn.Module):
    """The DiT objective's network: velocity of noisy latents given text (states, or tokens to encode).

    When the text encoder trains, it is a submodule here, so one DDP/FSDP wrapper covers both; so are both
    experts of a two-expert model when both train (``dit_2``: Wan2.2 A14B's low-noise expert; ``dit`` may be
    None when only that one trains). A step calls one of them (``expert``).
    """

    def __init__(self, dit: torch.nn.Module | None, text_encoder: torch.nn.Module | None = None,
                 dit_2: torch.nn.Module | None = None):
        super().__init__()
        self.dit = dit
        self.text_encoder = text_encoder
        if dit_2 is not None:
            self.dit_2 = dit_2

    def forward(self, x_t, timesteps, *, text_states=None, input_ids=None, attention_mask=None, expert: int = 0):
        """x_t (B, C, T', H', W'), timesteps (B,) or (B, L), text_states (B, N, D) -> velocity like x_t.

        expert: 0 for ``dit`` (the high-noise expert of two), 1 for ``dit_2``.
        """
        if input_ids is not None:
            text_states = encode_states(self.text_encoder, input_ids, attention_mask)
        dit = self.dit_2 if expert == 1 else self.dit
        return dit(x_t, timesteps, text_states)


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
