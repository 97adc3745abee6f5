"""The causal video VAE against diffusers' AutoencoderKLWan, and its own contracts (tiny random models)."""

import copy
import json

import pytest
import torch
from diffusers import AutoencoderKLWan

from videogen.errors import ConfigError, InputError, ModelError
from videogen.models.vae_blocks import StreamCache
from videogen.modelfolder import load_vae
from videogen.models.vae import CausalVideoVAE, DiagonalGaussian, Tiling, axis_spans, ramp

TINY = dict(
    base_dim=8,
    z_dim=4,
    dim_mult=[1, 2, 2, 2],  # width changes (shortcut convs) and halving upsamplers, as in Wan2.1
    num_res_blocks=1,
    attn_scales=[],
    temperal_downsample=[False, True, True],
    latents_mean=[0.5, -0.25, 0.0, 1.0],
    latents_std=[2.0, 0.5, 1.0, 1.5],
)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.fixture(scope="module")
def models():
    """A diffusers AutoencoderKLWan with every parameter perturbed (so a misnamed norm or bias shows),
    and our model loaded from its state dict with strict name and shape checking."""
    torch.manual_seed(0)
    ref = AutoencoderKLWan(**TINY).eval()
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if name.endswith("gamma"):
                p.add_(0.2 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
    ours = CausalVideoVAE(**TINY).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def clip(frames: int, size=(16, 24), batch=1, seed=1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, frames, *size, generator=g) * 2 - 1


def latents(frames: int, size=(2, 3), batch=1, seed=2) -> torch.Tensor:
    return torch.randn(batch, TINY["z_dim"], frames, *size, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------- reference equivalence


def test_state_dict_names_and_config_keys_are_diffusers(models):
    ref, ours = models
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert all(ours.state_dict()[k].shape == v.shape for k, v in ref.state_dict().items())
    assert set(ref.config) <= set(ours.config)


@pytest.mark.parametrize("streaming", [False, True], ids=["parallel", "streaming"])
@pytest.mark.parametrize("frames", [1, 5, 9])
def test_encode_matches_diffusers(models, frames, streaming):
    ref, ours = models
    x = clip(frames)
    with torch.no_grad():
        expected = ref.encode(x).latent_dist
        got = ours.encode(x, streaming=streaming)
    assert got.mean.shape == (1, 4, 1 + (frames - 1) // 4, 2, 3)
    assert relative_error(got.mean, expected.mean) < 1e-4
    assert relative_error(got.std, expected.std) < 1e-4


@pytest.mark.parametrize("streaming", [False, True], ids=["parallel", "streaming"])
@pytest.mark.parametrize("latent_frames", [1, 2, 3])
def test_decode_matches_diffusers(models, latent_frames, streaming):
    ref, ours = models
    z = latents(latent_frames)
    with torch.no_grad():
        expected = ref.decode(z).sample
        got = ours.decode(z, streaming=streaming)
    assert got.shape == (1, 3, 1 + 4 * (latent_frames - 1), 16, 24)
    assert expected.abs().lt(1).float().mean() > 0.99  # outputs are not just the clamp bounds
    assert relative_error(got, expected) < 1e-4


def test_sample_matches_diffusers_with_same_generator(models):
    ref, ours = models
    x = clip(5)
    with torch.no_grad():
        expected = ref.encode(x).latent_dist.sample(generator=torch.Generator().manual_seed(7))
        got = ours.encode(x).sample(generator=torch.Generator().manual_seed(7))
    assert relative_error(got, expected) < 1e-4


# ------------------------------------------------------------------------------------ the two paths


def test_streaming_equals_parallel(models):
    _, ours = models
    x = clip(9, batch=2)
    with torch.no_grad():
        par, stream = ours.encode(x).mean, ours.encode(x, streaming=True).mean
        assert relative_error(stream, par) < 1e-5
        assert relative_error(ours.decode(par, streaming=True), ours.decode(par)) < 1e-5


def test_decode_frames_concatenated_equals_decode(models):
    _, ours = models
    z = latents(4)
    with torch.no_grad():
        chunks = list(ours.decode_frames(z))
        whole = ours.decode(z)
    assert [c.shape[2] for c in chunks] == [1, 4, 4, 4]
    assert relative_error(torch.cat(chunks, dim=2), whole) < 1e-5


def test_encode_frames_regroups_any_chunking(models):
    _, ours = models
    x = clip(9)
    with torch.no_grad():
        pieces = list(ours.encode_frames(x.split([3, 2, 1, 3], dim=2)))
        whole = ours.encode(x).mean
    assert len(pieces) == 3
    assert relative_error(torch.cat([p.mean for p in pieces], dim=2), whole) < 1e-5


def test_encode_frames_refuses_a_partial_last_chunk(models):
    _, ours = models
    with pytest.raises(InputError, match="last 2 frame"):
        list(ours.encode_frames([clip(7)]))


@pytest.mark.parametrize("streaming", [False, True], ids=["parallel", "streaming"])
def test_encoder_is_causal(models, streaming):
    _, ours = models
    x = clip(9)
    changed = x.clone()
    changed[:, :, 5:] = -changed[:, :, 5:]  # frames 5..8 feed latent frame 2 only
    with torch.no_grad():
        a = ours.encode(x, streaming=streaming).mean
        b = ours.encode(changed, streaming=streaming).mean
    assert torch.equal(a[:, :, :2], b[:, :, :2])
    assert (a[:, :, 2] - b[:, :, 2]).abs().max() > 1e-3


@pytest.mark.parametrize("streaming", [False, True], ids=["parallel", "streaming"])
def test_decoder_is_causal(models, streaming):
    _, ours = models
    z = latents(3)
    changed = z.clone()
    changed[:, :, 2] += 1.0  # latent frame 2 becomes pixel frames 5..8
    with torch.no_grad():
        a, b = ours.decode(z, streaming=streaming), ours.decode(changed, streaming=streaming)
    assert torch.equal(a[:, :, :5], b[:, :, :5])
    assert (a[:, :, 5:] - b[:, :, 5:]).abs().max() > 1e-3


def test_stream_cache_stays_the_same_size(models):
    _, ours = models
    z = ours.post_quant_conv(latents(6, batch=1))
    cache, sizes = StreamCache(), []
    with torch.no_grad():
        for i in range(z.shape[2]):
            ours.decoder(z[:, :, i : i + 1], cache)
            sizes.append(cache.nbytes())
    assert sizes[0] < sizes[1]  # the first chunk is one frame
    assert sizes[2:] == [sizes[1]] * 4  # then constant, however long the clip


# ----------------------------------------------------------------------------------- save and load


def test_our_save_loads_in_diffusers(models, tmp_path):
    _, ours = models
    ours.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    loaded = AutoencoderKLWan.from_pretrained(tmp_path).eval()
    z = latents(2)
    with torch.no_grad():
        assert relative_error(loaded.decode(z).sample, ours.decode(z)) < 1e-4
    assert json.loads((tmp_path / "config.json").read_text())["temperal_downsample"] == [False, True, True]


def test_diffusers_save_loads_in_ours(models, tmp_path):
    ref, _ = models
    ref.save_pretrained(tmp_path / "vae")
    loaded = load_vae(tmp_path).eval()  # a model folder holding vae/
    x = clip(5)
    with torch.no_grad():
        assert relative_error(loaded.encode(x).mean, ref.encode(x).latent_dist.mean) < 1e-4
    assert loaded.config.latents_std == TINY["latents_std"]


def test_load_vae_errors_name_the_folder(tmp_path):
    with pytest.raises(ModelError, match="not a VAE folder"):
        load_vae(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKLWan", **TINY}))
    with pytest.raises(ModelError, match=str(tmp_path.name)):
        load_vae(tmp_path)  # config but no weights


# -------------------------------------------------------------------------------------------- tiling


def test_tile_spans_cover_and_overlap():
    for size in (10, 12, 17, 40):
        spans = axis_spans(size, 8, 2)
        assert spans[0].start == 0 and spans[-1].end == size
        assert all(b.start < a.end and a.end - b.start >= 2 for a, b in zip(spans, spans[1:]))
    a, b = ramp(16, 0, 8), ramp(16, 8, 0)  # two neighbours overlapping by 8
    assert torch.allclose(a[8:] + b[:8], torch.ones(8), atol=1e-3)  # their weights sum to 1
    assert b[:2].max() < 1e-3 and a[-2:].max() < 1e-3  # and neither uses its own outer edge


def column_steps(video: torch.Tensor) -> torch.Tensor:
    """Mean absolute jump between neighbouring columns, per column boundary: a seam is a spike here."""
    return video.diff(dim=4).abs().mean(dim=(0, 1, 2, 3))  # (W - 1,)


def seam_excess(tiled: torch.Tensor, whole: torch.Tensor) -> float:
    """The largest extra column-to-column jump of `tiled` over `whole`, in units of whole's mean jump."""
    return ((column_steps(tiled) - column_steps(whole)).max() / column_steps(whole).mean()).item()


def hard_cut_ramp(length: int, lo: int, hi: int) -> torch.Tensor:
    """Weights that stitch tiles edge to edge at the middle of each overlap, with no cross-fade."""
    w = torch.ones(length)
    w[: lo // 2] = 1e-6
    w[length - hi + (hi + 1) // 2 :] = 1e-6
    return w


def test_tiled_decode_has_no_seams(models, monkeypatch):
    _, ours = models
    ours.tiling = Tiling(tile=8, overlap=4)
    # a smooth latent field, so that the untiled decode has no edges of its own
    z = torch.nn.functional.interpolate(latents(1, size=(3, 3)), size=(1, 12, 12), mode="trilinear")
    z = z.transpose(3, 4)  # columns are the tiled axis measured below; rows tile the same way
    try:
        with torch.no_grad():
            whole = ours.decode(z, tiled=False)
            tiled = ours.decode(z, tiled=True)
            streamed = ours.decode(z, streaming=True, tiled=True)
            monkeypatch.setattr("videogen.models.vae.ramp", hard_cut_ramp)
            stitched = ours.decode(z, tiled=True)
    finally:
        ours.tiling = Tiling()
    assert relative_error(streamed, tiled) < 1e-5
    # tiles see less context than the whole frame (the mid-block attention is per tile), so they differ,
    # but the cross-fade leaves no jump between columns larger than the untiled image's own
    assert (tiled - whole).abs().mean() < 0.35 * whole.abs().mean()
    assert seam_excess(tiled, whole) < 0.5
    # the measure does see a seam: stitching the same tiles edge to edge makes a sharper one
    assert seam_excess(stitched, whole) > 1.5 * seam_excess(tiled, whole)


def test_tiled_encode_is_close_to_untiled(models):
    _, ours = models
    ours.tiling = Tiling(tile=8, overlap=4)
    try:
        x = torch.nn.functional.interpolate(clip(5, size=(12, 12), batch=1), size=(5, 96, 96), mode="trilinear")
        with torch.no_grad():
            whole = ours.encode(x, tiled=False).mean
            tiled = ours.encode(x, streaming=True, tiled=True).mean
    finally:
        ours.tiling = Tiling()
    assert tiled.shape == whole.shape
    assert (tiled - whole).abs().mean() < 0.1 * whole.abs().mean()


def test_tiling_turns_on_above_the_size_threshold():
    tiling = Tiling(auto_pixels=64 * 64)
    assert not tiling.wanted(None, 64, 64) and tiling.wanted(None, 64, 72)
    assert tiling.wanted(True, 8, 8) and not tiling.wanted(False, 1024, 1024)


# ------------------------------------------------------------------------------------------ training


def test_gradient_checkpointing_gives_the_same_gradients(models):
    _, ours = models
    model = CausalVideoVAE(**TINY)
    model.load_state_dict(ours.state_dict())
    x = clip(5, batch=1)

    def grads():
        model.zero_grad()
        recon, posterior = model(x)
        ((recon - x).pow(2).mean() + 1e-3 * posterior.kl().mean()).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain = grads()
    model.enable_gradient_checkpointing()
    assert model.is_gradient_checkpointing
    checkpointed = grads()
    model.disable_gradient_checkpointing()
    assert all(plain[n].abs().max() > 0 for n in ("encoder.conv_in.weight", "decoder.conv_out.weight"))
    for name in plain:
        assert torch.allclose(checkpointed[name], plain[name], rtol=1e-4, atol=1e-6), name


# ------------------------------------------------------------------------------------ small contracts


def test_normalize_denormalize(models):
    _, ours = models
    z = latents(2)
    mean = torch.tensor(TINY["latents_mean"]).view(1, -1, 1, 1, 1)
    std = torch.tensor(TINY["latents_std"]).view(1, -1, 1, 1, 1)
    assert torch.allclose(ours.normalize(z), (z - mean) / std)
    assert torch.allclose(ours.denormalize(ours.normalize(z)), z, atol=1e-6)


def test_unclamped_decode_keeps_gradients_outside_the_range(models):
    ours = copy.deepcopy(models[1])
    with torch.no_grad():
        ours.decoder.conv_out.bias[0] += 1.5  # push part of the red channel past 1
    z = latents(2).requires_grad_()
    raw = ours.decode(z, clamp=False)
    assert torch.equal(raw.clamp(-1, 1), ours.decode(z))
    outside = raw.detach().abs() > 1
    assert outside.any() and not outside.all()
    # a loss pulling every pixel towards 0: the clamped decode gives those pixels no gradient, the raw one does
    (grad_raw,) = torch.autograd.grad(raw[outside].abs().sum(), z)
    assert grad_raw.abs().sum() > 0
    clamped = ours.decode(z)
    (grad_clamped,) = torch.autograd.grad(clamped[outside].abs().sum(), z, allow_unused=True)
    assert grad_clamped is None or grad_clamped.abs().sum() == 0


def test_compression_properties(models):
    _, ours = models
    assert (ours.temporal_compression, ours.spatial_compression, ours.latent_channels) == (4, 8, 4)


def test_diagonal_gaussian():
    moments = torch.cat([torch.zeros(2, 4, 1, 2, 2), torch.zeros(2, 4, 1, 2, 2)], dim=1)
    standard = DiagonalGaussian(moments)
    assert torch.equal(standard.kl(), torch.zeros(2))
    shifted = DiagonalGaussian(moments + torch.cat([torch.ones(2, 4, 1, 2, 2), torch.zeros(2, 4, 1, 2, 2)], 1))
    assert torch.allclose(shifted.kl(), torch.full((2,), 0.5 * 16))  # 0.5 * sum(mean^2)
    a = standard.sample(torch.Generator().manual_seed(3))
    assert torch.equal(a, standard.sample(torch.Generator().manual_seed(3)))
    assert torch.equal(standard.mode(), standard.mean)


@pytest.mark.parametrize(
    "shape, message",
    [
        ((1, 3, 6, 32, 32), "video has 6 frames; the VAE takes 1 \\+ 4k frames"),
        ((1, 3, 5, 30, 32), "30x32 .* multiples of 8"),
        ((1, 3, 5, 32, 36), "32x36 .* multiples of 8"),
        ((3, 5, 32, 32), r"video must be \(batch, 3, frames, height, width\); got \(3, 5, 32, 32\)"),
        ((1, 4, 5, 32, 32), r"got \(1, 4, 5, 32, 32\)"),
    ],
)
def test_bad_video_shapes_are_input_errors(models, shape, message):
    _, ours = models
    with pytest.raises(InputError, match=message):
        ours.encode(torch.zeros(shape))


def test_bad_latent_shapes_are_input_errors(models):
    _, ours = models
    with pytest.raises(InputError, match=r"latents must be \(batch, 4, frames, height, width\)"):
        ours.decode(torch.zeros(1, 16, 2, 4, 4))
    with pytest.raises(InputError, match="latents must be"):
        next(ours.decode_frames(torch.zeros(1, 4, 0, 4, 4)))


@pytest.mark.parametrize(
    "override, message",
    [
        (dict(is_residual=True), "is_residual=True is the Wan2.2 VAE"),
        (dict(patch_size=2), "patch_size=2 is the Wan2.2 VAE"),
        (dict(temperal_downsample=[True, True]), "one entry per downsampling stage"),
        (dict(latents_mean=[0.0] * 3), "latents_mean has 3 values; z_dim is 4"),
        (dict(scale_factor_spatial=16), "scale_factor_spatial=16 but the architecture gives 8"),
    ],
)
def test_unsupported_configs_are_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        CausalVideoVAE(**{**TINY, **override})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_paths_agree_with_fp32_cpu(models):
    ref, ours = models
    gpu = CausalVideoVAE(**TINY).eval()
    gpu.load_state_dict(ours.state_dict())
    gpu = gpu.to("cuda", torch.bfloat16)
    x = clip(9)
    with torch.no_grad():
        expected = ref.encode(x).latent_dist.mean
        par = gpu.encode(x.cuda(), streaming=False).mean.float().cpu()
        stream = gpu.encode(x.cuda(), streaming=True).mean.float().cpu()
        decoded = gpu.decode(par.cuda(), streaming=True).float().cpu()
        decoded_ref = ref.decode(par).sample
    assert relative_error(par, expected) < 3e-2 and relative_error(stream, expected) < 3e-2
    assert relative_error(decoded, decoded_ref) < 3e-2
