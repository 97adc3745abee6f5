"""VideoPipeline against diffusers' WanPipeline on a tiny random Wan2.1 folder, and its error handling."""

import json
import shutil

import numpy as np
import pytest
import torch

from videogen.errors import InputError, ModelError, ResourceError
from videogen import VideoPipeline
from videogen.cli import main

PROMPT = "a red circle moving left on a black background"
SMALL = dict(negative_prompt="blurry, static", num_frames=9, height=32, width=48)  # latents (1, 16, 3, 4, 6)


@pytest.fixture(scope="module")
def pipe(tiny_wan_folder):
    return VideoPipeline.from_pretrained(tiny_wan_folder, device="cpu")


@pytest.fixture(scope="module")
def reference(tiny_wan_folder):
    from diffusers import WanPipeline

    return WanPipeline.from_pretrained(tiny_wan_folder)


def _noise(seed=0):
    return torch.randn(1, 16, 3, 4, 6, generator=torch.Generator().manual_seed(seed))


def _diffusers_frames(reference, **kwargs) -> np.ndarray:
    """diffusers' frames (T, H, W, 3) as floats in [0, 1]."""
    return reference(PROMPT, **SMALL, output_type="np", **kwargs).frames[0]


def _scheduler_like(reference, sampler):
    """diffusers' own scheduler for a sampler name, configured as our `make_scheduler` promises."""
    from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    flow = dict(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    return {
        "unipc": lambda: UniPCMultistepScheduler.from_config(reference.scheduler.config),
        "euler": lambda: FlowMatchEulerDiscreteScheduler(shift=3.0),
        "dpm++": lambda: DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2, **flow),
    }[sampler]()


# ------------------------------------------------------------------------------------ equivalence


@pytest.mark.parametrize("sampler", ["unipc", "euler", "dpm++"])
def test_frames_match_diffusers_wan_pipeline(pipe, reference, sampler):
    reference.scheduler = _scheduler_like(reference, sampler)
    their_steps = []

    def keep_latents(pipeline, i, t, tensors):
        their_steps.append(tensors["latents"])
        return {}

    theirs = _diffusers_frames(reference, num_inference_steps=4, guidance_scale=5.0, latents=_noise(),
                               callback_on_step_end=keep_latents)
    steps = []
    video = pipe.generate(PROMPT, **SMALL, num_steps=4, guidance_scale=5.0, sampler=sampler, latents=_noise(),
                          callback=lambda i, t, x: steps.append(x), progress=False)
    assert video.frames.shape == theirs.shape == (9, 32, 48, 3) and video.frames.dtype == np.uint8
    assert video.fps == 16.0
    assert len(steps) == len(their_steps) == 4
    for ours_i, theirs_i in zip(steps, their_steps):  # every step, not only the last
        torch.testing.assert_close(ours_i, theirs_i.float(), atol=1e-4, rtol=1e-4)
    diff = np.abs(video.frames / 255.0 - theirs)
    assert diff.mean() < 1 / 255 and diff.max() <= 1 / 255 + 1e-6  # uint8 rounding only
    assert theirs.std() > 0.02  # a real picture, not a constant


def test_seed_gives_diffusers_noise(pipe, reference):
    reference.scheduler = _scheduler_like(reference, "unipc")
    theirs = _diffusers_frames(reference, num_inference_steps=3, generator=torch.Generator().manual_seed(7))
    ours = pipe.generate(PROMPT, **SMALL, num_steps=3, seed=7, progress=False)
    assert np.abs(ours.frames / 255.0 - theirs).mean() < 1 / 255


def test_without_guidance_matches_diffusers(pipe, reference):
    reference.scheduler = _scheduler_like(reference, "unipc")
    theirs = _diffusers_frames(reference, num_inference_steps=3, guidance_scale=1.0, latents=_noise(1))
    ours = pipe.generate(PROMPT, **SMALL, num_steps=3, guidance_scale=1.0, latents=_noise(1), progress=False)
    assert np.abs(ours.frames / 255.0 - theirs).mean() < 1 / 255


def test_same_seed_same_frames_other_seed_different(pipe):
    a, b, c = (pipe.generate(PROMPT, **SMALL, num_steps=2, seed=s, progress=False) for s in (1, 1, 2))
    assert np.array_equal(a.frames, b.frames)
    assert np.abs(a.frames.astype(int) - c.frames.astype(int)).mean() > 1


def test_global_rng_untouched(pipe):
    state = torch.random.get_rng_state()
    pipe.generate(PROMPT, **SMALL, num_steps=1, progress=False)
    assert torch.equal(torch.random.get_rng_state(), state)


# -------------------------------------------------------------------------------------- streaming


