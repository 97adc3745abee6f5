"""`videogen generate` on the tiny random Wan2.1 folder: real MP4s, determinism, one-line errors."""

import importlib.util
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from videogen.cli import main
from videogen.cli.common import default_output_path

PROMPT = "a red circle moving left"
FAST = ["--frames", "9", "--height", "32", "--width", "48", "--steps", "2"]


def _exit_code(argv):
    """main()'s exit status, argparse's usage errors (SystemExit) included."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


def _generate(capsys, model, *args):
    code = _exit_code(["generate", PROMPT, "--model", str(model), *FAST, *args])
    return code, capsys.readouterr()


def test_writes_a_playable_mp4_deterministically(tiny_wan_folder, tmp_path, monkeypatch, capsys):
    from videogen.io import probe_video, read_video

    monkeypatch.chdir(tmp_path)
    code, out = _generate(capsys, tiny_wan_folder, "--seed", "5", "--fps", "8")
    assert code == 0
    first = tmp_path / "videogen-a-red-circle-moving-left-1.mp4"  # the default name
    assert f"wrote {first.name}" in out.out and " s (seed 5)" in out.out
    assert "denoising" in out.err and "decoding" in out.err  # progress bars
    info = probe_video(first)
    assert (info.frames, info.height, info.width, info.fps, info.codec) == (9, 32, 48, 8.0, "h264")
    # same seed: identical frames, in a new file (the default path never overwrites)
    assert _generate(capsys, tiny_wan_folder, "--seed", "5", "--fps", "8")[0] == 0
    second = tmp_path / "videogen-a-red-circle-moving-left-2.mp4"
    assert np.array_equal(read_video(first).frames, read_video(second).frames)
    # another seed: other frames
    assert _generate(capsys, tiny_wan_folder, "--seed", "6", "-o", "other.mp4")[0] == 0
    diff = np.abs(read_video(first).frames.astype(int) - read_video(tmp_path / "other.mp4").frames.astype(int))
    assert diff.mean() > 3
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.name, second.name, "other.mp4"])


def test_overwrite_is_explicit(tiny_wan_folder, tmp_path, capsys):
    out = tmp_path / "clip.mp4"
    out.write_bytes(b"precious")
    code, captured = _generate(capsys, tiny_wan_folder, "-o", str(out))
    assert code == 2 and "file exists" in captured.err and out.read_bytes() == b"precious"
    code, _ = _generate(capsys, tiny_wan_folder, "-o", str(out), "--overwrite", "--sampler", "euler")
    assert code == 0 and out.read_bytes()[4:8] == b"ftyp"  # an MP4 now


def test_default_path_slug(tmp_path):
    assert default_output_path("A Cat, surfing!", tmp_path).name == "videogen-a-cat-surfing-1.mp4"
    (tmp_path / "videogen-a-cat-surfing-1.mp4").touch()
    assert default_output_path("A Cat, surfing!", tmp_path).name == "videogen-a-cat-surfing-2.mp4"
    assert default_output_path("???", tmp_path).name == "videogen-video-1.mp4"


def _broken_model(tiny_wan_folder, tmp_path):
    folder = shutil.copytree(tiny_wan_folder, tmp_path / "broken")
    shutil.rmtree(folder / "vae")
    return folder


BAD = [
    (["--frames", "10"], "number of frames 10 is not 4k+1"),
    (["--height", "30"], "height 30 is not a multiple of 16"),
    (["--steps", "0"], "number of steps must be a positive whole number"),
    (["--steps", "-3"], "number of steps must be a positive whole number"),
    (["--guidance", "nan"], "guidance scale must be a finite number"),
    (["--fps", "0"], "fps must be a finite positive number"),
    (["--frames", "nine"], "argument --frames: invalid int value"),
    (["--sampler", "ddim"], "argument --sampler: invalid choice"),
    (["--attention", "flash9"], "unknown attention backend 'flash9'"),
    (["-o", "{tmp}/missing/out.mp4"], "output folder"),
    (["-o", "{tmp}/out.xyz"], "cannot write '.xyz' files"),
    (["--model", "{tmp}/nowhere"], "model folder"),
    (["--model", "{broken}"], "incomplete: vae/ missing"),
]
if not torch.cuda.is_available():
    BAD.append((["--device", "cuda"], "CUDA is not available"))


@pytest.mark.parametrize("args, message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_values_are_one_line_errors(tiny_wan_folder, tmp_path, capsys, monkeypatch, args, message):
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    monkeypatch.chdir(outputs)
    broken = _broken_model(tiny_wan_folder, tmp_path) if "{broken}" in args else None
    args = [a.format(tmp=outputs, broken=broken) for a in args]
    model = [] if "--model" in args else ["--model", str(tiny_wan_folder)]
    assert _exit_code(["generate", PROMPT, *model, *FAST, *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1], err
    assert "Traceback" not in "\n".join(err)
    assert list(outputs.iterdir()) == []  # nothing written, no temporary file left


def test_without_model_and_no_bundled_model_says_to_pass_one(tmp_path, monkeypatch, capsys):
    import videogen.bundled

    monkeypatch.setattr(videogen.bundled, "_package_folder", lambda: tmp_path / "videogen")  # no demo model
    assert main(["generate", PROMPT]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no bundled demo model") and "pass --model FOLDER" in err and err.count("\n") == 1


def test_as_a_process_no_traceback(tiny_wan_folder):
    # frame counts are checked against the folder's own VAE (4x in time here), so the folder is a real one
    out = subprocess.run(
        [sys.executable, "-m", "videogen", "generate", PROMPT, "--model", str(tiny_wan_folder), "--frames", "8"],
        capture_output=True, text=True,
    )
    assert out.returncode == 2
    assert out.stderr == "error: number of frames 8 is not 4k+1: use 5 or 9\n"


@pytest.mark.skipif(importlib.util.find_spec("scipy") is None, reason="scipy is not installed: nothing to hide")
def test_as_a_process_it_does_not_import_what_it_does_not_use(tiny_wan_folder, tmp_path):
    """scipy (scikit-image installs it) and PEFT (without --lora) cost a cold generation 1-2 s when imported."""
    out = tmp_path / "clip.mp4"
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "videogen", "generate", PROMPT, "--model",
                           str(tiny_wan_folder), *FAST, "-o", str(out), "--seed", "1"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    imported = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert {"torch", "diffusers", "transformers", "av"} <= imported  # the check sees the process's imports
    assert sorted(name for name in imported if name.split(".")[0] in ("scipy", "peft")) == []
    # the same clip as in process, where scipy is loaded (the diffusers schedulers see it installed)
    in_process = tmp_path / "in-process.mp4"
    assert main(["generate", PROMPT, "--model", str(tiny_wan_folder), *FAST, "-o", str(in_process), "--seed", "1"]) == 0
    assert out.read_bytes() == in_process.read_bytes()


def test_hiding_unused_packages_ends_with_the_command():
    """Once the libraries have checked, scipy is importable again; and with them loaded already, nothing is hidden."""
    code = (
        "import sys\n"
        "from videogen.cli import without_unused_packages\n"
        "with without_unused_packages():\n"
        "    import diffusers.utils.import_utils as d\n"
        "    assert sys.modules['scipy'] is None\n"
        "assert not d.is_scipy_available()  # its schedulers skip scipy.stats from now on\n"
        "import scipy.stats\n"
        "with without_unused_packages():\n"
        "    assert sys.modules['scipy'] is not None\n"
    )
    if importlib.util.find_spec("scipy") is None:
        pytest.skip("scipy is not installed: nothing to hide")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_as_a_process_the_quick_exit_keeps_the_output_and_the_report(tiny_wan_folder, tmp_path):
    """The console script skips the interpreter's teardown after a generation: nothing written may be lost."""
    from videogen.io import probe_video

    out = tmp_path / "clip.mp4"
    done = subprocess.run([sys.executable, "-m", "videogen", "generate", PROMPT, "--model", str(tiny_wan_folder), *FAST,
                           "-o", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"wrote {out} in ") and done.stdout.endswith(")\n")
    assert "decoding" in done.stderr and probe_video(out).frames == 9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]  # no temporary file left behind
    again = subprocess.run([sys.executable, "-m", "videogen", "generate", PROMPT, "--model", str(tiny_wan_folder), *FAST,
                            "-o", str(out)], capture_output=True, text=True)
    assert again.returncode == 2 and again.stderr.startswith("error: ") and again.stderr.count("\n") == 1


