"""Frame conditioning, the masked flow loss, and the VAE's structural term."""

import numpy as np
import pytest
import torch

from videogen.train.config import ObjectiveConfig
from videogen.train.objectives import flow  # the shared flow-matching module
from videogen.train.objectives import clip_ssim, dit_loss, drop_captions, known_frames, sample_modes


def test_known_frames_per_mode():
    modes = torch.tensor([0, 1, 2])
    assert known_frames(modes, 5).tolist() == [
        [False] * 5,
        [True, False, False, False, False],
        [True, False, False, False, True],
    ]
    assert known_frames(modes, 5, first=2)[1].tolist() == [True, True, False, False, False]
    # at least one frame stays unknown: an image is never conditioned, 2 frames give first only
    assert not known_frames(modes, 1).any()
    assert known_frames(modes, 2).tolist() == [[False, False], [True, False], [True, False]]
    assert known_frames(torch.tensor([1]), 3, first=5).tolist() == [[True, True, False]]


def test_mode_and_dropout_frequencies_follow_the_config():
    g = torch.Generator().manual_seed(0)
    cfg = ObjectiveConfig(p_first=0.3, p_first_last=0.2)
    counts = torch.bincount(sample_modes(20000, cfg, g), minlength=3).float() / 20000
    assert torch.allclose(counts, torch.tensor([0.5, 0.3, 0.2]), atol=0.015)
    assert (sample_modes(1000, ObjectiveConfig(), g) == 0).all()
    assert abs(drop_captions(20000, 0.1, g).float().mean().item() - 0.1) < 0.01


def test_masked_flow_loss_ignores_known_frames():
    target = torch.zeros(2, 4, 3, 2, 2)
    pred = torch.ones(2, 4, 3, 2, 2, requires_grad=True)
    known = torch.tensor([[True, False, False], [True, False, True]])
    with torch.no_grad():
        pred[:, :, 0] = 100.0  # error on frame 0 (known in both samples) must not count
        pred[1, :, 2] = 100.0
    loss = flow.flow_loss(pred, target, target, known=known)  # target velocity noise - x0 = 0
    assert loss.item() == pytest.approx(1.0)
    loss.backward()
    assert (pred.grad[:, :, 0] == 0).all() and (pred.grad[1, :, 2] == 0).all()
    assert (pred.grad[0, :, 1] > 0).all()


