"""Wan2.2's VAE (the TI2V-5B one: 2x2 patchify, residual stages, 48 channels, 4x16x16) against diffusers'
AutoencoderKLWan on the same tiny random weights, and its own contracts: streaming, tiling, flat memory."""

import json
import weakref

import pytest
import torch
from diffusers import AutoencoderKLWan
from torch.testing import assert_close
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from test_vae import hard_cut_ramp, seam_excess
from videogen.errors import ConfigError, InputError
from videogen.memory import vae_decode_working_bytes
from videogen.modelfolder import load_vae
from videogen.models.vae import CausalVideoVAE, Tiling
from videogen.models.vae_blocks import StreamCache

# Wan2.2 TI2V's layout at a twentieth of its width: dim_mult [1, 2, 4, 4] so that the decoder's shortcuts
# both repeat channels in place and halve the width; a decoder width of its own; 12 channels after the patchify.
TINY22 = dict(
    base_dim=8,
    decoder_base_dim=12,
    z_dim=48,
    dim_mult=[1, 2, 4, 4],
    num_res_blocks=1,
    attn_scales=[],
    temperal_downsample=[False, True, True],
    is_residual=True,
    patch_size=2,
    in_channels=12,
    out_channels=12,
    latents_mean=[0.01 * i for i in range(48)],
    latents_std=[1.0 + 0.02 * i for i in range(48)],
    scale_factor_temporal=4,
    scale_factor_spatial=16,
)
FP32 = dict(rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def models():
    """A diffusers AutoencoderKLWan (Wan2.2 layout) with every norm and bias perturbed, so a misnamed one
    shows, and ours loaded from its state dict with strict name and shape checking."""
    torch.manual_seed(0)
    ref = AutoencoderKLWan(**TINY22).eval()
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if name.endswith("gamma"):
                p.add_(0.2 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
    ours = CausalVideoVAE(**TINY22).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def clip(frames: int, size=(32, 48), batch=1, seed=1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, frames, *size, generator=g) * 2 - 1


def latents(frames: int, size=(2, 3), batch=1, seed=2) -> torch.Tensor:
    return torch.randn(batch, 48, frames, *size, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------- reference equivalence


def test_state_dict_names_and_config_keys_are_diffusers(models):
    ref, ours = models
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert all(ours.state_dict()[k].shape == v.shape for k, v in ref.state_dict().items())
    assert set(ref.config) <= set(ours.config)
    assert any(".avg_shortcut" not in k and ".downsampler." in k for k in ref.state_dict())  # residual stages


@pytest.mark.parametrize("streaming", [False, True], ids=["parallel", "streaming"])
@pytest.mark.parametrize("frames", [1, 5, 9])
def test_encode_matches_diffusers(models, frames, streaming):
    ref, ours = models
    x = clip(frames)
    with torch.no_grad():
        expected = ref.encode(x).latent_dist
        got = ours.encode(x, streaming=streaming)
    assert got.mean.shape == (1, 48, 1 + (frames - 1) // 4, 2, 3)
    assert_close(got.mean, expected.mean, **FP32)
    assert_close(got.std, expected.std, **FP32)


@pytest.mark.parametrize("streaming", [False, True], ids=["parallel", "streaming"])
@pytest.mark.parametrize("latent_frames", [1, 2, 3])
def test_decode_matches_diffusers(models, latent_frames, streaming):
    ref, ours = models
    z = latents(latent_frames)
    with torch.no_grad():
        expected = ref.decode(z).sample
        got = ours.decode(z, streaming=streaming)
    assert got.shape == (1, 3, 1 + 4 * (latent_frames - 1), 32, 48)
    assert expected.abs().lt(1).float().mean() > 0.99  # outputs are not just the clamp bounds
    assert_close(got, expected, **FP32)


def test_decode_frames_match_diffusers_frame_for_frame(models):
    ref, ours = models
    z = latents(3)
    with torch.no_grad():
        expected = ref.decode(z).sample
        chunks = list(ours.decode_frames(z))
    assert [c.shape[2] for c in chunks] == [1, 4, 4]
    for chunk, start in zip(chunks, (0, 1, 5)):
        assert_close(chunk, expected[:, :, start : start + chunk.shape[2]], **FP32)


def test_encode_frames_regroups_any_chunking(models):
    ref, ours = models
    x = clip(9)
    with torch.no_grad():
        pieces = list(ours.encode_frames(x.split([3, 2, 1, 3], dim=2)))
        expected = ref.encode(x).latent_dist.mean
    assert len(pieces) == 3
    assert_close(torch.cat([p.mean for p in pieces], dim=2), expected, **FP32)


def test_streaming_equals_parallel_on_a_batch(models):
    _, ours = models
    x = clip(9, batch=2)
    with torch.no_grad():
        par, stream = ours.encode(x).mean, ours.encode(x, streaming=True).mean
        assert_close(stream, par, rtol=1e-5, atol=1e-6)
        assert_close(ours.decode(par, streaming=True), ours.decode(par), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("streaming", [False, True], ids=["parallel", "streaming"])
def test_the_residual_vae_is_causal(models, streaming):
    _, ours = models
    x, z = clip(9), latents(3)
    changed_x, changed_z = x.clone(), z.clone()
    changed_x[:, :, 5:] = -changed_x[:, :, 5:]  # frames 5..8 feed latent frame 2 only
    changed_z[:, :, 2] += 1.0  # latent frame 2 becomes pixel frames 5..8
    with torch.no_grad():
        a, b = ours.encode(x, streaming=streaming).mean, ours.encode(changed_x, streaming=streaming).mean
        c, d = ours.decode(z, streaming=streaming), ours.decode(changed_z, streaming=streaming)
    assert torch.equal(a[:, :, :2], b[:, :, :2]) and (a[:, :, 2] - b[:, :, 2]).abs().max() > 1e-3
    assert torch.equal(c[:, :, :5], d[:, :, :5]) and (c[:, :, 5:] - d[:, :, 5:]).abs().max() > 1e-3


@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")
def test_reference_convolutions_give_the_same_numbers(models):
    """With oneDNN off, every convolution takes PyTorch's own kernels: the fast path changes no result."""
    _, ours = models
    x = clip(5)
    with torch.no_grad():
        fast = ours.decode(ours.encode(x, streaming=True).mean, streaming=True)
        with torch.backends.mkldnn.flags(enabled=False):
            assert not torch.backends.mkldnn.enabled
            plain = ours.decode(ours.encode(x, streaming=True).mean, streaming=True)
    assert_close(fast, plain, **FP32)


# ------------------------------------------------------------------------------------ flat memory


class LiveTensorBytes(TorchDispatchMode):
    """The bytes of tensor storage alive, and their peak, over every tensor an op makes under this mode.

    A storage counts from the first op that returns it until the last tensor on it dies (views and
    in-place results of a counted storage keep it counted; those of a tensor made outside, such as the
    weights or the given latents, are not counted). It reads live tensors, not the allocator or the
    resident set, so the same computation gives the same figure every run.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self._holders: dict[int, list[int]] = {}  # storage address -> [tensors alive on it, bytes]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        given = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._hold(t, given)
        return out

    def _hold(self, t: torch.Tensor, given: set[int]) -> None:
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key not in self._holders:
            if key in given:
                return  # a view of a tensor made outside the mode
            self._holders[key] = [0, storage.nbytes()]
            self.live += storage.nbytes()
            self.peak = max(self.peak, self.live)
        self._holders[key][0] += 1
        weakref.finalize(t, self._release, key)

    def _release(self, key: int) -> None:
        entry = self._holders[key]
        entry[0] -= 1
        if entry[0] == 0:
            self.live -= entry[1]
            del self._holders[key]


def streamed_peak(vae: CausalVideoVAE, z: torch.Tensor) -> int:
    """Peak live bytes of `decode_frames`, each chunk consumed (summed) and dropped as it comes."""
    with torch.no_grad(), LiveTensorBytes() as measure:
        for chunk in vae.decode_frames(z):
            chunk.sum()
        del chunk
    assert measure.live == 0  # nothing made during the decode outlives it
    return measure.peak


def test_streaming_decode_memory_does_not_grow_with_the_clip(models):
    """81 frames decode in exactly the memory 17 take; the same measure sees diffusers' decode, which
    holds the whole clip, grow."""
    ref, ours = models
    short, long = latents(5), latents(21)  # 17 and 81 frames
    assert streamed_peak(ours, long) == streamed_peak(ours, short)
    frame_bytes = 3 * 32 * 48 * 4
    assert streamed_peak(ours, long) < 81 * frame_bytes  # less than the clip itself
    with torch.no_grad():
        peaks = []
        for z in (short, long):
            with LiveTensorBytes() as measure:
                ref.decode(z).sample.sum()
            peaks.append(measure.peak)
    assert peaks[1] - peaks[0] >= (81 - 17) * frame_bytes


def test_the_decode_estimate_covers_the_measured_working_set(models):
    """memory.vae_decode_working_bytes for the residual decoder: above the live bytes, not far above."""
    _, ours = models
    live = streamed_peak(ours, latents(2, size=(4, 4)))
    estimate = vae_decode_working_bytes(ours.config, 64, 64)
    assert live <= estimate <= 1.25 * live


def test_stream_cache_stays_the_same_size(models):
    _, ours = models
    z = ours.post_quant_conv(latents(6))
    cache, sizes = StreamCache(), []
    with torch.no_grad():
        for i in range(z.shape[2]):
            ours.decoder(z[:, :, i : i + 1], cache)
            sizes.append(cache.nbytes())
    assert sizes[0] < sizes[1]  # the first chunk is one frame
    assert sizes[2:] == [sizes[1]] * 4  # then constant, however long the clip


# -------------------------------------------------------------------------------------------- tiling


def test_one_tile_over_the_whole_frame_is_the_untiled_decode(models):
    """Tile sizes are latent pixels, 16 image pixels each here: a tile as large as the frame is no tiling."""
    _, ours = models
    ours.tiling = Tiling(tile=3, overlap=1)
    try:
        z, x = latents(2), clip(5)
        with torch.no_grad():
            assert torch.equal(ours.decode(z, tiled=True), ours.decode(z, tiled=False))
            assert torch.equal(ours.encode(x, tiled=True).mean, ours.encode(x, tiled=False).mean)
    finally:
        ours.tiling = Tiling()


def patch_seam_excess(tiled: torch.Tensor, whole: torch.Tensor) -> float:
    """`seam_excess` over each column phase of the 2x2 patches: neighbouring columns inside a patch come
    from different decoder channels, so a seam is measured between columns of the same phase."""
    return max(seam_excess(tiled[..., phase::2], whole[..., phase::2]) for phase in (0, 1))


def test_tiled_decode_has_no_seams(models, monkeypatch):
    _, ours = models
    ours.tiling = Tiling(tile=8, overlap=4)
    # a smooth latent field, so that the untiled decode has no edges of its own
    z = torch.nn.functional.interpolate(latents(1, size=(3, 3)), size=(1, 12, 12), mode="trilinear")
    z = z.transpose(3, 4)  # columns are the tiled axis measured; rows tile the same way
    try:
        with torch.no_grad():
            whole = ours.decode(z, tiled=False)
            tiled = ours.decode(z, tiled=True)
            streamed = ours.decode(z, streaming=True, tiled=True)
            monkeypatch.setattr("videogen.models.vae.ramp", hard_cut_ramp)
            stitched = ours.decode(z, tiled=True)
    finally:
        ours.tiling = Tiling()
    assert tiled.shape == whole.shape == (1, 3, 1, 192, 192)
    assert_close(streamed, tiled, rtol=1e-5, atol=1e-6)
    # tiles see less context than the whole frame (the mid-block attention is per tile), so they differ,
    # but the cross-fade leaves no jump between columns larger than the untiled image's own
    assert (tiled - whole).abs().mean() < 0.35 * whole.abs().mean()
    assert patch_seam_excess(tiled, whole) < 0.5
    # the measure does see a seam: stitching the same tiles edge to edge makes a sharper one
    assert patch_seam_excess(stitched, whole) > 1.5 * patch_seam_excess(tiled, whole)


def test_tiled_encode_is_close_to_untiled(models):
    _, ours = models
    ours.tiling = Tiling(tile=8, overlap=4)
    try:
        x = torch.nn.functional.interpolate(clip(5, size=(12, 12)), size=(5, 192, 192), mode="trilinear")
        with torch.no_grad():
            whole = ours.encode(x, tiled=False).mean
            tiled = ours.encode(x, streaming=True, tiled=True).mean
    finally:
        ours.tiling = Tiling()
    assert tiled.shape == whole.shape == (1, 48, 2, 12, 12)
    assert (tiled - whole).abs().mean() < 0.1 * whole.abs().mean()


# ----------------------------------------------------------------------------------- save and load


def test_our_save_loads_in_diffusers(models, tmp_path):
    _, ours = models
    ours.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert (config["is_residual"], config["patch_size"], config["decoder_base_dim"]) == (True, 2, 12)
    loaded = AutoencoderKLWan.from_pretrained(tmp_path).eval()
    z = latents(2)
    with torch.no_grad():
        assert_close(loaded.decode(z).sample, ours.decode(z), **FP32)


def test_diffusers_save_loads_in_ours(models, tmp_path):
    ref, _ = models
    ref.save_pretrained(tmp_path / "vae")
    loaded = load_vae(tmp_path).eval()  # a model folder holding vae/
    x = clip(5)
    with torch.no_grad():
        assert_close(loaded.encode(x).mean, ref.encode(x).latent_dist.mean, **FP32)
    assert loaded.config.latents_std == TINY22["latents_std"] and loaded.latent_channels == 48


# ------------------------------------------------------------------------------------ small contracts


def test_compression_properties(models):
    _, ours = models
    assert (ours.temporal_compression, ours.spatial_compression, ours.latent_channels) == (4, 16, 48)
    assert ours.patch == 2
    recorded = CausalVideoVAE(**{**TINY22, "scale_factor_temporal": None, "scale_factor_spatial": None})
    assert (recorded.config.scale_factor_temporal, recorded.config.scale_factor_spatial) == (4, 16)


def test_gradient_checkpointing_gives_the_same_gradients(models):
    _, ours = models
    model = CausalVideoVAE(**TINY22)
    model.load_state_dict(ours.state_dict())
    x = clip(5)

    def grads():
        model.zero_grad()
        recon, posterior = model(x)
        ((recon - x).pow(2).mean() + 1e-3 * posterior.kl().mean()).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain = grads()
    model.enable_gradient_checkpointing()
    checkpointed = grads()
    assert all(plain[n].abs().max() > 0 for n in ("encoder.conv_in.weight", "decoder.conv_out.weight"))
    for name in plain:
        assert_close(checkpointed[name], plain[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize(
    "shape, message",
    [
        ((1, 12, 5, 32, 32), r"video must be \(batch, 3, frames, height, width\)"),
        ((1, 3, 5, 40, 32), "40x32 .* multiples of 16"),
        ((1, 3, 6, 32, 32), "video has 6 frames"),
    ],
)
def test_bad_video_shapes_are_input_errors(models, shape, message):
    _, ours = models
    with pytest.raises(InputError, match=message):
        ours.encode(torch.zeros(shape))


@pytest.mark.parametrize(
    "override, message",
    [
        (dict(patch_size=None), "is_residual=True is the Wan2.2 VAE, which also patchifies"),
        (dict(in_channels=3), "in_channels counts channels after the 2x2 patchify: 3 is not a multiple of 4"),
        (dict(out_channels=3), "out_channels counts channels after the 2x2 patchify"),
        (dict(scale_factor_spatial=8), "scale_factor_spatial=8 but the architecture gives 16"),
        (dict(dim_mult=[1, 3, 4, 4]), "encoder stage 1 maps 8 channels to 24"),
        (dict(latents_mean=[0.0] * 16), "latents_mean has 16 values; z_dim is 48"),
    ],
)
def test_unsupported_configs_are_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        CausalVideoVAE(**{**TINY22, **override})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_paths_agree_with_fp32_cpu(models):
    ref, ours = models
    gpu = CausalVideoVAE(**TINY22).eval()
    gpu.load_state_dict(ours.state_dict())
    gpu = gpu.to("cuda", torch.bfloat16)
    x = clip(9)
    with torch.no_grad():
        expected = ref.encode(x).latent_dist.mean
        par = gpu.encode(x.cuda(), streaming=False).mean.float().cpu()
        stream = gpu.encode(x.cuda(), streaming=True).mean.float().cpu()
        decoded = gpu.decode(par.cuda(), streaming=True, tiled=False).float().cpu()
        decoded_ref = ref.decode(par).sample
    scale = expected.abs().max()
    assert (par - expected).abs().max() < 3e-2 * scale and (stream - expected).abs().max() < 3e-2 * scale
    assert (decoded - decoded_ref).abs().max() < 3e-2 * decoded_ref.abs().max()
