"""Extend, interpolate and image-to-video on a model, measured through the CLI a user runs (issue 8).

Inputs are rendered from the shapes world, written as MP4/PNG, passed to ``python -m videogen extend`` /
``interpolate``, and the MP4s those write are read back and analysed by pixels (`videogen.eval.shapes`).
Meant for the bundled demo model (trained with frame conditioning); on a random model the numbers mean
nothing, but the run goes end to end. Measured per case, averaged over seeded cases:

- extension: colour, shape and direction of the new frames as the input's, and the jump at the seam: the mean
  absolute pixel difference between the last input frame and the first new frame, over the input's median
  frame-to-frame difference (about 1 for a seamless continuation);
- interpolation: mean absolute difference of the first and last output frames to the given frames (0 but for
  MP4 compression), and the object's centroid per frame against the straight constant-speed path between
  them (mean and max deviation, fraction of the side);
- image-to-video: colour, shape and direction of the animated frames as the caption says;
- memory: peak RSS of ``videogen extend`` over an image at 2x and at 10x the model's window.

``tools/eval_tasks.py`` is the command.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_RSS_RUNNER = (
    "import resource, sys\n"
    "from videogen.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "print('peak_rss_bytes', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)\n"
    "sys.exit(code)\n"
)


@dataclass
class TaskOptions:
    """How the cases are run: the CLI flags every command gets, and the clip geometry."""

    model: Path
    size: int = 64  # frame side in pixels (the demo model's)
    window: int = 17  # the model's window in frames (the demo's)
    new_frames: int = 16  # frames added by each extension
    fps: float = 8.0  # frame rate of the rendered inputs
    steps: int | None = None  # sampling steps (None: the model's)
    method: str | None = None  # "timestep" or "replace" (None: what the model declares)
    device: str | None = None
    seed: int = 0

    def cli_args(self) -> list[str]:
        args = ["--model", str(self.model), "--height", str(self.size), "--width", str(self.size),
                "--seed", str(self.seed), "--overwrite"]
        for flag, value in (("--steps", self.steps), ("--method", self.method), ("--device", self.device)):
            args += [flag, str(value)] if value is not None else []
        return args


def videogen(args: list[str], *, measure_rss: bool = False) -> int | None:
    """Run the CLI in a fresh process, as a user would; with measure_rss, return its peak RSS in bytes."""
    command = [sys.executable, "-c", _RSS_RUNNER] if measure_rss else [sys.executable, "-m", "videogen"]
    run = subprocess.run(command + args, capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"videogen {' '.join(args[:2])} failed:\n{run.stderr[-2000:]}")
    return int(run.stdout.split("peak_rss_bytes")[-1].split()[0]) if measure_rss else None


def centroid(frame: np.ndarray, background: np.ndarray) -> np.ndarray:
    """The (x, y) centroid of the pixels that differ from the background, NaN if none do."""
    mask = np.abs(frame.astype(np.float32) - background).sum(-1) > 96  # (H, W)
    if not mask.any():
        return np.full(2, np.nan)
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


def mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


def seam_jump(frames: np.ndarray, num_input: int) -> float:
    """First new frame vs last input frame, over the input's median frame-to-frame difference."""
    steps = [mean_abs(frames[i], frames[i + 1]) for i in range(num_input - 1)]
    return mean_abs(frames[num_input - 1], frames[num_input]) / max(float(np.median(steps)), 1e-6)


def attributes_kept(frames: np.ndarray, spec) -> dict[str, bool]:
    """Whether the frames show ``spec``'s colour, shape and direction (`analyze`)."""
    from videogen.eval.shapes import analyze

    seen = analyze(frames)
    return {name: getattr(seen, name) == getattr(spec, name) for name in ("color", "shape", "direction")}


def path_deviation(frames: np.ndarray, spec) -> tuple[float, float]:
    """Mean and max distance of the centroids from the straight constant-speed path, fraction of the side."""
    from videogen.data.shapes import BACKGROUNDS

    background = np.array(BACKGROUNDS[spec.background], np.float32)
    points = np.stack([centroid(f, background) for f in frames])  # (T, 2)
    t = np.linspace(0.0, 1.0, len(points))[:, None]
    line = points[0] + t * (points[-1] - points[0])  # (T, 2)
    distance = np.linalg.norm(points - line, axis=1) / frames.shape[1]
    distance = np.where(np.isnan(distance), 1.0, distance)  # a lost object counts as far off
    return float(distance.mean()), float(distance.max())


