"""``diffusers``: `VideoPipeline` against diffusers' `WanPipeline` on a random Wan2.1-layout folder; ``latency``:
where ``videogen generate``'s wall time goes. Each run in a fresh process, as docs/benchmarks.md says.

    python tools/bench_pipeline.py diffusers --configs tiny,mid --repeats 3 --steps 10
    python tools/bench_pipeline.py diffusers --configs wan1.3b --device cuda --dtype bfloat16 --steps 50
    python tools/bench_pipeline.py latency --repeats 5 --serve
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's videogen

from videogen.eval.measure import in_fresh_process, peak_growth, timed  # noqa: E402
from videogen.memory import module_bytes  # noqa: E402

PROMPT, NEGATIVE = "a red circle moving left on a black background", "blurry, static"
CONFIGS = {  # TinyWanConfig overrides, (frames, height, width)
    "tiny": ({}, (17, 64, 64)),
    "mid": (dict(text_dim=256, text_layers=4, text_heads=4, vae_base_dim=32, vae_dim_mult=[1, 2, 4, 4], dit_heads=8,
                 dit_head_dim=32, dit_layers=8, dit_ffn_dim=1024), (17, 128, 128)),
    # Wan2.1-T2V-1.3B's DiT and VAE shapes; a small text encoder (5.7B random umT5 weights would time the disk)
    "wan1.3b": (dict(text_dim=4096, text_layers=2, text_heads=64, vae_base_dim=96, vae_dim_mult=[1, 2, 4, 4],
                     dit_heads=12, dit_head_dim=128, dit_layers=30, dit_ffn_dim=8960), (81, 480, 832)),
}
PHASES = r'''
import sys, time, json
start = s = time.perf_counter()
times = {}
def mark(name):
    global s
    times[name], s = time.perf_counter() - s, time.perf_counter()
sys.path.insert(0, sys.argv[1])
import torch; mark("import torch")
from videogen import VideoPipeline; mark("import videogen's pipeline")
pipe = VideoPipeline.from_pretrained(sys.argv[2], device="cpu", dtype=torch.float32); mark("model load")
pipe.generate(sys.argv[4], seed=0, output=sys.argv[3], overwrite=True, progress=False)
mark("generate: T5, denoise, VAE decode, MP4 write")
times["total (child process)"] = time.perf_counter() - start
print(json.dumps(times))
'''


def runner(a, latents):
    """(run(steps) -> uint8 frames, videogen's working-memory estimate or None) for ``a.worker``."""
    import torch

    size, dtype = dict(num_frames=a.frames, height=a.height, width=a.width), getattr(torch, a.dtype)
    if a.worker == "diffusers":
        from diffusers import WanPipeline

        pipe = WanPipeline.from_pretrained(a.folder, torch_dtype=dtype)
        pipe.vae.to(torch.float32)
        pipe.to(a.device).set_progress_bar_config(disable=True)
        return (lambda steps: np.round(pipe(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=steps, **size,
                                            guidance_scale=5.0, latents=latents.to(a.device),
                                            output_type="np").frames[0] * 255).astype(np.uint8)), None
    from videogen import VideoPipeline

    pipe = VideoPipeline.from_pretrained(a.folder, device=a.device, dtype=dtype)

    def run(steps):
        pipe.text_encoder.clear_cache()  # encode the prompts every run, as diffusers does
        return pipe.generate(PROMPT, negative_prompt=NEGATIVE, num_steps=steps, guidance_scale=5.0, latents=latents,
                             progress=False, **size).frames

    weights = sum(map(module_bytes, (pipe.text_encoder.encoder, pipe.transformer, pipe.vae)))
    return run, pipe.estimate_memory(pipe.settings(**size), keep_frames=True).peak - weights


def worker(a) -> None:
    import torch

    latents = torch.randn(1, 16, 1 + (a.frames - 1) // 4, a.height // 8, a.width // 8,
                          generator=torch.Generator().manual_seed(0))
    run, estimate = runner(a, latents)
    run(1)  # warm-up: first-call allocations and kernel selection
    with torch.no_grad():
        frames, seconds, peak = peak_growth(lambda: run(a.steps), a.device, sampled=True)
    np.save(a.frames_out, frames)
    print(json.dumps({"seconds": seconds, "peak": peak, "estimate": estimate}))


def bench_config(name: str, a, scratch: Path) -> str:
    from videogen.testing import TinyWanConfig, build_tiny_wan_folder

    overrides, size = CONFIGS[name]
    size = (a.frames or size[0], a.height or size[1], a.width or size[2])
    folder = build_tiny_wan_folder(scratch / name, TinyWanConfig(**overrides))
    runs = {"diffusers": [], "videogen": []}
    for _ in range(a.repeats):
        for impl in runs:  # alternate, so that load from other processes hits both alike
            cmd = [__file__, "diffusers", "--worker", impl, "--folder", str(folder), "--steps", str(a.steps),
                   "--device", a.device, "--dtype", a.dtype, "--frames-out", str(scratch / f"{impl}.npy"),
                   *(f"--{k}={v}" for k, v in zip(("frames", "height", "width"), size))]
            try:
                runs[impl].append(in_fresh_process(cmd, release_freed=True))  # the resident set follows live memory
            except RuntimeError as e:
                raise SystemExit(f"{impl} worker failed:\n{e}") from None
    diff = np.abs(np.load(scratch / "videogen.npy").astype(int) - np.load(scratch / "diffusers.npy")).mean()
    med = {i: {k: statistics.median(r[k] for r in rs) for k in ("seconds", "peak")} for i, rs in runs.items()}
    best = {i: min(r["seconds"] for r in rs) for i, rs in runs.items()}
    d, v, mib = med["diffusers"], med["videogen"], lambda n: f"{n / 2**20:.0f} MiB"  # noqa: E731
    return (f"| {name} | {' x '.join(map(str, size))} | {d['seconds']:.2f} s | {v['seconds']:.2f} s "
            f"| {v['seconds'] / d['seconds']:.2f} | {best['videogen'] / best['diffusers']:.2f} | {mib(d['peak'])} "
            f"| {mib(v['peak'])} | {v['peak'] / max(d['peak'], 1):.2f} | {mib(runs['videogen'][0]['estimate'])} "
            f"| {diff:.3f} |")


def wall(command: list[str], env: dict | None = None) -> float:
    return timed(lambda: subprocess.run(command, check=True, capture_output=True, env=env))[0]


def served(command: list[str], model: Path, tmp: Path, repeats: int) -> tuple[float, list[float]]:
    """Start-up of ``videogen serve --model MODEL`` (until it listens), then the command's wall times."""
    env, log = {**os.environ, "VIDEOGEN_SOCKET": str(tmp / "s.sock")}, tmp / "serve.log"
    start = time.perf_counter()
    with open(log, "w") as console:
        server = subprocess.Popen([sys.executable, "-m", "videogen", "serve", "--model", str(model)], env=env,
                                  stdout=console, stderr=subprocess.STDOUT)
    try:
        while "serving " not in log.read_text():
            if server.poll() is not None:
                raise SystemExit(f"videogen serve failed:\n{log.read_text()}")
            time.sleep(0.05)
        startup = time.perf_counter() - start
        times = [wall(command, env) for _ in range(repeats)]
    finally:
        server.terminate()
        server.wait()
    return startup, times


def latency(a, tmp: Path) -> list[str]:
    from videogen.bundled import default_model_path

    model = (a.model or default_model_path()).resolve()
    command = [sys.executable, "-m", "videogen", "generate", PROMPT, "--model", str(model), "--seed", "0", "-o",
               str(tmp / "c.mp4"), "--overwrite"]
    alone = {**os.environ, "VIDEOGEN_SOCKET": str(tmp / "none.sock")}  # not a server someone left running
    phases, rows = [], {"`python -m videogen generate` wall": [], "`python -c pass`": []}
    for _ in range(a.repeats):
        phases.append(in_fresh_process(["-c", PHASES, str(ROOT), str(model), str(tmp / "p.mp4"), PROMPT]))
        rows["`python -m videogen generate` wall"].append(wall(command, alone))
        rows["`python -c pass`"].append(wall([sys.executable, "-c", "pass"]))
    rows = {**{name: [p[name] for p in phases] for name in phases[0]}, **rows}
    if a.serve:
        startup, rows["`python -m videogen generate` wall, served"] = served(command, model, tmp, a.repeats)
        rows["`videogen serve` start-up, until it listens"] = [startup]
    return [f"| phase | median of {a.repeats} (s) | runs (s) |", "|---|---:|---|"] + [
        f"| {name} | {statistics.median(v):.2f} | {', '.join(f'{x:.2f}' for x in v)} |" for name, v in rows.items()]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["diffusers", "latency"])
    p.add_argument("--configs", default="tiny,mid", help=f"diffusers: comma-separated, of {', '.join(CONFIGS)}")
    for name in ("frames", "height", "width"):
        p.add_argument(f"--{name}", type=int, help="diffusers: instead of the config's")
    p.add_argument("--steps", type=int, default=10, help="diffusers: sampling steps (latency: the folder's)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--model", type=Path, help="latency: the model folder (default: the bundled demo model)")
    p.add_argument("--serve", action="store_true", help="latency: also time the command against videogen serve")
    for hidden in ("--worker", "--folder", "--frames-out"):  # the worker processes' arguments
        p.add_argument(hidden, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        return worker(a)
    with tempfile.TemporaryDirectory() as tmp:
        if a.what == "latency":
            return print("\n".join(latency(a, Path(tmp))))
        print(f"{a.device}, {a.dtype}, {a.steps} steps, median (and best) of {a.repeats} runs each, alternating\n")
        print("| config | frames x H x W | diffusers | videogen | time ratio | best-of ratio | diffusers peak "
              "| videogen peak | peak ratio | videogen estimate | mean frame diff (0-255) |\n" + "|---" * 11 + "|")
        for name in a.configs.split(","):
            print(bench_config(name, a, Path(tmp)))


if __name__ == "__main__":
    main()