def test_decoding_streams_latent_frame_by_latent_frame(pipe):
    chunks = list(pipe.decode_frames(_noise()))
    assert [len(c) for c in chunks] == [1, 4, 4]  # the causal VAE: first frame alone, then 4 per latent frame
    assert all(c.dtype == np.uint8 and c.shape[1:] == (32, 48, 3) for c in chunks)


def test_output_file_streams_and_matches_memory(pipe, tmp_path):
    from videogen.io import probe_video, read_video, write_video

    in_memory = pipe.generate(PROMPT, **SMALL, num_steps=2, seed=4, progress=False)
    path = pipe.generate(PROMPT, **SMALL, num_steps=2, seed=4, fps=8, output=tmp_path / "clip.mp4", progress=False)
    assert path == tmp_path / "clip.mp4"
    info = probe_video(path)
    assert (info.frames, info.height, info.width, info.fps) == (9, 32, 48, 8.0)
    # the streamed file holds exactly the in-memory frames: the same frames written at once encode the same
    reference = write_video(tmp_path / "reference.mp4", in_memory.frames, 8)
    assert np.array_equal(read_video(path).frames, read_video(reference).frames)
    reference.unlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]  # no temporary file left
    with pytest.raises(InputError, match="file exists"):
        pipe.generate(PROMPT, **SMALL, num_steps=1, output=path, progress=False)


# ----------------------------------------------------------------------------------- folders


def test_save_pretrained_loads_in_diffusers_and_back(pipe, tmp_path):
    from diffusers import WanPipeline

    pipe.defaults.fps = 12.0
    try:
        folder = pipe.save_pretrained(tmp_path / "saved")
    finally:
        pipe.defaults.fps = 16.0
    ours = pipe.generate(PROMPT, **SMALL, num_steps=2, latents=_noise(), progress=False)
    theirs = WanPipeline.from_pretrained(folder)(PROMPT, **SMALL, num_inference_steps=2, latents=_noise(),
                                                 output_type="np").frames[0]
    assert np.abs(ours.frames / 255.0 - theirs).mean() < 1 / 255
    again = VideoPipeline.from_pretrained(folder, device="cpu")
    assert again.defaults.fps == 12.0
    video = again.generate(PROMPT, **SMALL, num_steps=2, latents=_noise(), progress=False)
    assert np.array_equal(video.frames, ours.frames) and video.fps == 12.0
    with pytest.raises(InputError, match="already exists"):
        pipe.save_pretrained(folder)


def _copy(folder, tmp_path):
    return shutil.copytree(folder, tmp_path / "model")


def test_defaults_come_from_the_folder(tiny_wan_folder, tmp_path):
    folder = _copy(tiny_wan_folder, tmp_path)
    index = json.loads((folder / "model_index.json").read_text())
    index["videogen"] = {"num_frames": 5, "height": 16, "width": 32, "num_steps": 2, "fps": 8}
    (folder / "model_index.json").write_text(json.dumps(index))
    (folder / "videogen.json").write_text(json.dumps({"fps": 10, "guidance_scale": 1.0}))
    pipe = VideoPipeline.from_pretrained(folder, device="cpu")
    video = pipe.generate("x", progress=False)
    assert video.frames.shape == (5, 16, 32, 3) and video.fps == 10.0  # videogen.json over model_index.json
    (folder / "videogen.json").write_text(json.dumps({"frame_rate": 10}))
    with pytest.raises(ModelError, match="unknown setting.*frame_rate"):
        VideoPipeline.from_pretrained(folder)


def _break(folder, how):
    if how == "no model_index.json":
        (folder / "model_index.json").unlink()
    elif how == "no vae/":
        shutil.rmtree(folder / "vae")
    elif how == "corrupt weights":
        (folder / "transformer" / "diffusion_pytorch_model.safetensors").write_bytes(b"\0" * 64)
    elif how == "bad json":
        (folder / "scheduler" / "scheduler_config.json").write_text("{not json")
    elif how == "no tokenizer files":
        for f in (folder / "tokenizer").iterdir():
            f.unlink()


@pytest.mark.parametrize(
    "how, message",
    [
        ("no model_index.json", "model_index.json is missing"),
        ("no vae/", "incomplete: vae/ missing"),
        ("corrupt weights", "transformer: cannot load VideoDiT"),
        ("bad json", "scheduler_config.json is not valid JSON"),
        ("no tokenizer files", "tokenizer"),
    ],
)
def test_broken_folders_are_model_errors(tiny_wan_folder, tmp_path, how, message):
    folder = _copy(tiny_wan_folder, tmp_path)
    _break(folder, how)
    with pytest.raises(ModelError, match=message):
        VideoPipeline.from_pretrained(folder)


