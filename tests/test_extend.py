"""Extend, interpolate and image-to-video on the tiny random Wan2.1 folder: the known-latent mechanism.

The tiny model is random, so nothing here judges how the new frames look; the tests pin the mechanism:
which latent frames are known, that they are held exactly, that the input's frames are copied untouched,
frame counts, window-by-window conditioning, constant memory, determinism and one-line CLI errors.
"""

import gc

import numpy as np
import pytest
import torch

from videogen.cli import main
from videogen.diffusion.flow import interpolate as flow_interpolate
from videogen.diffusion.sampling import make_scheduler, sample
from videogen.io import Video, read_video, write_video
from videogen.frames import fit_frames
from videogen.tasks import bridge_clip

PROMPT = "a red circle moving left on a black background"
FAST = dict(window=9, height=32, width=32, num_steps=2, progress=False)


@pytest.fixture(scope="module")
def pipe(tiny_wan_folder):
    from videogen import VideoPipeline

    return VideoPipeline.from_pretrained(tiny_wan_folder, device="cpu")


@pytest.fixture
def recorded(pipe, monkeypatch):
    """Every `denoise` call's known mask, clean latents, method and result."""
    calls = []
    original = type(pipe).denoise

    def denoise(self, settings, noise, text, **kw):
        result = original(self, settings, noise, text, **kw)
        condition = kw["condition"]
        calls.append(dict(known=condition.known.clone(), clean=condition.clean.clone(), method=kw["method"],
                          result=result))
        return result

    monkeypatch.setattr(type(pipe), "denoise", denoise)
    return calls


