"""Measure extend, interpolate and image-to-video on a model, through the CLI a user runs.

Inputs are rendered from the shapes world (`videogen.data.shapes`), written as MP4/PNG, passed to
``python -m videogen extend`` / ``interpolate``, and the MP4s those write are read back and analysed by
pixels (`videogen.eval.shapes`). Meant for the bundled demo model (trained with frame conditioning); on a
random model the numbers mean nothing, but the tool runs end to end.

Measured per case (averaged over ``--cases`` seeded cases):

- extension: colour, shape and direction of the new frames as the input's (`analyze`), and the jump at
  the seam: the mean absolute pixel difference between the last input frame and the first new frame,
  divided by the input's median frame-to-frame difference (about 1 for a seamless continuation);
- interpolation: mean absolute difference of the first and last output frames to the given frames
  (0 but for MP4 compression), and how steady the motion is: the object's centroid per frame against
  the straight constant-speed path between the given frames (mean and max deviation, fraction of the side);
- image-to-video: colour, shape and direction of the animated frames as the caption says;
- memory: peak RSS of ``videogen extend`` over an image at 2x and at 10x the model's window.

Usage::

    python tools/eval_tasks.py --model ./demo --cases 8
    python tools/eval_tasks.py --tiny --size 32 --window 9 --steps 2 --cases 1   # the machinery only
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

_RSS_RUNNER = (
    "import resource, sys\n"
    "from videogen.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "print('peak_rss_bytes', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)\n"
    "sys.exit(code)\n"
)


# ---------------------------------------------------------------------------------------- running


def videogen(args: list[str], *, measure_rss: bool = False) -> int | None:
    """Run the CLI in a fresh process, as a user would; with measure_rss, return its peak RSS in bytes."""
    command = [sys.executable, "-c", _RSS_RUNNER] if measure_rss else [sys.executable, "-m", "videogen"]
    run = subprocess.run(command + args, capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"videogen {' '.join(args[:2])} failed:\n{run.stderr[-2000:]}")
    if measure_rss:
        return int(run.stdout.split("peak_rss_bytes")[-1].split()[0])
    return None


def common_args(opts) -> list[str]:
    args = ["--model", str(opts.model), "--height", str(opts.size), "--width", str(opts.size),
            "--seed", str(opts.seed), "--overwrite"]
    for flag, value in (("--steps", opts.steps), ("--method", opts.method), ("--device", opts.device)):
        if value is not None:
            args += [flag, str(value)]
    return args


# --------------------------------------------------------------------------------------- measures


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


# ------------------------------------------------------------------------------------------ tasks


def eval_extend(opts, spec, folder: Path) -> dict:
    from videogen.data.shapes import render
    from videogen.io import read_video, write_video

    frames = render(spec, size=opts.size, num_frames=opts.window + opts.new_frames)
    write_video(folder / "clip.mp4", frames[:opts.window], opts.fps, overwrite=True)
    given = read_video(folder / "clip.mp4").frames  # what the model is given, after MP4 compression
    videogen(["extend", str(folder / "clip.mp4"), "-p", spec.caption, "-o", str(folder / "extended.mp4"),
              "--frames", str(opts.new_frames), *common_args(opts)])
    out = read_video(folder / "extended.mp4").frames
    kept = attributes_kept(out[opts.window:], spec)
    return {"input_kept": mean_abs(out[:opts.window], given), "seam_jump": seam_jump(out, opts.window),
            **{f"{k}_kept": v for k, v in kept.items()}}


def eval_interpolate(opts, spec, folder: Path) -> dict:
    from PIL import Image

    from videogen.data.shapes import render
    from videogen.io import read_video

    frames = render(spec, size=opts.size, num_frames=opts.window)
    Image.fromarray(frames[0]).save(folder / "a.png")
    Image.fromarray(frames[-1]).save(folder / "b.png")
    videogen(["interpolate", str(folder / "a.png"), str(folder / "b.png"), "-p", spec.caption,
              "-o", str(folder / "between.mp4"), "--frames", str(opts.window), *common_args(opts)])
    out = read_video(folder / "between.mp4").frames
    mean_dev, max_dev = path_deviation(out, spec)
    return {"start_diff": mean_abs(out[0], frames[0]), "end_diff": mean_abs(out[-1], frames[-1]),
            "path_mean_dev": mean_dev, "path_max_dev": max_dev, "frames": len(out)}


def eval_animate(opts, spec, folder: Path) -> dict:
    from PIL import Image

    from videogen.data.shapes import render
    from videogen.io import read_video

    Image.fromarray(render(spec, size=opts.size, num_frames=1)[0]).save(folder / "still.png")
    videogen(["extend", str(folder / "still.png"), "-p", spec.caption, "-o", str(folder / "animated.mp4"),
              "--frames", str(opts.window - 1), *common_args(opts)])
    out = read_video(folder / "animated.mp4").frames
    return {f"{k}_as_prompted": v for k, v in attributes_kept(out, spec).items()}


def eval_memory(opts, spec, folder: Path) -> dict:
    """Peak RSS of extending an image to 2x and to 10x the window, each in a fresh process."""
    from PIL import Image

    from videogen.data.shapes import render

    Image.fromarray(render(spec, size=opts.size, num_frames=1)[0]).save(folder / "still.png")
    peaks = {}
    for times in (2, 10):
        peaks[f"peak_rss_{times}x_mib"] = videogen(
            ["extend", str(folder / "still.png"), "-p", spec.caption, "-o", str(folder / f"long{times}.mp4"),
             "--frames", str(times * opts.window - 1), *common_args(opts)], measure_rss=True) / 2**20
    peaks["rss_ratio_10x_over_2x"] = peaks["peak_rss_10x_mib"] / peaks["peak_rss_2x_mib"]
    return peaks


def average(rows: list[dict]) -> dict:
    return {key: float(np.mean([float(r[key]) for r in rows])) for key in rows[0]}


# ------------------------------------------------------------------------------------------- main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, help="model folder (the demo model); see --tiny")
    p.add_argument("--tiny", action="store_true", help="build a tiny random Wan2.1 folder and use it")
    p.add_argument("--cases", type=int, default=4, help="seeded shapes cases per task")
    p.add_argument("--size", type=int, default=64, help="frame side in pixels (the demo model's: 64)")
    p.add_argument("--window", type=int, default=17, help="the model's window in frames (the demo's: 17)")
    p.add_argument("--new-frames", type=int, default=16, help="frames added by each extension")
    p.add_argument("--fps", type=float, default=8.0, help="frame rate of the rendered inputs")
    p.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    p.add_argument("--method", choices=["timestep", "replace"], help="default: what the model declares")
    p.add_argument("--device", help="cuda or cpu (default: cuda if available)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the results here")
    return p.parse_args(argv)


def main(argv=None) -> int:
    from videogen.data.shapes import sample_spec

    opts = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if opts.tiny:
            from videogen.testing import build_tiny_wan_folder

            opts.model = build_tiny_wan_folder(Path(tmp) / "tiny")
        if opts.model is None:
            raise SystemExit("error: pass --model FOLDER or --tiny")
        rng = np.random.default_rng(opts.seed)
        specs = [sample_spec(rng, "train") for _ in range(opts.cases)]
        results = {}
        for name, task in (("extend", eval_extend), ("interpolate", eval_interpolate),
                           ("image_to_video", eval_animate)):
            rows = []
            for i, spec in enumerate(specs):
                folder = Path(tmp) / f"{name}-{i}"
                folder.mkdir()
                rows.append(task(opts, spec, folder))
            results[name] = average(rows)
            print(name, json.dumps(results[name], indent=1), flush=True)
        folder = Path(tmp) / "memory"
        folder.mkdir()
        results["memory"] = eval_memory(opts, specs[0], folder)
        print("memory", json.dumps(results["memory"], indent=1), flush=True)
    results["machine"] = f"{platform.machine()} {platform.processor() or ''}".strip()
    results["settings"] = {k: str(v) for k, v in vars(opts).items()}
    if opts.json:
        opts.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