@pytest.mark.parametrize("entries, message", [
    ({"audio_encoder": ["transformers", "WhisperModel"]},
     "cannot run this model as published: its audio_encoder is not supported"),
    ({"_class_name": "WanVACEPipeline"}, "a WanVACEPipeline folder; videogen runs WanPipeline and"),
    ({"transformer_2": ["diffusers", "WanTransformer3DModel"]}, "incomplete: transformer_2/ missing"),
    ({"boundary_ratio": 0.875}, "has boundary_ratio without transformer_2"),
    ({"image_encoder": ["transformers", "CLIPVisionModel"]}, "incomplete: image_encoder/ missing"),
    ({"expand_timesteps": "yes"}, "expand_timesteps must be true or false"),
])
def test_a_folder_with_parts_we_do_not_run_is_refused_not_half_run(tiny_wan_folder, tmp_path, entries, message):
    """A part or mode we would leave out, or one declared without what it needs: one line, no load."""
    folder = _copy(tiny_wan_folder, tmp_path)
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, **entries}))
    with pytest.raises(ModelError, match=message):
        VideoPipeline.from_pretrained(folder)
    assert main(["generate", PROMPT, "--model", str(folder), "-o", str(tmp_path / "x.mp4")]) == 2
    assert not (tmp_path / "x.mp4").exists()


def test_a_second_expert_without_its_folder_parts_is_refused(tiny_wan_folder, tmp_path):
    """transformer_2/ present but no boundary: where the second expert takes over is not known."""
    folder = _copy(tiny_wan_folder, tmp_path)
    shutil.copytree(folder / "transformer", folder / "transformer_2")
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "transformer_2": index["transformer"]}))
    with pytest.raises(ModelError, match="has transformer_2 without boundary_ratio; both or neither"):
        VideoPipeline.from_pretrained(folder)


def test_saved_folder_is_an_ordinary_folder(pipe, tmp_path):
    import os

    folder = pipe.save_pretrained(tmp_path / "saved")
    mask = os.umask(0)
    os.umask(mask)
    assert folder.stat().st_mode & 0o777 == 0o777 & ~mask  # not mkdtemp's private 0700
    assert "seed" not in json.loads((folder / "videogen.json").read_text())  # no seed of its own: random


