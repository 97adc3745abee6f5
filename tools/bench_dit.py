"""Benchmark VideoDiT side by side with diffusers' WanTransformer3DModel, and attention memory by backend.

One run measures, on the same random weights and the same input:

1. forward time, ours / diffusers (target <= 1.0);
2. forward + backward time, ours / diffusers;
3. peak memory of one attention call (forward, and forward + backward) over ``--attn-tokens`` tokens for each
   backend that can run here, each in a fresh subprocess (CPU: growth of the kernel's peak-RSS mark VmHWM;
   CUDA: ``max_memory_allocated``).

Timings alternate ours and diffusers within each repeat, so drift in a shared machine hits both, and report
the best of the repeats and the median of per-repeat ratios, in wall and in process CPU time. Model FLOPs
are counted analytically (matmuls only) to give an achieved throughput, and a model FLOPs utilisation when
``--peak-tflops`` is given.

    python tools/bench_dit.py                       # CPU, mid-size config, a few minutes on 2 cores
    python tools/bench_dit.py --preset wan2.1-t2v-1.3b --latent 21x60x104 --device cuda --dtype bf16 \\
        --text-len 512 --peak-tflops 989            # Wan2.1-1.3B at 480x832x81 frames on an H100
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's videogen, not an installed one

from videogen.models.dit import PRESETS, VideoDiT  # noqa: E402

# Mid-size: 8 heads x 64 = 512 wide, 4 blocks, the umT5 text width; latents of 17 frames at 256 x 256 pixels.
MID = dict(num_attention_heads=8, attention_head_dim=64, ffn_dim=2048, num_layers=4, text_dim=4096, freq_dim=256)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# ------------------------------------------------------------------------------------------- helpers


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device) -> tuple[float, float]:
    """Wall seconds and this process's CPU seconds of one call (CPU time is steadier on a shared machine)."""
    _sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    _sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def model_flops(config: dict, tokens: int, text_len: int) -> float:
    """Matmul FLOPs of one forward (2 per multiply-add): projections, feed-forward and both attentions."""
    d = config["num_attention_heads"] * config["attention_head_dim"]
    per_block = (
        2 * tokens * 4 * d * d  # self-attention q, k, v, out
        + 2 * tokens * 2 * d * d  # cross-attention q, out
        + 2 * text_len * 2 * d * d  # cross-attention k, v over the text
        + 2 * tokens * 2 * d * config["ffn_dim"]  # feed-forward
        + 4 * tokens * tokens * d  # self-attention scores and weighted sum
        + 4 * tokens * text_len * d  # cross-attention scores and weighted sum
    )
    return config["num_layers"] * per_block + 2 * text_len * config["text_dim"] * d


# ---------------------------------------------------------------------------------- model comparison


def build_pair(config: dict, device: torch.device, dtype: torch.dtype):
    """diffusers' model with its random init, and ours holding the very same weights.

    Below fp32 both load from one saved folder with ``torch_dtype``, as a user loads a checkpoint, so each
    keeps its fp32 modules (norms, modulation tables, timestep MLP) in fp32.
    """
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    reference = WanTransformer3DModel(**config)
    if dtype == torch.float32:
        ours = VideoDiT(**config)
        ours.load_state_dict(reference.state_dict(), strict=True)
        return ours.to(device), reference.to(device)
    with tempfile.TemporaryDirectory() as folder:
        reference.save_pretrained(folder)
        ours = VideoDiT.from_pretrained(folder, torch_dtype=dtype)
        reference = WanTransformer3DModel.from_pretrained(folder, torch_dtype=dtype)
    return ours.to(device), reference.to(device)


def make_inputs(config: dict, latent: tuple[int, int, int], text_len: int, device, dtype):
    g = torch.Generator().manual_seed(1)
    t, h, w = latent
    latents = torch.randn(1, config.get("in_channels", 16), t, h, w, generator=g).to(device, dtype)
    text = torch.randn(1, text_len, config["text_dim"], generator=g).to(device, dtype)
    return latents, torch.tensor([500.0], device=device), text


def _forward_fns(ours, reference, inputs):
    latents, timestep, text = inputs
    return {
        "ours": lambda: ours(latents, timestep, text),
        "diffusers": lambda: reference(latents, timestep, text, return_dict=False)[0],
    }