def _still(opts: TaskOptions, spec, folder: Path) -> Path:
    from PIL import Image

    from videogen.data.shapes import render

    Image.fromarray(render(spec, size=opts.size, num_frames=1)[0]).save(folder / "still.png")
    return folder / "still.png"


def eval_extend(opts: TaskOptions, spec, folder: Path) -> dict:
    from videogen.data.shapes import render
    from videogen.io import read_video, write_video

    frames = render(spec, size=opts.size, num_frames=opts.window + opts.new_frames)
    write_video(folder / "clip.mp4", frames[:opts.window], opts.fps, overwrite=True)
    given = read_video(folder / "clip.mp4").frames  # what the model is given, after MP4 compression
    videogen(["extend", str(folder / "clip.mp4"), "-p", spec.caption, "-o", str(folder / "extended.mp4"),
              "--frames", str(opts.new_frames), *opts.cli_args()])
    out = read_video(folder / "extended.mp4").frames
    kept = attributes_kept(out[opts.window:], spec)
    return {"input_kept": mean_abs(out[:opts.window], given), "seam_jump": seam_jump(out, opts.window),
            **{f"{k}_kept": v for k, v in kept.items()}}


def eval_interpolate(opts: TaskOptions, spec, folder: Path) -> dict:
    from PIL import Image

    from videogen.data.shapes import render
    from videogen.io import read_video

    frames = render(spec, size=opts.size, num_frames=opts.window)
    Image.fromarray(frames[0]).save(folder / "a.png")
    Image.fromarray(frames[-1]).save(folder / "b.png")
    videogen(["interpolate", str(folder / "a.png"), str(folder / "b.png"), "-p", spec.caption,
              "-o", str(folder / "between.mp4"), "--frames", str(opts.window), *opts.cli_args()])
    out = read_video(folder / "between.mp4").frames
    mean_dev, max_dev = path_deviation(out, spec)
    return {"start_diff": mean_abs(out[0], frames[0]), "end_diff": mean_abs(out[-1], frames[-1]),
            "path_mean_dev": mean_dev, "path_max_dev": max_dev, "frames": len(out)}


def eval_animate(opts: TaskOptions, spec, folder: Path) -> dict:
    from videogen.io import read_video

    videogen(["extend", str(_still(opts, spec, folder)), "-p", spec.caption, "-o", str(folder / "animated.mp4"),
              "--frames", str(opts.window - 1), *opts.cli_args()])
    out = read_video(folder / "animated.mp4").frames
    return {f"{k}_as_prompted": v for k, v in attributes_kept(out, spec).items()}


def eval_memory(opts: TaskOptions, spec, folder: Path) -> dict:
    """Peak RSS of extending an image to 2x and to 10x the window, each in a fresh process."""
    still, peaks = _still(opts, spec, folder), {}
    for times in (2, 10):
        peaks[f"peak_rss_{times}x_mib"] = videogen(
            ["extend", str(still), "-p", spec.caption, "-o", str(folder / f"long{times}.mp4"),
             "--frames", str(times * opts.window - 1), *opts.cli_args()], measure_rss=True) / 2**20
    peaks["rss_ratio_10x_over_2x"] = peaks["peak_rss_10x_mib"] / peaks["peak_rss_2x_mib"]
    return peaks


def evaluate_tasks(opts: TaskOptions, cases: int, work: Path) -> dict:
    """Every task on ``cases`` seeded shapes cases (averaged), and the memory run on the first; files in ``work``."""
    from videogen.data.shapes import sample_spec

    rng = np.random.default_rng(opts.seed)
    specs = [sample_spec(rng, "train") for _ in range(cases)]
    results = {}
    for name, task in (("extend", eval_extend), ("interpolate", eval_interpolate), ("image_to_video", eval_animate)):
        rows = []
        for i, spec in enumerate(specs):
            (work / f"{name}-{i}").mkdir(parents=True)
            rows.append(task(opts, spec, work / f"{name}-{i}"))
        results[name] = {key: float(np.mean([float(r[key]) for r in rows])) for key in rows[0]}
        print(name, results[name], flush=True)
    (work / "memory").mkdir()
    results["memory"] = eval_memory(opts, specs[0], work / "memory")
    print("memory", results["memory"], flush=True)
    return results
