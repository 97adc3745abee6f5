"""``videogen info``: the facts of good files, one ``error: ...`` line and exit 2 for bad ones."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from videogen.cli import main
from videogen.errors import VideogenError
from videogen.io import write_video


def gradient_clip(t: int = 9, h: int = 32, w: int = 48) -> np.ndarray:
    ramp = np.linspace(30, 220, w, dtype=np.float32)[None, None, :, None]
    frames = np.broadcast_to(ramp + 2 * np.arange(t)[:, None, None, None], (t, h, w, 3))  # (T, H, W, 3)
    return frames.astype(np.uint8)


@pytest.fixture
def files(tmp_path):
    """A good MP4 and PNG, and a few bad files."""
    clip = gradient_clip()
    write_video(tmp_path / "clip.mp4", clip, fps=8)
    Image.fromarray(clip[0]).save(tmp_path / "still.png")
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "garbage.mp4").write_bytes(np.random.default_rng(1).integers(0, 256, 2048, np.uint8).tobytes())
    data = (tmp_path / "clip.mp4").read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (tmp_path / "folder").mkdir()
    return tmp_path


def test_info_prints_the_facts(files, capsys):
    assert main(["info", str(files / "clip.mp4"), str(files / "still.png")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"{files / 'clip.mp4'}: 9 frames, 8 fps, 48x32, 1.125 s, h264 in mp4",
        f"{files / 'still.png'}: still image, 48x32, png",
    ]


@pytest.mark.parametrize(
    "name, problem",
    [
        ("missing.mp4", "no such file"),
        ("empty.mp4", "file is empty"),
        ("garbage.mp4", "not a video or image file, or corrupt"),
        ("truncated.mp4", "corrupt or truncated video"),
        ("folder", "is a directory"),
    ],
)
def test_bad_file_is_one_line_and_exit_2(files, capsys, name, problem):
    assert main(["info", str(files / name)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"error: {files / name}: {problem}")
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err


def test_good_and_bad_together(files, capsys):
    assert main(["info", str(files / "garbage.mp4"), str(files / "clip.mp4"), str(files / "empty.mp4")]) == 2
    captured = capsys.readouterr()
    assert captured.out.count("\n") == 1 and "9 frames" in captured.out  # the good file is still shown
    errors = captured.err.splitlines()
    assert len(errors) == 2 and all(line.startswith("error: ") for line in errors)


def test_debug_shows_the_traceback(files):
    with pytest.raises(VideogenError, match="file is empty"):
        main(["--debug", "info", str(files / "empty.mp4")])


def test_subprocess_exit_codes(files):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "videogen", *args], capture_output=True, text=True)

    good = run("info", str(files / "clip.mp4"))
    assert good.returncode == 0 and "9 frames, 8 fps, 48x32" in good.stdout and good.stderr == ""
    bad = run("info", str(files / "truncated.mp4"))
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.startswith("error: ") and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
    usage = run("info")
    assert usage.returncode == 2 and usage.stderr.startswith("error: ")



@pytest.mark.parametrize("argv, quick", [
    (["info"], True),
    (["--debug", "info"], True),  # a global option before the command: the parsed command decides, not argv[0]
    (["--version"], False),
])
def test_console_script_exits_quickly_after_file_commands_only(files, monkeypatch, capsys, argv, quick):
    from videogen import cli

    exits = []

    def quick_exit(code):  # os._exit would end pytest itself
        exits.append(code)
        raise SystemExit(code)

    monkeypatch.setattr(cli.os, "_exit", quick_exit)
    args = argv if argv == ["--version"] else [*argv, str(files / "clip.mp4")]
    monkeypatch.setattr(sys, "argv", ["videogen", *args])
    with pytest.raises(SystemExit) as done:
        cli.run()
    assert done.value.code == 0
    assert exits == ([0] if quick else [])