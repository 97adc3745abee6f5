"""How fast the shapes world renders and is analysed, and how often the analyser is right on degraded clips.

Each condition of `CONDITIONS` degrades a rendered clip the way a generated clip can be degraded (noise, blur,
JPEG, a real H.264 round trip through PyAV, colour drift; `videogen.eval.degrade`); `accuracy` analyses every
clip so degraded and scores it against its spec. ``tools/bench_shapes.py`` is the command.
"""

from __future__ import annotations

import time

import numpy as np

from videogen.data.shapes import ShapesDataset, render, sample_spec
from videogen.eval import degrade
from videogen.eval.shapes import analyze, score, summarize

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
