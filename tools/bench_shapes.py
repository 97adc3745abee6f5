"""Benchmark the shapes world: renderer throughput, analyser speed, and analyser accuracy under degradations.

    python tools/bench_shapes.py                 # the figures in docs/benchmarks.md
    python tools/bench_shapes.py --positions 1   # quicker

Throughput is single-process wall time (the machine's load matters: say which machine). Accuracy is over
all 216 (colour, shape, direction, background) combinations at `--positions` random layouts each, every
clip degraded the way a generated clip can be (noise, blur, JPEG, a real H.264 round trip through PyAV,
colour drift) and then analysed; a clip counts as right when all four attributes are. Prints Markdown.
There is no diffusers counterpart to compare with, so no ratios: these are absolute figures.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's videogen

from videogen.data.shapes import ShapesDataset, every_combination, render, sample_spec  # noqa: E402
from videogen.eval import degrade  # noqa: E402
from videogen.eval.shapes import analyze, score, summarize  # noqa: E402

CONDITIONS = {
    "clean": lambda f, rng: f,
    "noise sigma 10": lambda f, rng: degrade.gaussian_noise(f, 10.0, rng=rng),
    "noise sigma 20": lambda f, rng: degrade.gaussian_noise(f, 20.0, rng=rng),
    "blur sigma 1.0": lambda f, rng: degrade.gaussian_blur(f, 1.0),
    "blur sigma 1.5": lambda f, rng: degrade.gaussian_blur(f, 1.5),
    "JPEG q75": lambda f, rng: degrade.jpeg(f, 75),
    "JPEG q50": lambda f, rng: degrade.jpeg(f, 50),
    "JPEG q25": lambda f, rng: degrade.jpeg(f, 25),
    "colour shift +-25, gain +-10%": lambda f, rng: degrade.color_shift(f, rng=rng, max_offset=25, max_gain=0.1),
    "H.264 crf 18": lambda f, rng: degrade.h264(f, crf=18),
    "H.264 crf 23": lambda f, rng: degrade.h264(f, crf=23),
    "H.264 crf 35": lambda f, rng: degrade.h264(f, crf=35),
    "noise 6 + blur 0.8 + shift + JPEG q75": lambda f, rng: degrade.jpeg(
        degrade.color_shift(degrade.gaussian_blur(degrade.gaussian_noise(f, 6.0, rng=rng), 0.8), rng=rng), 75
    ),
}


def throughput(num_clips: int) -> list[tuple[str, float]]:
    rng = np.random.default_rng(0)
    specs = [sample_spec(rng, "all") for _ in range(num_clips)]
    start = time.perf_counter()
    clips = [render(spec) for spec in specs]
    render_rate = num_clips / (time.perf_counter() - start)
    dataset = ShapesDataset(num_clips, seed=0)
    start = time.perf_counter()
    for i in range(num_clips):
        dataset[i]
    dataset_rate = num_clips / (time.perf_counter() - start)
    start = time.perf_counter()
    for clip in clips[: num_clips // 4]:
        analyze(clip)
    analyze_ms = (time.perf_counter() - start) / (num_clips // 4) * 1e3
    return [
        ("render 64x64x17 uint8 (clips/s)", render_rate),
        ("ShapesDataset item, float (3, T, H, W) tensor (clips/s)", dataset_rate),
        ("analyze one 64x64x17 clip (ms)", analyze_ms),
    ]


def accuracy(specs: list, transform) -> tuple[dict[str, float], float]:
    scores, confidences = [], []
    for i, spec in enumerate(specs):
        analysis = analyze(transform(render(spec), np.random.default_rng(i)))
        scores.append(score(analysis, spec))
        confidences.append(min(analysis.confidence.values()))
    return summarize(scores), float(np.median(confidences))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, default=2, help="layouts per combination (216 each); 0: speed only")
    parser.add_argument("--clips", type=int, default=2000, help="clips rendered for the throughput figures")
    args = parser.parse_args(argv)

    print("| measure | value |\n|---|---|")
    for name, value in throughput(args.clips):
        print(f"| {name} | {value:.1f} |")

    if args.positions < 1:
        return
    specs = every_combination(args.positions)
    rows = []
    for name, transform in tqdm(CONDITIONS.items(), desc="degradations", unit="condition"):
        result, median_confidence = accuracy(specs, transform)
        rows.append((name, result, median_confidence))
    print(f"\n{len(specs)} clips per condition (216 combinations x {args.positions} layouts)\n")
    print("| condition | all correct | colour | shape | direction | background | median min-confidence |")
    print("|---|---|---|---|---|---|---|")
    for name, r, confidence in rows:
        cells = " | ".join(f"{100 * r[k]:.1f}%" for k in ("all_correct", "color", "shape", "direction", "background"))
        print(f"| {name} | {cells} | {confidence:.2f} |")


if __name__ == "__main__":
    main()
