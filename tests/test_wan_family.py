"""Every Wan layout videogen loads, against diffusers' own pipeline on the same tiny random folder.

Each folder is saved by diffusers (`videogen.testing.build_tiny_wan_folder`); our pipeline loads it and renders
with the same initial noise; the frames must equal diffusers' up to uint8 rounding (mean |diff| <= 0.5 / 255).
The CLI runs on each folder too, and each refuses what it cannot do in one line.
"""

import json

import numpy as np
import pytest
import torch

from videogen import VideoPipeline
from videogen.cli import main

PROMPT = "a red circle moving left on a black background"
SMALL = dict(num_frames=9, height=32, width=32)
STEPS = dict(num_steps=4, guidance_scale=4.0)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """layout -> a tiny random folder of that layout (built once per module, on demand)."""
    from videogen.testing import build_tiny_wan_folder

    built = {}

    def folder(layout):
        if layout not in built:
            built[layout] = build_tiny_wan_folder(tmp_path_factory.mktemp(layout) / "model", layout=layout)
        return built[layout]

    return folder


def _reference(folder):
    import diffusers

    class_name = json.loads((folder / "model_index.json").read_text())["_class_name"]
    return getattr(diffusers, class_name).from_pretrained(folder)


def _noise(pipe, seed=0, **size):
    shape = pipe.latent_shape(size.get("num_frames", 9), size.get("height", 32), size.get("width", 32))
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _theirs(reference, **kwargs) -> np.ndarray:
    """diffusers' frames (T, H, W, 3) in [0, 1] for the same prompt, size and steps."""
    return reference(prompt=PROMPT, negative_prompt="", num_inference_steps=STEPS["num_steps"], output_type="np",
                     **SMALL, **kwargs).frames[0]


def _assert_same_frames(ours: np.ndarray, theirs: np.ndarray) -> None:
    assert ours.shape == theirs.shape and ours.dtype == np.uint8
    diff = np.abs(ours / 255.0 - theirs)
    assert diff.mean() <= 0.5 / 255 and diff.max() <= 1 / 255 + 1e-6  # uint8 rounding only
    assert theirs.std() > 0.01  # a real picture, not a constant


# ------------------------------------------------------------------------------- Wan2.2 A14B (T2V)


def test_two_experts_match_diffusers_with_a_guidance_scale_each(folders):
    folder = folders("t2v-a14b")
    pipe, reference = VideoPipeline.from_pretrained(folder, device="cpu"), _reference(folder)
    assert pipe.layout.experts == 2 and pipe.layout.boundary_ratio == 0.875
    noise = _noise(pipe)
    theirs = _theirs(reference, guidance_scale=4.0, guidance_scale_2=2.0, latents=noise)
    ours = pipe.generate(PROMPT, **SMALL, **STEPS, guidance_scale_2=2.0, latents=noise, progress=False)
    _assert_same_frames(ours.frames, theirs)
    # the second expert matters: without it (the high-noise expert throughout) the clip differs
    one = VideoPipeline(pipe.text_encoder, pipe.vae, pipe.transformer, pipe.scheduler_config, device="cpu")
    alone = one.generate(PROMPT, **SMALL, **STEPS, latents=noise, progress=False)
    assert np.abs(alone.frames.astype(int) - ours.frames.astype(int)).mean() > 1


def test_each_expert_runs_on_its_side_of_the_boundary(folders, monkeypatch):
    pipe = VideoPipeline.from_pretrained(folders("t2v-a14b"), device="cpu", offload=True)
    calls = []
    for name, expert in (("high", pipe.transformer), ("low", pipe.transformer_2)):
        original = expert.forward

        def forward(x, t, *args, _name=name, _original=original, **kw):
            calls.append((_name, float(t.max()), {m.device.type for m in pipe.experts if m is not None}))
            return _original(x, t, *args, **kw)

        monkeypatch.setattr(expert, "forward", forward)
    pipe.generate(PROMPT, **SMALL, num_steps=6, guidance_scale=1.0, progress=False)
    boundary = 0.875 * 1000
    assert [name for name, _, _ in calls] == ["high" if t >= boundary else "low" for _, t, _ in calls]
    assert {name for name, _, _ in calls} == {"high", "low"}