class Recorder(torch.nn.Module):
    """A velocity model that remembers its inputs and predicts zeros (a linear layer keeps a gradient path)."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x_t, timesteps, **text):
        self.seen = (x_t.detach().clone(), timesteps.detach().clone(), text)
        return x_t * self.scale


def test_dit_loss_holds_known_frames_clean_at_timestep_zero():
    cfg = ObjectiveConfig(p_first=0.0, p_first_last=1.0)
    latents = torch.randn(2, 4, 3, 4, 6)  # (B, C, T', H', W') -> 2x3 tokens per frame
    model = Recorder()
    loss, stats = dit_loss(model, latents, {"text_states": torch.zeros(2, 5, 8)}, cfg,
                            torch.Generator().manual_seed(0))
    x_t, timesteps, _ = model.seen
    assert torch.equal(x_t[:, :, 0], latents[:, :, 0]) and torch.equal(x_t[:, :, 2], latents[:, :, 2])
    assert not torch.allclose(x_t[:, :, 1], latents[:, :, 1])
    assert timesteps.shape == (2, 3 * 2 * 3)
    per_frame = timesteps.view(2, 3, 6)
    assert (per_frame[:, 0] == 0).all() and (per_frame[:, 2] == 0).all()
    assert (per_frame[:, 1] > 0).all() and (per_frame[:, 1] <= 1000).all()
    assert stats["known"] == pytest.approx(2 / 3)
    # zero prediction: the loss is the mean squared target (noise - x0) over the middle frame only
    # recover the noise from x_t = (1 - s) x0 + s noise on the unknown frame
    s = per_frame[:, 1, 0] / 1000
    noise = (x_t[:, :, 1] - (1 - s.view(2, 1, 1, 1)) * latents[:, :, 1]) / s.view(2, 1, 1, 1)
    noise_minus_x0 = noise - latents[:, :, 1]
    assert loss.item() == pytest.approx(noise_minus_x0.pow(2).mean().item(), rel=1e-4)


def test_dit_loss_without_conditioning_uses_one_timestep_per_sample():
    model = Recorder()
    dit_loss(model, torch.randn(3, 4, 2, 4, 4), {}, ObjectiveConfig(), torch.Generator().manual_seed(1))
    assert model.seen[1].shape == (3,)


def test_dit_loss_timestep_distribution_and_shift():
    latents = torch.zeros(4096, 1, 1, 2, 2)
    seen = {}
    for name, cfg in {"uniform": ObjectiveConfig(timestep_sampling="uniform"),
                      "logit": ObjectiveConfig(timestep_sampling="logit_normal"),
                      "shifted": ObjectiveConfig(timestep_sampling="uniform", shift=3.0)}.items():
        model = Recorder()
        dit_loss(model, latents, {}, cfg, torch.Generator().manual_seed(2))
        seen[name] = model.seen[1] / 1000
    assert seen["uniform"].mean().item() == pytest.approx(0.5, abs=0.02)
    assert seen["uniform"].std().item() == pytest.approx(12**-0.5, abs=0.02)
    assert seen["logit"].std() < seen["uniform"].std()  # logit-normal concentrates mid-way
    # shift 3 maps the median 0.5 to 3 * 0.5 / (1 + 2 * 0.5) = 0.75
    assert seen["shifted"].median().item() == pytest.approx(0.75, abs=0.02)


def test_ssim_matches_scikit_image():
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 2, 32, 32, generator=g) * 2 - 1
    y = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    assert clip_ssim(x, x).item() == pytest.approx(1.0, abs=1e-5)
    ref = np.mean([
        structural_similarity(((x[0, :, t] + 1) / 2).permute(1, 2, 0).numpy(),
                              ((y[0, :, t] + 1) / 2).permute(1, 2, 0).numpy(),
                              channel_axis=2, data_range=1.0, gaussian_weights=True, sigma=1.5,
                              use_sample_covariance=False)
        for t in range(2)
    ])
    assert clip_ssim(x, y).item() == pytest.approx(ref, abs=0.01)


def _tiny_vae():
    from videogen.models.vae import CausalVideoVAE

    torch.manual_seed(0)
    return CausalVideoVAE(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, attn_scales=[],
                          temperal_downsample=[False, True, True])


def _square_clip() -> torch.Tensor:
    video = torch.zeros(1, 3, 5, 16, 16)  # gray background
    video[:, 0, :, 4:8, 4:8] = 1.0  # a red-ish square: the red channel alone moves by 1
    return video


def test_foreground_mask_finds_the_object_not_the_background():
    from videogen.train.objectives import foreground_mask

    video = _square_clip()
    mask = foreground_mask(video)
    assert mask.shape == (1, 1, 5, 16, 16)
    assert mask[0, 0, :, 4:8, 4:8].all() and mask.sum() == 5 * 16
    assert not foreground_mask(torch.full((1, 3, 5, 16, 16), -1.0)).any()  # a flat clip has none


def test_vae_loss_weights_foreground_errors_and_decodes_the_mean_without_noise():
    from videogen.train.modules import Autoencoder
    from videogen.train.objectives import vae_loss

    video = _square_clip()

    class Background(torch.nn.Module):  # reconstructs the background everywhere: wrong on the square only
        def forward(self, v, generator):
            mean = torch.zeros(1, 4, 2, 2, 2)
            return torch.zeros_like(v), mean, torch.full_like(mean, 1e-15)

    plain = ObjectiveConfig(l1=1.0, mse=1.0, ssim=0.0, kl=0.0, sample_posterior=False)
    weighted = ObjectiveConfig(l1=1.0, mse=1.0, ssim=0.0, kl=0.0, sample_posterior=False, foreground_weight=10.0)
    g = torch.Generator().manual_seed(0)
    base, stats = vae_loss(Background(), video, plain, g)
    heavy, _ = vae_loss(Background(), video, weighted, g)
    share = 16 / 256 / 3  # the square's red channel: 16 of 256 pixels, 1 of 3 channels, error 1
    assert base.item() == pytest.approx(2 * share) and heavy.item() == pytest.approx(11 * 2 * share)
    assert stats["l1"] == pytest.approx(share)  # the logged L1 stays the plain mean

    # the mean posterior path: no noise drawn, the same output twice
    model = Autoencoder(_tiny_vae(), sample_posterior=False)
    a = model(video, torch.Generator().manual_seed(1))[0]
    b = model(video, torch.Generator().manual_seed(2))[0]
    assert torch.equal(a, b)


def test_inflated_vae_codes_a_clip_frame_by_frame():
    from videogen.train.surgery import inflate_temporal

    vae = _tiny_vae().eval()
    video = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    with torch.no_grad():
        before = vae.encode(video).mean
        inflate_temporal(vae)
        z = vae.encode(video).mean  # (1, 16, 2, 2, 2)
        alone = vae.encode(video[:, :, 4:5]).mean  # the chunk's newest frame, as a first frame
        out = vae.decode(z)
        chunk = vae.decode(z[:, :, 1:2])  # latent frame 1 decoded as a first frame
    assert not torch.allclose(before[:, :, 1], alone[:, :, 0], atol=1e-4)  # not so before inflating
    assert torch.allclose(z[:, :, 1], alone[:, :, 0], atol=1e-5)
    for t in range(1, 5):  # the chunk decodes to its frame, repeated
        assert torch.allclose(out[:, :, t], chunk[:, :, 0], atol=1e-5)


def test_image_batches_train_the_first_latent_frame_alone():
    latents = torch.randn(3, 4, 5, 4, 4)
    model = Recorder()
    dit_loss(model, latents, {}, ObjectiveConfig(p_image=1.0, p_first=1.0), torch.Generator().manual_seed(0))
    x_t, timesteps, _ = model.seen
    assert x_t.shape == (3, 4, 1, 4, 4)  # the image: nothing is given, one timestep per sample
    assert timesteps.shape == (3,) and (timesteps > 0).all()
    frames = []
    generator = torch.Generator().manual_seed(1)
    for _ in range(400):
        dit_loss(model, latents, {}, ObjectiveConfig(p_image=0.3), generator)
        frames.append(model.seen[0].shape[2])
    assert set(frames) == {1, 5}
    assert np.mean(np.array(frames) == 1) == pytest.approx(0.3, abs=0.07)


def test_image_batches_can_train_the_opening_that_image_first_sampling_draws():
    latents = torch.randn(3, 4, 5, 4, 4)
    model = Recorder()
    cfg = ObjectiveConfig(p_image=1.0, p_first=1.0, image_latent_frames=2)
    dit_loss(model, latents, {}, cfg, torch.Generator().manual_seed(0))
    x_t, timesteps, _ = model.seen
    assert x_t.shape == (3, 4, 2, 4, 4)  # the first two latent frames: the first 5 frames under the causal VAE
    assert timesteps.shape == (3,) and (timesteps > 0).all()  # from text alone, though p_first is 1
    dit_loss(model, latents[:, :, :2], {}, cfg, torch.Generator().manual_seed(0))
    assert model.seen[0].shape[2] == 1  # a clip no longer than the opening: its image, as before