def test_missing_folder(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        VideoPipeline.from_pretrained(tmp_path / "nowhere")


# ------------------------------------------------------------------------------------ bad requests


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_frames=10), "number of frames 10 is not 4k\\+1: use 9 or 13"),
        (dict(num_frames=0), "number of frames must be a positive whole number"),
        (dict(height=40), "height 40 is not a multiple of 16: use 32 or 48"),
        (dict(width=8), "width 8 is not a multiple of 16: use 16"),
        (dict(num_steps=0), "number of steps must be a positive whole number"),
        (dict(num_steps=2.5), "number of steps must be a positive whole number"),
        (dict(guidance_scale=float("nan")), "guidance scale must be a finite number"),
        (dict(guidance_scale=float("inf")), "guidance scale must be a finite number"),
        (dict(shift=0.0), "shift must be a finite positive number"),
        (dict(fps=-1), "fps must be a finite positive number"),
        (dict(sampler="ddim"), "unknown sampler 'ddim'"),
        (dict(seed=-1), "seed must be a whole number"),
        (dict(latents=torch.zeros(1, 16, 2, 4, 6)), "initial latents have shape"),
        (dict(attention="flash9"), "unknown attention backend 'flash9'"),
    ],
)
def test_bad_requests_are_input_errors(pipe, tmp_path, kwargs, message):
    with pytest.raises(InputError, match=message):
        pipe.generate(PROMPT, **{**SMALL, "num_steps": 1, **kwargs}, output=tmp_path / "out.mp4", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_output_problems_are_input_errors(pipe, tmp_path):
    with pytest.raises(InputError, match="output folder .* does not exist"):
        pipe.generate(PROMPT, **SMALL, num_steps=1, output=tmp_path / "no" / "out.mp4", progress=False)
    with pytest.raises(InputError, match="cannot write '.xyz' files"):
        pipe.generate(PROMPT, **SMALL, num_steps=1, output=tmp_path / "out.xyz", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_impossible_request_is_refused_before_work(pipe, tmp_path):
    calls = []
    with pytest.raises(ResourceError, match=r"needs about [\d.]+ GiB at peak .* GiB is available on cpu"):
        pipe.generate(PROMPT, num_frames=4001, height=4096, width=4096, num_steps=1, output=tmp_path / "big.mp4",
                      callback=lambda *a: calls.append(a), progress=False)
    assert calls == [] and list(tmp_path.iterdir()) == []


def test_memory_estimate_grows_with_the_request(pipe):
    small = pipe.estimate_memory(pipe.settings(**SMALL), keep_frames=False)
    long = pipe.estimate_memory(pipe.settings(**{**SMALL, "num_frames": 81}), keep_frames=True)
    assert 0 < small.peak <= long.peak < 2**30  # text encoding (512 tokens) can dominate both
    assert long.denoise > small.denoise and long.decode > small.decode


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_offload_on_gpu_gives_the_same_frames(tiny_wan_folder):
    resident = VideoPipeline.from_pretrained(tiny_wan_folder, device="cuda")
    offloaded = VideoPipeline.from_pretrained(tiny_wan_folder, device="cuda", offload=True)
    a = resident.generate(PROMPT, **SMALL, num_steps=2, seed=3, progress=False)
    b = offloaded.generate(PROMPT, **SMALL, num_steps=2, seed=3, progress=False)
    assert np.abs(a.frames.astype(int) - b.frames.astype(int)).max() <= 1
    assert next(offloaded.transformer.parameters()).device.type == "cpu"


def test_loading_a_diffusers_folder_imports_none_of_diffusers_model_classes(tiny_wan_folder):
    """The folder names diffusers' classes; resolving those names would import every diffusers model of their
    kind (~2 s per model of `videogen generate`). The configs still load exactly as diffusers saved them."""
    import subprocess
    import sys

    code = (
        "import sys, json\n"
        "from videogen import VideoPipeline\n"
        f"pipe = VideoPipeline.from_pretrained({str(tiny_wan_folder)!r}, device='cpu')\n"
        "heavy = [m for m in sys.modules if m.startswith(('diffusers.models.autoencoders.', "
        "'diffusers.models.transformers.'))]\n"
        "print(json.dumps({'heavy': heavy, 'vae': dict(pipe.vae.config), 'dit': dict(pipe.transformer.config)}, default=str))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded["heavy"] == []
    for part, key in (("vae", "vae"), ("transformer", "dit")):
        saved = json.loads((tiny_wan_folder / part / "config.json").read_text())
        shared = {k: v for k, v in saved.items() if not k.startswith("_") and k in loaded[key]}
        assert len(shared) >= 8
        assert all(json.dumps(loaded[key][k], default=str) == json.dumps(v) for k, v in shared.items()), part


def test_a_settings_object_and_keywords_are_the_same_request(pipe):
    from videogen.settings import Settings

    chosen = pipe.defaults.override(**SMALL, num_steps=2, seed=4)
    by_object = pipe.generate(PROMPT, settings=chosen, progress=False)
    by_keywords = pipe.generate(PROMPT, **SMALL, num_steps=2, seed=4, progress=False)
    assert np.array_equal(by_object.frames, by_keywords.frames)
    assert np.array_equal(pipe.generate(PROMPT, settings=chosen, seed=5, progress=False).frames,
                          pipe.generate(PROMPT, **SMALL, num_steps=2, seed=5, progress=False).frames)  # on top
    with pytest.raises(InputError, match="unknown setting.*frame_rate"):
        pipe.generate(PROMPT, frame_rate=8, progress=False)
    assert isinstance(pipe.settings(), Settings) and pipe.settings(seed=3).seed == 3


def test_a_folder_in_float16_and_the_mean_of_two_folders_load_and_run(pipe, tmp_path):
    from safetensors.torch import load_file, save_file

    from videogen.modelfolder import average_component, to_float16, weights_file

    first = pipe.save_pretrained(tmp_path / "a")
    second = shutil.copytree(first, tmp_path / "b")
    dit_b = load_file(str(weights_file(second, "transformer")))
    dit_b = {k: v + 1.0 for k, v in dit_b.items()}
    save_file(dit_b, str(weights_file(second, "transformer")), metadata={"format": "pt"})
    mean = average_component([first, second], tmp_path / "mean")
    dit_a, dit_m = (load_file(str(weights_file(f, "transformer"))) for f in (first, mean))
    assert all(torch.allclose(dit_m[k], dit_a[k] + 0.5, atol=1e-6) for k in dit_a)
    assert load_file(str(weights_file(mean, "vae"))).keys() == load_file(str(weights_file(first, "vae"))).keys()
    to_float16(first)
    assert {v.dtype for v in load_file(str(weights_file(first, "transformer"))).values()} == {torch.float16}
    half = VideoPipeline.from_pretrained(first, device="cpu")
    a = half.generate(PROMPT, **SMALL, num_steps=2, seed=1, progress=False).frames.astype(int)
    b = pipe.generate(PROMPT, **SMALL, num_steps=2, seed=1, progress=False).frames.astype(int)
    assert np.abs(a - b).mean() < 2.0  # only the stored precision changed
    with pytest.raises(ModelError, match="do not match"):
        save_file({"x": torch.zeros(1)}, str(weights_file(second, "transformer")))
        average_component([first, second], tmp_path / "bad")
