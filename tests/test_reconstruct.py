"""`videogen reconstruct`: the streaming encode-decode chain, its metrics and its CLI (tiny random VAE)."""

import math

import numpy as np
import pytest
import torch

from videogen.cli import main
from videogen.io import probe_video, read_video, write_video
from videogen.modelfolder import load_vae
from videogen.models.vae import CausalVideoVAE
from videogen.frames import to_uint8
from videogen.metrics import psnr_from_mse
from videogen.reconstruct import frame_ssim, reconstruct, round_trip

TINY = dict(base_dim=8, z_dim=4, dim_mult=[1, 2, 2, 2], num_res_blocks=1, latents_mean=[0.0] * 4, latents_std=[1.0] * 4)


@pytest.fixture(scope="module")
def vae_folder(tmp_path_factory):
    """A model folder holding a tiny random VAE in vae/, as a pipeline folder would."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("model")
    CausalVideoVAE(**TINY).save_pretrained(folder / "vae")
    return folder


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory):
    """11 frames of 40 (H) x 36 (W): 2 frames too many for 1 + 4k, width not a multiple of 8."""
    t, y, x = np.meshgrid(np.arange(11), np.arange(40), np.arange(36), indexing="ij")
    r = 128 + 100 * np.sin(x / 6 + t / 3)
    g = 128 + 100 * np.cos(y / 5 - t / 4)
    b = 128 + 60 * np.sin((x + y) / 8)
    frames = np.stack([r, g, b], axis=-1).round().clip(0, 255).astype(np.uint8)  # (11, 40, 36, 3)
    return write_video(tmp_path_factory.mktemp("in") / "clip.mp4", frames, fps=8, crf=0)


def test_reconstruct_streams_and_measures_what_a_parallel_pass_gives(vae_folder, clip_path, tmp_path):
    result = reconstruct(clip_path, tmp_path / "out.mp4", model=vae_folder, progress=False)
    assert (result.frames, result.height, result.width) == (9, 40, 32)
    assert len(result.notices) == 2 and "first 9 of 11 frames" in result.notices[0]
    assert "center-cropped from 36x40 to 32x40" in result.notices[1]
    info = probe_video(result.output)
    assert (info.frames, info.width, info.height) == (9, 32, 40)

    # the same numbers from a plain parallel encode + decode of the same frames
    frames = read_video(clip_path).frames[:9, :, 2:34]  # (9, 40, 32, 3)
    vae = load_vae(vae_folder).eval()
    x = torch.from_numpy(frames).float().permute(3, 0, 1, 2) / 127.5 - 1  # (3, 9, 40, 32)
    out = to_uint8(round_trip(vae, x))
    mse = float(((frames.astype(np.float64) - out) ** 2).mean())
    assert result.psnr == pytest.approx(psnr_from_mse(mse), abs=0.05)
    assert result.ssim == pytest.approx(float(frame_ssim(frames, out).mean()), abs=1e-3)
    assert 0 < result.psnr < 60 and -1 < result.ssim < 1


def test_ssim_matches_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, size=(2, 24, 20, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-40, 40, size=a.shape), 0, 255).astype(np.uint8)
    ours = frame_ssim(a, b)
    for i in range(2):
        ref = metrics.structural_similarity(
            a[i], b[i], channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
        )
        assert float(ours[i]) == pytest.approx(ref, abs=1e-6)
    assert torch.allclose(frame_ssim(a, a), torch.ones(2, dtype=torch.float64))


def test_psnr():
    assert psnr_from_mse(0.0) == math.inf
    assert psnr_from_mse(255.0**2) == pytest.approx(0.0)
    assert psnr_from_mse(1.0) == pytest.approx(48.1308, abs=1e-4)


def test_cli_reconstruct_prints_metrics_path_and_time(vae_folder, clip_path, tmp_path, capsys):
    out = tmp_path / "r.mp4"
    assert main(["reconstruct", str(clip_path), "-o", str(out), "--model", str(vae_folder / "vae")]) == 0
    printed = capsys.readouterr().out
    assert "PSNR " in printed and " dB, SSIM " in printed
    assert f"wrote {out} (9 frames, 32x40, 8 fps) in " in printed
    assert out.is_file()


def test_cli_reconstruct_refuses_to_overwrite(vae_folder, clip_path, tmp_path, capsys):
    out = tmp_path / "exists.mp4"
    out.write_bytes(b"keep me")
    assert main(["reconstruct", str(clip_path), "-o", str(out), "--model", str(vae_folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "exists" in err
    assert out.read_bytes() == b"keep me" and list(tmp_path.iterdir()) == [out]


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.mp4", "--model", "nowhere"], "missing.mp4: no such file"),
        (["CLIP", "--model", "nowhere"], "nowhere: not a VAE folder"),
        (["CLIP"], "no bundled demo model"),
    ],
)
def test_cli_reconstruct_bad_input_is_one_line(clip_path, tmp_path, capsys, args, message, monkeypatch):
    import videogen.bundled

    monkeypatch.setattr(videogen.bundled, "_package_folder", lambda: tmp_path / "pkg" / "videogen")  # no demo model
    args = [str(clip_path) if a == "CLIP" else a for a in args]
    code = main(["reconstruct", *args, "-o", str(tmp_path / "o.mp4")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "o.mp4").exists() and list(tmp_path.iterdir()) == []