def test_offload_sends_one_expert_back_before_the_other_runs(folders, monkeypatch):
    """With offload, the high-noise expert goes back to the CPU before the low-noise one is placed and runs
    (on this CPU-only machine the device is the CPU too, so the order of the calls is what is checked)."""
    pipe = VideoPipeline.from_pretrained(folders("t2v-a14b"), device="cpu", offload=True)
    events = []
    for name, expert in (("high", pipe.transformer), ("low", pipe.transformer_2)):
        to, forward = expert.to, expert.forward
        monkeypatch.setattr(expert, "to", lambda *a, _n=name, _o=to, **k: events.append((_n, "to", str(a[0])))
                            or _o(*a, **k))
        monkeypatch.setattr(expert, "forward", lambda *a, _n=name, _o=forward, **k: events.append((_n, "run", ""))
                            or _o(*a, **k))
    pipe.generate(PROMPT, **SMALL, num_steps=6, guidance_scale=1.0, progress=False)
    first_low = events.index(("low", "run", ""))
    last_high = max(i for i, e in enumerate(events) if e == ("high", "run", ""))
    assert last_high < first_low and ("high", "to", "cpu") in events[last_high:first_low]
    assert events[-2:] in ([("high", "to", "cpu"), ("low", "to", "cpu")], [("low", "to", "cpu"), ("high", "to", "cpu")])


def test_guidance_scale_2_is_refused_by_a_one_expert_model(folders, tiny_wan_folder, tmp_path):
    from videogen.errors import InputError

    pipe = VideoPipeline.from_pretrained(tiny_wan_folder, device="cpu")
    with pytest.raises(InputError, match="low-noise expert's guidance: this model has one expert"):
        pipe.generate(PROMPT, **SMALL, guidance_scale_2=3.0, progress=False)
    out = tmp_path / "x.mp4"
    assert main(["generate", PROMPT, "--model", str(tiny_wan_folder), "--guidance-2", "3", "-o", str(out)]) == 2
    assert not out.exists()


def test_cli_generates_with_two_experts(folders, tmp_path, capsys):
    out = tmp_path / "clip.mp4"
    code = main(["generate", PROMPT, "--model", str(folders("t2v-a14b")), "--frames", "9", "--height", "32",
                 "--width", "32", "--steps", "3", "--guidance-2", "2", "--seed", "1", "-o", str(out)])
    assert code == 0 and out.is_file() and f"wrote {out}" in capsys.readouterr().out


def test_a_saved_two_expert_pipeline_loads_in_diffusers(folders, tmp_path):
    pipe = VideoPipeline.from_pretrained(folders("t2v-a14b"), device="cpu")
    saved = pipe.save_pretrained(tmp_path / "saved")
    index = json.loads((saved / "model_index.json").read_text())
    assert index["boundary_ratio"] == 0.875 and index["transformer_2"] == ["diffusers", "WanTransformer3DModel"]
    again = _reference(saved)
    noise = _noise(pipe)
    ours = pipe.generate(PROMPT, **SMALL, **STEPS, latents=noise, progress=False)
    _assert_same_frames(ours.frames, _theirs(again, guidance_scale=4.0, latents=noise))


# ------------------------------------------------------------- image-to-video, interpolation, TI2V