def _frames(n, size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------------------- sampler


def _recording_velocity(log):
    def velocity(x, t):
        log.append((x.clone(), t.clone()))
        return 0.5 * x + 0.1  # a fixed field: the sampler's bookkeeping is what is tested
    return velocity


@pytest.mark.parametrize("hold", ["timestep", "replace"])
def test_sampler_holds_known_frames(hold):
    noise = torch.randn(1, 4, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    clean = torch.randn(1, 4, 3, 2, 2, generator=torch.Generator().manual_seed(1))
    known = torch.tensor([True, False, True])
    log = []
    scheduler = make_scheduler({"flow_shift": 3.0}, sampler="unipc")
    out = sample(_recording_velocity(log), noise, scheduler, 4, known=known, clean=clean, hold=hold)
    assert torch.equal(out[:, :, known], clean[:, :, known])
    assert not torch.allclose(out[:, :, 1], clean[:, :, 1])
    for i, (x, t) in enumerate(log):
        if hold == "timestep":  # fed clean, at timestep 0, the others at the step's timestep
            assert t.shape == (1, 3) and t[0, 0] == 0 and t[0, 2] == 0 and t[0, 1] == scheduler.timesteps[i]
            assert torch.equal(x[:, :, known], clean[:, :, known])
        else:  # fed at the step's level, noised from the run's own initial noise (Ho et al. 2022, 3.1)
            assert t.shape == (1,) and t[0] == scheduler.timesteps[i]
            expected = flow_interpolate(clean, noise, scheduler.sigmas[i])
            torch.testing.assert_close(x[:, :, known], expected[:, :, known])


def test_method_follows_the_folder(pipe, monkeypatch):
    assert pipe.frame_method() == "replace"  # a Wan2.1 folder declares no frame conditioning
    monkeypatch.setattr(pipe.defaults, "frame_conditioning", True)
    assert pipe.frame_method() == "timestep" and pipe.frame_method("replace") == "replace"
    from videogen.errors import InputError

    with pytest.raises(InputError, match="unknown frame-conditioning method 'mask'"):
        pipe.frame_method("mask")


# ------------------------------------------------------------------------------- image-first sampling


def _record_denoising(pipe, monkeypatch) -> list[dict]:
    """A list that gets each sampling pass (`Pipeline.denoise`) as it runs: its noise, the ``known`` mask
    and ``clean`` latents it was given, and its result."""
    calls, original = [], type(pipe).denoise

    def denoise(self, settings, noise, text, **kw):
        result = original(self, settings, noise, text, **kw)
        calls.append(dict(noise=noise, known=kw.get("known"), clean=kw.get("clean"), result=result))
        return result

    monkeypatch.setattr(type(pipe), "denoise", denoise)
    return calls


def test_image_first_samples_the_first_frame_then_the_clip_from_it(pipe, monkeypatch):
    settings = dict(num_frames=9, height=32, width=32, num_steps=2, seed=3, progress=False)
    noise = torch.randn(1, 16, 3, 4, 4, generator=torch.Generator().manual_seed(3))  # the seed's noise
    image = pipe.generate(PROMPT, **{**settings, "num_frames": 1}, latents=noise[:, :, :1])
    calls = _record_denoising(pipe, monkeypatch)
    monkeypatch.setattr(pipe.defaults, "frame_conditioning", True)
    clip = pipe.generate(PROMPT, image_first=True, **settings)
    first, second = calls
    assert first["noise"].shape == (1, 16, 1, 4, 4) and first["known"] is None  # text-to-image
    assert second["noise"].shape == (1, 16, 3, 4, 4) and second["known"].tolist() == [True, False, False]
    assert torch.equal(second["clean"][:, :, :1], first["result"])
    assert torch.equal(second["result"][:, :, :1], first["result"])  # held exactly
    # the causal VAE decodes the first frame from the first latent frame alone: the clip opens on the image
    assert clip.num_frames == 9 and np.array_equal(clip.frames[0], image.frames[0])
    # the folder declares it (videogen.json); the call overrides; one frame needs one pass
    calls.clear()
    monkeypatch.setattr(pipe.defaults, "image_first", True)
    again = pipe.generate(PROMPT, **settings)
    assert len(calls) == 2 and np.array_equal(again.frames, clip.frames)
    calls.clear()
    joint = pipe.generate(PROMPT, image_first=False, **settings)
    assert len(calls) == 1 and not np.array_equal(joint.frames, clip.frames)
    calls.clear()
    pipe.generate(PROMPT, **{**settings, "num_frames": 1})
    assert len(calls) == 1
    from videogen.errors import InputError

    with pytest.raises(InputError, match="image_first must be true or false"):
        pipe.generate(PROMPT, image_first="yes", **settings)


def test_image_first_can_draw_its_image_with_the_opening_frames(pipe, monkeypatch):
    settings = dict(num_frames=9, height=32, width=32, num_steps=2, seed=3, image_first=True, progress=False)
    monkeypatch.setattr(pipe.defaults, "frame_conditioning", True)
    calls = _record_denoising(pipe, monkeypatch)
    image = pipe.generate(PROMPT, **settings)
    drafted = pipe.generate(PROMPT, image_first_frames=5, **settings)
    _, _, first, second = calls
    # the first pass samples the first 5 frames (2 latent frames) from the seed's noise, jointly ...
    assert first["noise"].shape == (1, 16, 2, 4, 4) and first["known"] is None
    assert torch.equal(first["noise"], second["noise"][:, :, :2])
    # ... and only its first latent frame is held for the clip
    assert second["known"].tolist() == [True, False, False]
    assert torch.equal(second["clean"][:, :, :1], first["result"][:, :, :1])
    assert torch.equal(second["result"][:, :, :1], first["result"][:, :, :1])
    assert not np.array_equal(drafted.frames[0], image.frames[0])  # drawn with its motion, not alone
    # the folder can declare it; more frames than the clip has means the whole clip
    calls.clear()
    monkeypatch.setattr(pipe.defaults, "image_first_frames", 5)
    assert np.array_equal(pipe.generate(PROMPT, **settings).frames, drafted.frames)
    pipe.generate(PROMPT, image_first_frames=17, **settings)
    assert calls[-2]["noise"].shape[2] == 3
    from videogen.errors import InputError

    with pytest.raises(InputError, match="image-first frames 4 is not 4k"):
        pipe.generate(PROMPT, image_first_frames=4, **settings)


def _record_passes(pipe, monkeypatch, field: str) -> list:
    """A list that gets ``field`` of each sampling pass's `Settings` (`Pipeline.denoise`), as it runs."""
    seen, original = [], type(pipe).denoise

    def denoise(self, settings, noise, text, **kw):
        seen.append(getattr(settings, field))
        return original(self, settings, noise, text, **kw)

    monkeypatch.setattr(type(pipe), "denoise", denoise)
    return seen


def test_image_first_guides_its_first_pass_with_its_own_scale(pipe, monkeypatch):
    settings = dict(num_frames=9, height=32, width=32, num_steps=2, seed=3, image_first=True, progress=False)
    monkeypatch.setattr(pipe.defaults, "frame_conditioning", True)
    scales, texts = _record_passes(pipe, monkeypatch, "guidance_scale"), []
    original_encode = type(pipe).encode_prompts

    def encode(self, prompt, settings):
        text = original_encode(self, prompt, settings)
        texts.append(text.uncond is not None)
        return text

    monkeypatch.setattr(type(pipe), "encode_prompts", encode)
    same = pipe.generate(PROMPT, guidance_scale=4.0, **settings)
    split = pipe.generate(PROMPT, guidance_scale=4.0, image_guidance_scale=2.0, **settings)
    assert scales == [4.0, 4.0, 2.0, 4.0]  # (first frame, clip) per call: the first pass alone takes its own
    assert not np.array_equal(same.frames, split.frames)
    # a guided first pass needs the negative prompt even when the clip's pass is unguided
    scales.clear()
    pipe.generate(PROMPT, guidance_scale=1.0, image_guidance_scale=3.0, **settings)
    pipe.generate(PROMPT, guidance_scale=1.0, **settings)
    assert scales == [3.0, 1.0, 1.0, 1.0] and texts[-2:] == [True, False]
    # the folder can declare it (videogen.json); without image-first it changes nothing
    monkeypatch.setattr(pipe.defaults, "image_guidance_scale", 2.0)
    assert np.array_equal(pipe.generate(PROMPT, guidance_scale=4.0, **settings).frames, split.frames)
    scales.clear()
    pipe.generate(PROMPT, guidance_scale=4.0, **{**settings, "image_first": False})
    assert scales == [4.0]
    from videogen.errors import InputError

    with pytest.raises(InputError, match="image guidance scale must be a finite number"):
        pipe.generate(PROMPT, image_guidance_scale=float("nan"), **settings)


def test_guidance_interval_reaches_each_pass_and_changes_the_clip(pipe, tiny_wan_folder, tmp_path, monkeypatch):
    settings = dict(num_frames=9, height=32, width=32, num_steps=3, seed=3, guidance_scale=4.0, progress=False)
    monkeypatch.setattr(pipe.defaults, "frame_conditioning", True)
    intervals, batches = _record_passes(pipe, monkeypatch, "guidance_interval"), []
    original_model = type(pipe)._velocity_model

    def velocity_model(self, dit, shape, condition):
        model = original_model(self, dit, shape, condition)
        return lambda x, t, text: batches.append(x.shape[0]) or model(x, t, text)

    monkeypatch.setattr(type(pipe), "_velocity_model", velocity_model)
    full = pipe.generate(PROMPT, **settings)
    assert intervals == [(0.0, 1.0)] and batches == [2, 2, 2]
    intervals.clear(), batches.clear()
    late = pipe.generate(PROMPT, guidance_interval=(0.8, 1.0), **settings)
    assert intervals == [(0.8, 1.0)] and batches == [2, 2, 1]  # levels 1.0, 0.86 | 0.60 (shift 3)
    assert not np.array_equal(full.frames, late.frames)
    # image-first: the first pass takes image_guidance_interval, else the clip's
    intervals.clear()
    pipe.generate(PROMPT, image_first=True, guidance_interval=(0.8, 1.0), **settings)
    pipe.generate(PROMPT, image_first=True, guidance_interval=(0.8, 1.0), image_guidance_interval=(0.2, 0.9),
                  **settings)
    assert intervals == [(0.8, 1.0), (0.8, 1.0), (0.2, 0.9), (0.8, 1.0)]
    # the folder can declare them (videogen.json)
    monkeypatch.setattr(pipe.defaults, "guidance_interval", [0.8, 1.0])
    intervals.clear()
    assert np.array_equal(pipe.generate(PROMPT, **settings).frames, late.frames)
    assert intervals == [(0.8, 1.0)]
    from videogen.errors import InputError

    with pytest.raises(InputError, match="guidance interval must have 0 <= LOW <= HIGH <= 1"):
        pipe.generate(PROMPT, guidance_interval=(0.9, 0.2), **settings)
    # the CLI's --guidance-interval; a bad one is a one-line error, exit 2, no file
    monkeypatch.setattr(pipe.defaults, "guidance_interval", None)
    base = ["generate", PROMPT, "--model", str(tiny_wan_folder), "--frames", "5", "--height", "32", "--width", "32",
            "--steps", "2", "--seed", "0", "--guidance", "4"]
    intervals.clear()
    assert main([*base, "--guidance-interval", "0.8", "1", "-o", str(tmp_path / "a.mp4")]) == 0
    assert intervals == [(0.8, 1.0)] and (tmp_path / "a.mp4").is_file()
    assert main([*base, "--guidance-interval", "1", "0.5", "-o", str(tmp_path / "b.mp4")]) == 2
    assert not (tmp_path / "b.mp4").exists()


def test_generate_cli_image_first_flag(pipe, tiny_wan_folder, tmp_path, monkeypatch):
    seen = []
    original = type(pipe).generate

    def generate(self, prompt, **kw):
        # an unset setting is absent: the folder's default applies
        seen.append((kw.get("image_first"), kw.get("image_guidance_scale"), kw.get("image_first_frames")))
        return original(self, prompt, **kw)

    monkeypatch.setattr(type(pipe), "generate", generate)
    base = ["generate", PROMPT, "--model", str(tiny_wan_folder), "--frames", "5", "--height", "32", "--width", "32",
            "--steps", "1", "--seed", "0"]
    for flag, expected in (([], (None, None, None)), (["--image-first"], (True, None, None)),
                           (["--no-image-first"], (False, None, None)),
                           (["--image-first", "--image-guidance", "2.5"], (True, 2.5, None)),
                           (["--image-first", "--image-first-frames", "5"], (True, None, 5))):
        out = tmp_path / f"{len(seen)}.mp4"
        assert main([*base, *flag, "-o", str(out)]) == 0
        assert seen[-1] == expected and out.is_file()
    # a frame count the VAE cannot code is refused before the model loads: one line, exit 2, no file
    calls = len(seen)
    assert main([*base, "--image-first", "--image-first-frames", "3", "-o", str(tmp_path / "bad.mp4")]) == 2
    assert len(seen) == calls and not (tmp_path / "bad.mp4").exists()


# -------------------------------------------------------------------------------------------- extend


@pytest.mark.parametrize("method", ["timestep", "replace"])
def test_extend_keeps_input_and_holds_context(pipe, recorded, method):
    frames = _frames(7)
    out = pipe.extend(Video(frames, 8.0), PROMPT, 10, context=5, method=method, seed=1, **FAST)
    assert out.num_frames == 17 and out.fps == 8.0
    assert np.array_equal(out.frames[:7], frames)  # copied, not re-rendered
    # windows of 9 with 5 context frames give 4 new frames each: 3 windows for 10 frames (the last trimmed)
    assert len(recorded) == 3
    for w, call in enumerate(recorded):
        assert call["method"] == method
        assert call["known"].tolist() == [True, True, False]  # 5 context frames = 2 latent frames
        assert torch.equal(call["result"][:, :, :2], call["clean"][:, :, :2])  # held exactly
        # each window is conditioned on the last 5 frames written before it
        end = 7 + 4 * w
        expected = pipe.encode_frames(out.frames[end - 5:end])
        torch.testing.assert_close(call["clean"][:, :, :2], expected, rtol=0, atol=1e-5)


def test_image_to_video_and_short_input(pipe, recorded):
    image = _frames(1)[0]
    out = pipe.extend(image, PROMPT, seed=2, **FAST)
    assert out.num_frames == 9 and np.array_equal(out.frames[0], image)  # 1 + a window's 8 new frames
    assert recorded[0]["known"].tolist() == [True, False, False]
    assert out.fps == pipe.defaults.fps  # an image has no rate: the folder's
    # 3 frames give a context of 1 (8 new frames), then the full 5 (4 new frames)
    out = pipe.extend(_frames(3), PROMPT, 12, context=5, seed=2, **FAST)
    assert out.num_frames == 15
    assert [c["known"].tolist() for c in recorded[1:]] == [[True, False, False], [True, True, False]]


def test_input_is_fitted_and_reported(pipe):
    notes = []
    wide = _frames(5, size=64)[:, :32]  # (5, 32, 64, 3)
    out = pipe.extend(wide, PROMPT, 4, context=5, seed=0, notify=notes.append, **FAST)
    assert out.frames.shape == (9, 32, 32, 3)
    assert np.array_equal(out.frames[:5], wide[:, :, 16:48])  # centre crop, no resize needed
    assert notes == ["this Wan2.1 T2V model has no frame conditioning of its own: the given frames are held by the "
                     "training-free replacement method",  # said once, in one line
                     "input video: 64x32 frames centre-cropped to 32x32 and resized to 32x32 to fit the model"]
    notes.clear()
    pipe.extend(wide, PROMPT, 4, context=5, seed=0, notify=notes.append, method="replace", **FAST)
    assert len(notes) == 1  # asked for by name: nothing to explain
    same = _frames(2)
    assert fit_frames(same, 32, 32) is same


def test_extend_is_deterministic_by_seed(pipe, recorded):
    frames = _frames(5)
    a, b, c = (pipe.extend(frames, PROMPT, 4, seed=s, **FAST).frames for s in (7, 7, 8))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # the tiny random decoder barely tells latents apart, so compare what was sampled
    first, second, other = (call["result"][:, :, 2] for call in recorded)
    assert torch.equal(first, second) and (first - other).abs().mean() > 0.1


def test_bad_counts(pipe):
    from videogen.errors import InputError

    with pytest.raises(InputError, match="context 4 is not 4k\\+1 frames: use 1 or 5"):
        pipe.extend(_frames(5), PROMPT, 4, context=4, **FAST)
    with pytest.raises(InputError, match="context 9 leaves nothing to generate in a window of 9 frames"):
        pipe.extend(_frames(5), PROMPT, 4, context=9, **FAST)
    with pytest.raises(InputError, match="number of new frames must be a positive whole number"):
        pipe.extend(_frames(5), PROMPT, 0, **FAST)
    with pytest.raises(InputError, match="input video: no frames"):
        pipe.extend(np.zeros((0, 32, 32, 3), np.uint8), PROMPT, 4, **FAST)


# --------------------------------------------------------------------------------------- interpolate


def test_interpolate_pastes_both_ends(pipe, recorded):
    start, end = _frames(4, seed=1), _frames(3, seed=2)
    opts = {k: v for k, v in FAST.items() if k != "window"}
    out = pipe.interpolate(Video(start, 8.0), Video(end, 8.0), PROMPT, 13, seed=3, method="timestep", **opts)
    assert out.num_frames == 13 and out.fps == 8.0
    assert np.array_equal(out.frames[0], start[-1]) and np.array_equal(out.frames[-1], end[0])
    call = recorded[0]
    assert call["known"].tolist() == [True, False, False, True]
    assert torch.equal(call["result"][:, :, call["known"]], call["clean"][:, :, call["known"]])
    bridge = bridge_clip(start[-1:], end[:1], 13)
    assert np.array_equal(bridge[-4:], np.repeat(end[:1], 4, axis=0)) and np.array_equal(bridge[0], start[-1])
    torch.testing.assert_close(call["clean"][:, :, [0, 3]], pipe.encode_frames(bridge)[:, :, [0, 3]])
    from videogen.errors import InputError

    with pytest.raises(InputError, match="number of frames 12 is not 4k\\+1: use 9 or 13"):
        pipe.interpolate(start, end, PROMPT, 12, **opts)


# ------------------------------------------------------------------------------------------- memory

def _held_bytes() -> tuple[int, int]:
    """Bytes of live numpy arrays and of live torch tensors other than weights.

    Tensors are tracked by gc; arrays are not, so they are found as what tracked objects (lists, dicts,
    generator frames...) refer to, counted once per underlying buffer.
    """
    arrays, tensors = {}, 0
    for obj in gc.get_objects():
        if type(obj) is torch.Tensor and not obj.requires_grad:  # not `isinstance`: it wakes lazy modules
            tensors += obj.nbytes
        for ref in gc.get_referents(obj):
            if isinstance(ref, np.ndarray):
                base = ref
                while isinstance(base.base, np.ndarray):
                    base = base.base
                arrays[id(base)] = base.nbytes
    return sum(arrays.values()), tensors


def _held_at_last_window(pipe, monkeypatch, num_new: int, output) -> tuple[int, int]:
    """Bytes of arrays and of tensors held as the last window of a 1 + ``num_new`` frame extension of an
    image (windows of 5 frames, 4 of them new) starts: when held frames, if any, would be most."""
    windows, calls, held, original = -(-num_new // 4), [], [], type(pipe).denoise

    def denoise(self, *args, **kw):
        calls.append(1)
        if len(calls) == windows:
            held.append(_held_bytes())
        return original(self, *args, **kw)

    monkeypatch.setattr(type(pipe), "denoise", denoise)
    try:
        pipe.extend(_frames(1)[0], PROMPT, num_new, window=5, context=1, height=32, width=32, num_steps=1,
                    guidance_scale=1.0, seed=0, progress=False, output=output)
    finally:
        monkeypatch.setattr(type(pipe), "denoise", original)
    assert len(calls) == windows
    return held[0]


def test_long_extension_memory_does_not_grow(pipe, tmp_path, monkeypatch):
    """2x vs 10x the 5-frame window: 40 more frames (10 more windows) add nothing held when streamed to a
    file; the same measure does see the frames when they are collected in memory (so it can fail)."""
    frame = 32 * 32 * 3
    pipe.extend(_frames(1)[0], PROMPT, 9, window=5, context=1, height=32, width=32, num_steps=1,
                guidance_scale=1.0, seed=0, progress=False)  # warm-up: one-time allocations are not growth
    short = _held_at_last_window(pipe, monkeypatch, 9, tmp_path / "short.mp4")
    long = _held_at_last_window(pipe, monkeypatch, 49, tmp_path / "long.mp4")
    kept = _held_at_last_window(pipe, monkeypatch, 49, None)
    print(f"held (arrays, tensors): {short} B at 2x the window, {long} B at 10x, {kept} B at 10x kept in memory")
    for what, a, b in (("arrays", short[0], long[0]), ("tensors", short[1], long[1])):
        assert b - a < 4 * frame, f"{what}: {(b - a) / frame:.1f} frames more held over 10 more windows"
    assert read_video(tmp_path / "long.mp4").num_frames == 50
    assert kept[0] - long[0] > 30 * frame  # collected in memory, the frames are there to see


# ----------------------------------------------------------------------------------------------- CLI


def _cli(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr()


def test_cli_extend_and_interpolate(tiny_wan_folder, tmp_path, capsys):
    write_video(tmp_path / "in.mp4", _frames(5, size=40), 8)
    model = ["--model", str(tiny_wan_folder), "--height", "32", "--width", "32", "--steps", "2", "--seed", "4"]
    code, out = _cli(capsys, "extend", str(tmp_path / "in.mp4"), "-p", PROMPT, "-o", str(tmp_path / "x.mp4"),
                     "--frames", "6", "--window", "9", "--method", "replace", *model)
    assert code == 0, out.err
    assert "note: " in out.out and "40x40 frames resized to 32x32" in out.out
    assert f"wrote {tmp_path / 'x.mp4'} in " in out.out and "denoising" in out.err
    video = read_video(tmp_path / "x.mp4")
    assert (video.num_frames, video.fps, video.height) == (11, 8.0, 32)
    code, out = _cli(capsys, "interpolate", str(tmp_path / "in.mp4"), str(tmp_path / "x.mp4"), "-p", PROMPT,
                     "-o", str(tmp_path / "y.mp4"), "--frames", "9", "--fps", "4", *model)
    assert code == 0, out.err
    video = read_video(tmp_path / "y.mp4")
    assert (video.num_frames, video.fps) == (9, 4.0)


@pytest.mark.parametrize("kind, message", [
    ("missing", "no such file"),
    ("empty", "file is empty"),
    ("corrupt", "corrupt"),
    ("text", "not a video file"),
])
def test_cli_bad_inputs(tiny_wan_folder, tmp_path, capsys, kind, message):
    bad = tmp_path / "in.mp4"
    if kind == "empty":
        bad.touch()
    elif kind == "corrupt":
        write_video(bad, _frames(5), 8)
        bad.write_bytes(bad.read_bytes()[:200])
    elif kind == "text":
        bad = tmp_path / "notes.txt"
        bad.write_text("not a video\n" * 50)
    good = tmp_path / "good.png"
    write_video(tmp_path / "good.mp4", _frames(1), 8)
    for argv in (["extend", str(bad)], ["interpolate", str(tmp_path / "good.mp4"), str(bad)]):
        code, out = _cli(capsys, *argv, "-p", PROMPT, "-o", str(tmp_path / "out.mp4"), "--model", str(tiny_wan_folder))
        assert code == 2 and message in out.err and len(out.err.strip().splitlines()) == 1, out.err
        assert out.err.startswith("error: ") and "Traceback" not in out.err
        assert not (tmp_path / "out.mp4").exists() and not good.exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left


def test_cli_refuses_to_overwrite(tiny_wan_folder, tmp_path, capsys):
    write_video(tmp_path / "in.mp4", _frames(5), 8)
    target = tmp_path / "out.mp4"
    target.write_bytes(b"precious")
    code, out = _cli(capsys, "extend", str(tmp_path / "in.mp4"), "-p", PROMPT, "-o", str(target),
                     "--model", str(tiny_wan_folder))
    assert code == 2 and "file exists" in out.err and target.read_bytes() == b"precious"