def test_sizes_are_checked_against_the_models_own_geometry(tmp_path, capsys):
    """The bundled model's tile is 8 pixels (a 4x VAE, 2x2 patches), not Wan2.1's 16: 72 is a size it takes."""
    from videogen.bundled import default_model_path
    from videogen.io import probe_video
    from videogen.modelfolder import read_geometry

    assert read_geometry(default_model_path()).pixel_multiple == 8
    out = tmp_path / "72.mp4"
    code = main(["generate", "a blue triangle moving up on a white background", "--height", "72",
                 "--width", "72", "--frames", "5", "--steps", "2", "-o", str(out)])
    assert code == 0
    info = probe_video(out)
    assert (info.frames, info.height, info.width) == (5, 72, 72)
    assert main(["generate", PROMPT, "--height", "70", "-o", str(tmp_path / "70.mp4")]) == 2
    assert "height 70 is not a multiple of 8: use 64 or 72" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["72.mp4"]


def test_every_setting_has_its_flag_and_the_samplers_agree():
    from videogen.cli import build_parser
    from videogen.diffusion.sampling import SAMPLERS
    from videogen.settings import SAMPLER_NAMES, Settings

    generate = build_parser()._subparsers._group_actions[0].choices["generate"]
    dests = {action.dest for action in generate._actions}
    assert set(Settings.names()) - dests == {"frame_conditioning"}  # a property of the model, not a request
    assert set(SAMPLER_NAMES) == set(SAMPLERS)