def _backward_fns(ours, reference, inputs):
    def step(fn, model):
        model.zero_grad(set_to_none=True)
        fn().float().square().mean().backward()

    fns = _forward_fns(ours, reference, inputs)
    return {"ours": lambda: step(fns["ours"], ours), "diffusers": lambda: step(fns["diffusers"], reference)}


def compare(fns: dict, repeats: int, device: torch.device, grad: bool) -> dict[str, dict]:
    """Per clock (wall, cpu): best-of-repeats seconds of ours and diffusers and their ratio (the run least
    disturbed by other load, as ``timeit`` advises), and the median of per-repeat ratios with its range.

    One warm-up each, then each repeat times both back to back (order alternating), so the ratio of a pair
    compares runs that saw the same load on a shared machine.
    """
    times, peaks = {name: [] for name in fns}, {}
    with torch.set_grad_enabled(grad):
        for fn in fns.values():
            fn()
        for r in range(repeats):
            for name in list(fns) if r % 2 == 0 else list(reversed(fns)):
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                times[name].append(_timed(fns[name], device))
                if device.type == "cuda":
                    peaks[name] = max(peaks.get(name, 0), torch.cuda.max_memory_allocated(device))
    result = {}
    for i, clock in enumerate(("wall", "cpu")):
        ours, theirs = ([t[i] for t in times[name]] for name in ("ours", "diffusers"))
        ratios = [a / b for a, b in zip(ours, theirs)]
        result[clock] = dict(
            ours=min(ours),
            diffusers=min(theirs),
            best_ratio=min(ours) / min(theirs),
            ratio=statistics.median(ratios),
            low=min(ratios),
            high=max(ratios),
        )
    result["peak_bytes"] = peaks  # CUDA only: the most memory either model's call held
    return result


def max_difference(ours, reference, inputs) -> float:
    with torch.no_grad():
        fns = _forward_fns(ours, reference, inputs)
        a, b = fns["ours"]().float(), fns["diffusers"]().float()
    return ((a - b).abs().max() / b.abs().max()).item()


# ------------------------------------------------------------------------------- attention memory