def _image(seed=0, size=32):
    """A smooth random picture (uint8 (1, H, W, 3)): what a VAE codes without surprises."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (4, 4, 3)).astype(np.float32)
    return np.kron(coarse, np.ones((size // 4, size // 4, 1))).astype(np.uint8)[None]


def _pil(frame):
    from PIL import Image

    return Image.fromarray(frame[0])


@pytest.mark.parametrize("layout", ["ti2v", "i2v-a14b"])
def test_image_to_video_matches_diffusers(folders, layout):
    """`extend` on an image is the model's own image-to-video: diffusers' WanImageToVideoPipeline(image=)."""
    from diffusers import WanImageToVideoPipeline

    folder = folders(layout)
    pipe = VideoPipeline.from_pretrained(folder, device="cpu")
    reference = WanImageToVideoPipeline.from_pretrained(folder)
    image, noise = _image(), _noise(pipe)
    theirs = _theirs(reference, image=_pil(image), guidance_scale=4.0, latents=noise)
    ours = pipe.extend(image, PROMPT, SMALL["num_frames"] - 1, **STEPS, latents=noise, progress=False)
    assert np.array_equal(ours.frames[0], image[0])  # the given image, as it was
    _assert_same_frames(ours.frames[1:], theirs[1:])


@pytest.mark.parametrize("layout", ["i2v-a14b"])
def test_interpolation_matches_diffusers_first_and_last_frame(folders, layout):
    from diffusers import WanImageToVideoPipeline

    folder = folders(layout)
    pipe = VideoPipeline.from_pretrained(folder, device="cpu")
    reference = WanImageToVideoPipeline.from_pretrained(folder)
    a, b, noise = _image(1), _image(2), _noise(pipe)
    theirs = _theirs(reference, image=_pil(a), last_image=_pil(b), guidance_scale=4.0, latents=noise)
    ours = pipe.interpolate(a, b, PROMPT, SMALL["num_frames"], **STEPS, latents=noise, progress=False)
    assert np.array_equal(ours.frames[0], a[0]) and np.array_equal(ours.frames[-1], b[0])
    _assert_same_frames(ours.frames[1:-1], theirs[1:-1])


def test_ti2v_text_to_video_matches_diffusers(folders):
    folder = folders("ti2v")
    pipe, reference = VideoPipeline.from_pretrained(folder, device="cpu"), _reference(folder)
    assert pipe.layout.expand_timesteps and pipe.vae.latent_channels == 48 and pipe.geometry.spatial == 16
    noise = _noise(pipe)
    assert noise.shape == (1, 48, 3, 2, 2)
    ours = pipe.generate(PROMPT, **SMALL, **STEPS, latents=noise, progress=False)
    _assert_same_frames(ours.frames, _theirs(reference, guidance_scale=4.0, latents=noise))


@pytest.mark.parametrize("layout", ["i2v-a14b"])
def test_an_image_to_video_model_refuses_text_alone_in_one_line(folders, layout, tmp_path, capsys):
    out = tmp_path / "x.mp4"
    assert main(["generate", PROMPT, "--model", str(folders(layout)), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "draws from a first frame" in err[0] and not out.exists()


@pytest.mark.parametrize("layout", ["i2v", "flf2v"])
def test_clip_conditioned_folders_are_refused_in_one_line_before_loading(folders, layout, tmp_path, capsys):
    """Wan2.1 I2V/FLF2V need CLIP image states in the transformer, which videogen does not build yet: the
    folder is refused whole, never run without its image encoder."""
    from PIL import Image

    from videogen.errors import ModelError

    with pytest.raises(ModelError, match="CLIP image states through added key/value projections"):
        VideoPipeline.from_pretrained(folders(layout), device="cpu")
    capsys.readouterr()  # what building the folder printed
    a = tmp_path / "a.png"
    Image.fromarray(_image(1)[0]).save(a)
    out = tmp_path / "x.mp4"
    assert main(["extend", str(a), "-p", PROMPT, "--model", str(folders(layout)), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not supported yet" in err[0] and not out.exists()


@pytest.mark.parametrize("layout", ["ti2v", "i2v-a14b"])
def test_cli_extend_and_interpolate_on_each_image_layout(folders, layout, tmp_path, capsys):
    from PIL import Image

    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.fromarray(_image(1)[0]).save(a), Image.fromarray(_image(2)[0]).save(b)
    model = ["--model", str(folders(layout)), "--height", "32", "--width", "32", "--steps", "2", "--seed", "3"]
    moving = tmp_path / "moving.mp4"
    assert main(["extend", str(a), "-p", PROMPT, "--frames", "8", "--window", "9", *model, "-o", str(moving)]) == 0
    longer = tmp_path / "longer.mp4"
    assert main(["extend", str(moving), "-p", PROMPT, "--frames", "12", "--window", "9", *model,
                 "-o", str(longer)]) == 0
    from videogen.io import probe_video

    assert probe_video(moving).frames == 9 and probe_video(longer).frames == 21
    between = tmp_path / "between.mp4"
    assert main(["interpolate", str(a), str(b), "-p", PROMPT, "--frames", "9", *model, "-o", str(between)]) == 0
    assert probe_video(between).frames == 9
    assert "wrote" in capsys.readouterr().out


# ------------------------------------------------------------------------------------ honest labels


def test_a_transformer_diffusers_cannot_compute_is_not_labelled_as_diffusers(tmp_path):
    """The bundled DiT has frame positions, which diffusers' WanTransformer3DModel would silently drop: the
    folder names our class, and diffusers refuses it in words instead of loading a different model."""
    import shutil

    from diffusers import WanPipeline

    from videogen.bundled import default_model_path

    folder = default_model_path()
    index = json.loads((folder / "model_index.json").read_text())
    config = json.loads((folder / "transformer" / "config.json").read_text())
    assert config["frame_position_dim"] > 0
    assert index["transformer"] == ["videogen", "VideoDiT"] and config["_class_name"] == "VideoDiT"
    assert index["vae"] == ["diffusers", "AutoencoderKLWan"]
    with pytest.raises(ValueError, match="videogen"):  # in a fresh process: "videogen is not one of the
        WanPipeline.from_pretrained(folder)  # libraries Diffusers can load components from"
    pipe = VideoPipeline.from_pretrained(folder, device="cpu")  # ours loads it
    saved = pipe.save_pretrained(tmp_path / "saved")  # and writes it labelled the same way
    assert json.loads((saved / "model_index.json").read_text())["transformer"] == ["videogen", "VideoDiT"]
    # without frame positions, a fine-tuned copy is diffusers' class again (a folder written over another's)
    from videogen.modelfolder import label_diffusers_classes

    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    config.pop("frame_position_dim")
    (copy / "transformer" / "config.json").write_text(json.dumps(config))
    label_diffusers_classes(copy)
    assert json.loads((copy / "model_index.json").read_text())["transformer"] == ["diffusers", "WanTransformer3DModel"]


# ---------------------------------------------------------------------------- memory, before loading


@pytest.mark.parametrize("layout, size, frames", [("TI2V_5B", ("1280", "704"), "121"),
                                                  ("T2V_A14B", ("1280", "720"), "81")])
def test_dry_run_prints_the_memory_of_a_real_size_folder_from_its_configs(tmp_path, capsys, layout, size, frames):
    """A folder of config.json files alone (no weights at all): the estimate is printed, nothing loads."""
    import test_footprint

    folder = test_footprint._write_folder(tmp_path / "model", **getattr(test_footprint, layout))
    args = ["generate", PROMPT, "--model", str(folder), "--dtype", "bfloat16", "--frames", frames,
            "--width", size[0], "--height", size[1], "--dry-run"]
    assert main(args) == 0
    whole = capsys.readouterr().out
    assert f"{frames} frames at {size[0]}x{size[1]}, bfloat16" in whole and "<- peak" in whole
    assert main([*args, "--offload"]) == 0
    offloaded = capsys.readouterr().out
    peak = [float(text.split("about ")[1].split(" GiB")[0]) for text in (whole, offloaded)]
    assert peak[1] < peak[0]  # offloaded, one network (one expert) on the device at a time
    if layout == "T2V_A14B":
        assert "transformer_2" in whole and peak[0] > 2 * 26  # both 14B experts resident in bf16
