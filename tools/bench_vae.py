"""Benchmark videogen's CausalVideoVAE against diffusers' AutoencoderKLWan, side by side, in one run.

Both models hold the same random weights (ours loads diffusers' state dict) and see the same input.
Reported as ratios ours / diffusers:

1. inference encode + decode time (ours parallel, ours streaming; diffusers has one path, its chunked loop);
2. training step time: forward + backward of encode + decode with an MSE loss (ours: the parallel path);
3. peak memory of a streaming decode at 17, 33 and 81 frames: each run in a fresh subprocess, the peak
   resident set size (Linux VmHWM, reset just before the decode) minus the resident size before it.
   Ours consumes `decode_frames` chunk by chunk; diffusers' ``decode`` returns the whole clip. The
   children run with ``MALLOC_MMAP_THRESHOLD_=65536`` so that glibc returns freed tensors to the system
   and the resident size tracks live memory; with glibc's default adaptive threshold, heap fragmentation
   makes the resident size creep up over a long run even when live memory is constant
   (``--default-malloc`` measures that instead).

Times are the median of interleaved repeats (ours, diffusers, ours, ...), so that load from other
processes on a shared machine hits both sides alike. Usage::

    python tools/bench_vae.py                 # mid-size config, a few minutes on a 2-core CPU
    python tools/bench_vae.py --repeats 5 --size 64
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's videogen

# Wan2.1's VAE layout at a third of its width (base_dim 96 -> 32): 4 stages, 2 residual blocks each.
MID_CONFIG = dict(
    base_dim=32, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, temperal_downsample=[False, True, True]
)


def build(seed: int = 0):
    """diffusers' model with random weights, and ours holding the same weights."""
    from diffusers import AutoencoderKLWan

    from videogen.models.vae import CausalVideoVAE

    torch.manual_seed(seed)
    ref = AutoencoderKLWan(**MID_CONFIG).eval()
    ours = CausalVideoVAE(**MID_CONFIG).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours, ref


def clip(frames: int, size: int) -> torch.Tensor:
    return torch.rand(1, 3, frames, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1


# ------------------------------------------------------------------------------------------- timing


def interleaved(fns: dict, repeats: int) -> dict:
    """Median seconds of each function, run in turns after one warm-up each."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def bench_time(ours, ref, frames: int, size: int, repeats: int) -> dict:
    x = clip(frames, size)

    @torch.no_grad()
    def infer_ours(streaming):
        ours.decode(ours.encode(x, streaming=streaming).mode(), streaming=streaming)

    @torch.no_grad()
    def infer_ref():
        ref.decode(ref.encode(x).latent_dist.mode())

    def train_ours():
        ours.zero_grad()
        recon, _ = ours(x)
        (recon - x).pow(2).mean().backward()

    def train_ref():
        ref.zero_grad()
        recon = ref.decode(ref.encode(x).latent_dist.mode()).sample
        (recon - x).pow(2).mean().backward()

    infer_fns = {
        "ours_parallel": lambda: infer_ours(False),
        "ours_streaming": lambda: infer_ours(True),
        "diffusers": infer_ref,
    }
    infer = interleaved(infer_fns, repeats)
    train = interleaved({"ours": train_ours, "diffusers": train_ref}, repeats)
    return {"inference": infer, "training": train}


# ------------------------------------------------------------------------------------------- memory


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory_child(which: str, frames: int, size: int) -> None:
    """In a fresh process: print the peak extra resident memory (MiB) of one streaming decode."""
    ours, ref = build()
    z = torch.randn(1, 16, 1 + (frames - 1) // 4, size // 8, size // 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        # warm up on a short clip so one-time allocations (thread pools, kernels) are not counted
        list(ours.decode_frames(z[:, :, :2])) if which == "ours" else ref.decode(z[:, :, :2])
        baseline = _status_kib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current size
        if which == "ours":
            checksum = sum(float(chunk.sum()) for chunk in ours.decode_frames(z))
        else:
            checksum = float(ref.decode(z).sample.sum())
        peak = _status_kib("VmHWM")
    print(json.dumps({"peak_mib": (peak - baseline) / 1024, "checksum": checksum}))


def bench_memory(frames_list, size: int, default_malloc: bool) -> dict:
    env = dict(os.environ) if default_malloc else {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = {}
    for which in ("ours", "diffusers"):
        for frames in frames_list:
            cmd = [sys.executable, __file__, "--memory-child", which, str(frames), "--memory-size", str(size)]
            result = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
            out[(which, frames)] = json.loads(result.stdout.strip().splitlines()[-1])["peak_mib"]
    return out


# ------------------------------------------------------------------------------------------ report


def report_time(args, times: dict) -> str:
    inf, train = times["inference"], times["training"]
    rows = [
        ("inference encode+decode, parallel path", inf["ours_parallel"], inf["diffusers"]),
        ("inference encode+decode, streaming path", inf["ours_streaming"], inf["diffusers"]),
        ("training step (fwd+bwd encode+decode)", train["ours"], train["diffusers"]),
    ]
    lines = [
        f"Config: AutoencoderKLWan layout {MID_CONFIG}; input 1 x 3 x {args.frames} x {args.size} x {args.size}, "
        f"fp32, {torch.get_num_threads()} threads, median of {args.repeats} interleaved repeats.",
        "",
        "| measure | ours | diffusers | ratio (ours / diffusers) |",
        "|---|---|---|---|",
    ]
    lines += [f"| {what} | {o:.2f} s | {d:.2f} s | {o / d:.2f} |" for what, o, d in rows]
    return "\n".join(lines) + "\n"


def report_memory(args, memory: dict) -> str:
    malloc = "glibc default malloc" if args.default_malloc else "MALLOC_MMAP_THRESHOLD_=65536"
    lines = [
        f"Streaming decode, peak extra resident memory, frames {args.memory_size}x{args.memory_size}, {malloc}.",
        "",
        "| frames | ours | diffusers | ratio (ours / diffusers) |",
        "|---|---|---|---|",
    ]
    for frames in args.memory_frames:
        o, d = memory[("ours", frames)], memory[("diffusers", frames)]
        lines.append(f"| {frames} | {o:.0f} MiB | {d:.0f} MiB | {o / d:.2f} |")
    first, last = args.memory_frames[0], args.memory_frames[-1]
    growth = {w: memory[(w, last)] / memory[(w, first)] for w in ("ours", "diffusers")}
    lines += ["", f"Growth {first} -> {last} frames: ours {growth['ours']:.2f}x, diffusers {growth['diffusers']:.2f}x."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=17, help="clip length for the timings (1 + 4k)")
    parser.add_argument("--size", type=int, default=64, help="frame height and width (multiple of 8)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timing repeats")
    parser.add_argument("--memory-frames", type=int, nargs="+", default=[17, 33, 81])
    parser.add_argument("--memory-size", type=int, default=128, help="frame side for the memory runs")
    parser.add_argument("--default-malloc", action="store_true", help="measure memory with glibc's defaults")
    parser.add_argument("--only", choices=["time", "memory"], help="run one half of the benchmark")
    parser.add_argument("--memory-child", nargs=2, metavar=("WHICH", "FRAMES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child[0], int(args.memory_child[1]), args.memory_size)
        return
    if args.only != "memory":
        print(report_time(args, bench_time(*build(), args.frames, args.size, args.repeats)), flush=True)
    if args.only != "time":
        print(report_memory(args, bench_memory(args.memory_frames, args.memory_size, args.default_malloc)))


if __name__ == "__main__":
    main()