def _rss_kib(field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process from /proc, in KiB (Linux)."""
    status = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+)", status, re.MULTILINE).group(1))


def attention_worker(args) -> None:
    """In a fresh process: one attention call; print its peak memory above the inputs' as JSON.

    CPU: the kernel's peak-RSS mark is reset after the inputs exist (``/proc/self/clear_refs``), so the
    peak counts the attention alone, not the import of torch. CUDA: ``max_memory_allocated``.
    """
    from videogen.models.attention import attention

    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    g = torch.Generator().manual_seed(0)
    shape = (1, args.attn_tokens, args.attn_heads, args.attn_dim)
    q, k, v = (torch.randn(*shape, generator=g).to(device, dtype).requires_grad_(args.backward) for _ in range(3))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark to the current RSS
        base = _rss_kib("VmRSS") * 1024
    def run():
        out = attention(q, k, v, backend=args.worker)
        if args.backward:
            out.float().square().sum().backward()

    seconds, _ = _timed(run, device)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        peak = _rss_kib("VmHWM") * 1024 - base
    print(json.dumps({"backend": args.worker, "peak_bytes": peak, "seconds": seconds}))


def attention_memory(args, backward: bool) -> list[dict]:
    from videogen.models.attention import available_backends

    probe = torch.empty(1, device=args.device, dtype=DTYPES[args.dtype])
    rows = []
    for name, problem in available_backends(probe).items():
        if problem is None and backward and name == "math" and args.attn_tokens > 8192:
            problem = "O(L^2) saved activations, several times its forward peak (spares the shared machine)"
        if problem is not None:
            rows.append({"backend": name, "skipped": problem})
            continue
        cmd = [sys.executable, __file__, "--worker", name, *_passthrough(args), *(["--backward"] if backward else [])]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            rows.append({"backend": name, "skipped": out.stderr.strip().splitlines()[-1]})
        else:
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows


def _passthrough(args) -> list[str]:
    return [
        f"--device={args.device}",
        f"--dtype={args.dtype}",
        f"--attn-tokens={args.attn_tokens}",
        f"--attn-heads={args.attn_heads}",
        f"--attn-dim={args.attn_dim}",
        *([f"--threads={args.threads}"] if args.threads else []),
    ]


# ---------------------------------------------------------------------------------------------- main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), help="a VideoDiT preset instead of the mid-size config")
    p.add_argument("--layers", type=int, help="override the number of blocks")
    p.add_argument("--latent", default="5x32x32", help="latent T'xH'xW' (default 5x32x32: 17 frames, 256x256)")
    p.add_argument("--text-len", type=int, default=512, help="text tokens (Wan pads prompts to 512)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, help="torch CPU threads (1 is steadiest on a shared machine)")
    p.add_argument("--backend", help="our model's attention backend (default: automatic; diffusers uses sdpa)")
    p.add_argument("--peak-tflops", type=float, help="the device's peak matmul TFLOP/s, for FLOPs utilisation")
    p.add_argument("--attn-tokens", type=int, default=16384)
    p.add_argument("--attn-heads", type=int, default=2)
    p.add_argument("--attn-dim", type=int, default=64)
    p.add_argument("--skip-model", action="store_true", help="only the attention memory table")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--backward", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def report_model(args) -> None:
    config = dict(PRESETS[args.preset]) if args.preset else dict(MID)
    config.setdefault("text_dim", 4096)
    config.setdefault("freq_dim", 256)
    if args.layers:
        config["num_layers"] = args.layers
    latent = tuple(int(s) for s in args.latent.lower().split("x"))
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    ours, reference = build_pair(config, device, dtype)
    ours.set_attention_backend(args.backend)
    inputs = make_inputs(config, latent, args.text_len, device, dtype)
    tokens = latent[0] * (latent[1] // 2) * (latent[2] // 2)
    flops = model_flops(config, tokens, args.text_len)
    print(f"config: {config}, latent {latent} ({tokens} tokens), text {args.text_len}, {args.device} {args.dtype}")
    print(f"our attention backend: {args.backend or 'automatic'}")
    print(f"max relative difference ours vs diffusers: {max_difference(ours, reference, inputs):.2e}")
    print("| measure | clock | ours, best (s) | diffusers, best (s) | ratio of bests | median ratio of pairs "
          "| pair range | ours TFLOP/s | MFU |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, fns, grad, mult in (
        ("forward", _forward_fns(ours, reference, inputs), False, 1),
        ("forward + backward", _backward_fns(ours, reference, inputs), True, 3),
    ):
        result = compare(fns, args.repeats, device, grad)
        peaks = result.pop("peak_bytes")
        for clock, t in result.items():
            if clock == "cpu" and device.type == "cuda":
                continue  # host CPU time says nothing about GPU work
            tflops = mult * flops / t["ours"] / 1e12 if clock == "wall" else None
            rate = "-" if tflops is None else f"{tflops:.3f}"
            mfu = f"{tflops / args.peak_tflops:.1%}" if tflops and args.peak_tflops else "-"
            print(
                f"| {label} | {clock} | {t['ours']:.3f} | {t['diffusers']:.3f} | {t['best_ratio']:.3f} "
                f"| {t['ratio']:.3f} | {t['low']:.2f}-{t['high']:.2f} | {rate} | {mfu} |"
            )
        if device.type == "cuda":
            memory = ", ".join(f"{name} {peak / 2**30:.2f} GiB" for name, peak in peaks.items())
            print(f"peak GPU memory, {label}: {memory}")


def report_attention(args) -> None:
    shape = f"{args.attn_tokens} tokens, {args.attn_heads} heads x {args.attn_dim}"
    print(f"\nattention over {shape}, {args.device} {args.dtype}; peak memory above the inputs")
    print("| backend | forward (MiB) | forward (s) | forward + backward (MiB) | forward + backward (s) |")
    print("|---|---|---|---|---|")
    forward, backward = attention_memory(args, False), attention_memory(args, True)
    for f, b in zip(forward, backward):
        if "skipped" in f:
            print(f"| {f['backend']} | not run: {f['skipped']} | - | - | - |")
        else:
            print(f"| {f['backend']} | {_cell(f)} | {_cell(b)} |")


def _cell(row: dict) -> str:
    if "skipped" in row:
        return f"not run: {row['skipped']} | -"
    return f"{row['peak_bytes'] / 2**20:.0f} | {row['seconds']:.2f}"


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        return attention_worker(args)
    threads = torch.get_num_threads()
    print(f"machine: {platform.machine()}, torch {torch.__version__}, {threads} threads, repeats {args.repeats}")
    if not args.skip_model:
        report_model(args)
    report_attention(args)


if __name__ == "__main__":
    main()
