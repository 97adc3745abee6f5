"""Surgery on a VAE before training: a deterministic posterior, and a single-frame VAE inflated to clips."""

from __future__ import annotations

import torch


def fix_posterior_std(vae: torch.nn.Module, logvar: float = -30.0) -> None:
    """Make the VAE's posterior deterministic: its log-variance outputs become the constant ``logvar``.

    For runs that decode the posterior mean (``objective.sample_posterior: false``). The log-variance
    half of ``quant_conv`` then gets no gradient, so the saved VAE's std is exp(logvar / 2) (~3e-7 at
    -30, the clamp floor), and everything downstream that samples the posterior -- the DiT trainer's
    latent cache, encoding known frames -- sees the latents the decoder was trained on. Why not let it
    learn: with a small-image decoder a sampled std near 1 at initialisation drowns the means and the
    decoder settles on the grey average (measured: L1 0.45 after 150 steps against 0.05 for the clip's
    background alone), and any KL weight pushes a tiny std back up.
    """
    conv = vae.quant_conv
    channels = conv.weight.shape[0] // 2
    with torch.no_grad():
        conv.weight[channels:].zero_()
        conv.bias[channels:].fill_(logvar)


@torch.no_grad()
def inflate_temporal(vae: torch.nn.Module) -> None:
    """Turn a VAE trained on single frames into one that treats every frame like the first.

    Trained on 1-frame clips, a causal convolution's past-frame taps only ever saw zero padding, and the
    temporal resamplers never ran, so they hold their random initialisation. This zeroes the past taps
    (each frame then goes through exactly the computation the first frame does), makes each temporal
    downsampler keep the newest frame of its window, and each temporal upsampler repeat its frame
    twice: the VAE then encodes and decodes a clip frame by frame (a chunk decodes to its frame repeated),
    the starting point from which training on clips learns motion (the 2-D-to-3-D "inflation" of I3D).
    """
    from videogen.models.vae_blocks import CausalConv3d, Resample

    for module in vae.modules():
        if isinstance(module, Resample) and hasattr(module, "time_conv"):
            conv = module.time_conv
            conv.weight.zero_()
            conv.bias.zero_()
            eye = torch.eye(conv.weight.shape[1], dtype=conv.weight.dtype)
            newest = conv.weight[:, :, -1, 0, 0]  # (out, in): the tap on the newest frame
            newest.copy_(eye.repeat(conv.weight.shape[0] // eye.shape[0], 1))  # up: both halves; down: identity
        elif isinstance(module, CausalConv3d) and module.weight.shape[2] > 1:
            module.weight[:, :, :-1].zero_()
