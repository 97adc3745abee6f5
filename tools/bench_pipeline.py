"""End-to-end text-to-video: videogen's VideoPipeline against diffusers' WanPipeline, side by side.

Both load the same random Wan2.1-layout folder (built here with `videogen.testing`), start from the same
initial latents and run the same prompt, steps, guidance and scheduler. Each measurement runs in a fresh
subprocess so that memory figures do not leak between runs; the implementations alternate, and the median
of ``--repeats`` runs is reported, with the ratio ours / diffusers.

- time: wall time of one ``generate`` (prompt encoding, sampling, VAE decoding to uint8 frames in memory),
  after a 1-step warm-up run;
- peak: the largest growth of the process's memory during that call over its size when the call starts
  (resident set sampled every 2 ms on the CPU, with glibc's mmap threshold fixed so that freed tensors
  leave the resident set; ``torch.cuda.max_memory_allocated`` on a GPU), i.e. the working memory on top
  of the loaded weights;
- estimate: videogen's own pre-flight estimate of that working memory (`videogen.memory`), to see how
  far off it is.

Usage (from the repository root)::

    python tools/bench_pipeline.py                     # tiny and mid configs on the CPU
    python tools/bench_pipeline.py --configs mid --repeats 5
    python tools/bench_pipeline.py --configs wan1.3b --device cuda --dtype bfloat16 \\
        --frames 81 --height 480 --width 832 --steps 50   # Wan2.1-1.3B shapes, random weights (GPU)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's videogen

PROMPT = "a red circle moving left on a black background"
NEGATIVE = "blurry, static"

# config name -> (TinyWanConfig keyword overrides, default (frames, height, width))
CONFIGS = {
    "tiny": ({}, (17, 64, 64)),
    "mid": (dict(text_dim=256, text_layers=4, text_heads=4, vae_base_dim=32, vae_dim_mult=[1, 2, 4, 4], dit_heads=8,
                 dit_head_dim=32, dit_layers=8, dit_ffn_dim=1024), (17, 128, 128)),
    # Wan2.1-T2V-1.3B's DiT and VAE shapes (random weights); the text encoder stays small (umT5-XXL's 5.7B
    # parameters of random weights would only measure the disk)
    "wan1.3b": (dict(text_dim=4096, text_layers=2, text_heads=64, vae_base_dim=96, vae_dim_mult=[1, 2, 4, 4],
                     dit_heads=12, dit_head_dim=128, dit_layers=30, dit_ffn_dim=8960), (81, 480, 832)),
}


def peak_growth(fn, device: str):
    """``fn()`` and the peak growth of this process's memory while it ran (CUDA: allocated; CPU: the resident set,
    sampled every 2 ms)."""
    import psutil
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        out = fn()
        torch.cuda.synchronize()
        return out, torch.cuda.max_memory_allocated() - base
    process, done, peak = psutil.Process(), threading.Event(), [0]
    base = process.memory_info().rss

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss - base)
            time.sleep(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        out = fn()
    finally:
        done.set()
        thread.join()
    return out, max(peak[0], process.memory_info().rss - base)


def _run_diffusers(args, latents):
    import torch
    from diffusers import WanPipeline

    dtype = getattr(torch, args.dtype)
    pipe = WanPipeline.from_pretrained(args.folder, torch_dtype=dtype)
    pipe.vae.to(torch.float32)
    pipe.to(args.device)
    pipe.set_progress_bar_config(disable=True)

    def run(steps):
        out = pipe(PROMPT, negative_prompt=NEGATIVE, num_frames=args.frames, height=args.height, width=args.width,
                   num_inference_steps=steps, guidance_scale=5.0, latents=latents.to(args.device), output_type="np")
        return np.round(out.frames[0] * 255).astype(np.uint8)

    return run, None


def _run_videogen(args, latents):
    import torch

    from videogen import VideoPipeline

    pipe = VideoPipeline.from_pretrained(args.folder, device=args.device, dtype=getattr(torch, args.dtype))

    def run(steps):
        pipe.text_encoder.clear_cache()  # encode the prompts every run, as diffusers does (no cache hit)
        return pipe.generate(PROMPT, negative_prompt=NEGATIVE, num_frames=args.frames, height=args.height,
                             width=args.width, num_steps=steps, guidance_scale=5.0, latents=latents,
                             progress=False).frames

    estimate = pipe.estimate_memory(pipe.settings(num_frames=args.frames, height=args.height, width=args.width),
                                    keep_frames=True)
    weights = sum(p.numel() * p.element_size() for m in (pipe.text_encoder.encoder, pipe.transformer, pipe.vae)
                  for p in [*m.parameters(), *m.buffers()])
    return run, estimate.peak - weights


def worker(args) -> None:
    import torch

    shape = (1, 16, 1 + (args.frames - 1) // 4, args.height // 8, args.width // 8)
    latents = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    run, estimate = (_run_videogen if args.worker == "videogen" else _run_diffusers)(args, latents)
    run(1)  # warm-up: first-call allocations and kernel selection
    start = time.perf_counter()
    with torch.no_grad():
        frames, peak = peak_growth(lambda: run(args.steps), args.device)
    np.save(args.frames_out, frames)
    print(json.dumps({"seconds": time.perf_counter() - start, "peak": peak, "estimate": estimate}))


def _measure(impl: str, folder: Path, args, size, frames_out: Path) -> dict:
    frames, height, width = size
    cmd = [sys.executable, __file__, "--worker", impl, "--folder", str(folder), "--frames", str(frames),
           "--height", str(height), "--width", str(width), "--steps", str(args.steps), "--device", args.device,
           "--dtype", args.dtype, "--frames-out", str(frames_out)]
    # A fixed mmap threshold makes glibc map every tensor over 64 KiB on its own and unmap it when freed, so
    # the resident set follows live memory (the default threshold adapts upwards and keeps freed memory).
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if out.returncode != 0:
        raise SystemExit(f"{impl} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_config(name: str, args, scratch: Path) -> dict:
    from videogen.testing import TinyWanConfig, build_tiny_wan_folder

    overrides, size = CONFIGS[name]
    size = (args.frames or size[0], args.height or size[1], args.width or size[2])
    folder = build_tiny_wan_folder(scratch / name, TinyWanConfig(**overrides))
    runs = {"diffusers": [], "videogen": []}
    for _ in range(args.repeats):
        for impl in runs:  # alternate, so that load from other processes hits both alike
            runs[impl].append(_measure(impl, folder, args, size, scratch / f"{impl}.npy"))
    ours, theirs = np.load(scratch / "videogen.npy"), np.load(scratch / "diffusers.npy")
    med = {impl: {k: statistics.median(r[k] for r in rs) for k in ("seconds", "peak")} for impl, rs in runs.items()}
    best = {impl: min(r["seconds"] for r in rs) for impl, rs in runs.items()}
    return {
        "config": name, "size": size, "steps": args.steps, "runs": runs, "median": med, "best": best,
        "estimate": runs["videogen"][0]["estimate"],
        "frame_diff": float(np.abs(ours.astype(int) - theirs.astype(int)).mean()),
    }


def _mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"


def report(results: list[dict], args) -> str:
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, device {args.device}, {args.dtype}, "
        f"median of {args.repeats} runs per implementation, alternating.",
        "",
        "| config | frames x H x W | steps | diffusers time | videogen time | time ratio | best-of ratio "
        "| diffusers peak | videogen peak | peak ratio | videogen estimate | mean frame diff (0-255) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        d, v = r["median"]["diffusers"], r["median"]["videogen"]
        lines.append(
            f"| {r['config']} | {' x '.join(map(str, r['size']))} | {r['steps']} | {d['seconds']:.2f} s "
            f"| {v['seconds']:.2f} s | {v['seconds'] / d['seconds']:.2f} "
            f"| {r['best']['videogen'] / r['best']['diffusers']:.2f} | {_mib(d['peak'])} | {_mib(v['peak'])} "
            f"| {v['peak'] / max(d['peak'], 1):.2f} | {_mib(r['estimate'])} | {r['frame_diff']:.3f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="tiny,mid", help=f"comma-separated: {', '.join(CONFIGS)}")
    parser.add_argument("--frames", type=int)
    parser.add_argument("--height", type=int)
    parser.add_argument("--width", type=int)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--worker", choices=["videogen", "diffusers"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--frames-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    with tempfile.TemporaryDirectory() as scratch:
        results = [bench_config(name, args, Path(scratch)) for name in args.configs.split(",")]
    print(report(results, args))


if __name__ == "__main__":
    main()
