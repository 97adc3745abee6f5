"""Where the wall time of ``videogen generate`` goes, on a random model at the demo sizes (issue 7).

The model is built from configs/demo-vae.yaml and configs/demo-dit.yaml (random weights, the shipped
sizes: 0.8 M-parameter VAE, 9.1 M DiT, 4.3 M T5) and saved with `VideoPipeline.save_pretrained`, with the
demo's generation defaults (17 frames, 64x64, 20 UniPC steps, guidance 5). Then, each in a fresh
interpreter, ``--repeats`` times:

- the phases of ``run_generate`` timed one by one (imports, model load, T5, denoising, VAE decode, MP4
  write), in a child process that does what the command does;
- the whole command, ``python -m videogen generate PROMPT --model DIR``, wall time from outside;
- ``python -c pass``: the interpreter alone;
- with ``--serve``, the same command again while ``videogen serve`` holds the model (its start-up timed
  once, until it listens): what a warm process saves.

Usage (from the repository root)::

    python tools/bench_generate_latency.py --repeats 3
    python tools/bench_generate_latency.py --repeats 3 --model assets/demo-model   # a trained folder instead
    python tools/bench_generate_latency.py --repeats 5 --model assets/demo-model --serve
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROMPT = "a red circle moving left on a black background"

PHASES = r'''
import sys, time, json
start = time.perf_counter()
sys.path.insert(0, sys.argv[1])
times, s = {}, time.perf_counter()
def mark(name):
    global s
    times[name] = time.perf_counter() - s
    s = time.perf_counter()
import torch; mark("import torch")
import videogen.cli
videogen.cli.without_unused_packages().__enter__()  # as the console script runs a command
import videogen.pipeline; mark("import videogen.cli + pipeline")
import diffusers.models.modeling_utils, diffusers.schedulers; mark("import diffusers")
import transformers.models.umt5.modeling_umt5; mark("import transformers")
import videogen.models.dit, videogen.models.vae; mark("import videogen.models (diffusers model classes)")
from videogen.pipeline import VideoPipeline
from videogen.io import VideoWriter
pipe = VideoPipeline.from_pretrained(sys.argv[2], device="cpu", dtype=torch.float32); mark("model load")
req = pipe.make_request(sys.argv[4], seed=0)
noise = pipe._initial_latents(req, None)
cond, uncond = pipe._encode_prompts(req); mark("T5 (prompt, negative prompt)")
clean = pipe.denoise(req, noise, cond, uncond); mark("denoise")
chunks = list(pipe.decode_frames(clean)); mark("VAE decode")
with VideoWriter(sys.argv[3], req.fps, overwrite=True) as w:
    for c in chunks:
        w.write(c)
mark("MP4 write")
times["total (child process)"] = time.perf_counter() - start
print(json.dumps(times))
'''


def build_model(folder: Path) -> Path:
    """A random model at the demo sizes, saved as the pipeline saves (no training: sizes and code path only)."""
    from videogen.train.config import load_train_config
    from videogen.train.models import _vae, load_components, save_new_pipeline

    vae_cfg = load_train_config(ROOT / "configs" / "demo-vae.yaml")
    dit_cfg = load_train_config(ROOT / "configs" / "demo-dit.yaml")
    _vae(vae_cfg).save_pretrained(folder / "vae-only" / "vae")
    dit_cfg.model.vae = str(folder / "vae-only")
    model = save_new_pipeline(dit_cfg, load_components(dit_cfg), folder / "model")
    defaults = json.loads((model / "videogen.json").read_text())
    defaults.update(sampler="unipc", frame_conditioning=True)
    (model / "videogen.json").write_text(json.dumps(defaults, indent=2))
    return model


def wall(command: list[str], env: dict | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def served(model: Path, tmp: Path, repeats: int) -> tuple[float, list[float]]:
    """Start-up of ``videogen serve --model MODEL`` (until it listens), then the client command's wall times."""
    env = {**os.environ, "VIDEOGEN_SOCKET": str(tmp / "s.sock")}
    log = tmp / "serve.log"
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
        times = [wall(generate_command(model, tmp / "s.mp4"), env) for _ in range(repeats)]
    finally:
        server.terminate()
        server.wait()
    if log.read_text().count("exit 0") != repeats:
        raise SystemExit(f"the server did not answer every request:\n{log.read_text()}")
    return startup, times


def generate_command(model: Path, output: Path) -> list[str]:
    return [sys.executable, "-m", "videogen", "generate", PROMPT, "--model", str(model), "--seed", "0", "-o",
            str(output), "--overwrite"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--model", type=Path, help="a model folder to time (default: a random one at the demo sizes)")
    p.add_argument("--serve", action="store_true", help="also time the command against a running videogen serve")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = args.model.resolve() if args.model else build_model(tmp)
        phases, cli, bare = [], [], []
        alone = {**os.environ, "VIDEOGEN_SOCKET": str(tmp / "none.sock")}  # not a server someone left running
        for _ in range(args.repeats):
            out = subprocess.run([sys.executable, "-c", PHASES, str(ROOT), str(model), str(tmp / "p.mp4"), PROMPT],
                                 cwd=ROOT, check=True, capture_output=True, text=True).stdout
            phases.append(json.loads(out.strip().splitlines()[-1]))
            cli.append(wall(generate_command(model, tmp / "c.mp4"), alone))
            bare.append(wall([sys.executable, "-c", "pass"]))
        startup, warm = served(model, tmp, args.repeats) if args.serve else (None, [])
    print(f"| phase | median of {args.repeats} (s) | runs (s) |\n|---|---:|---|")
    for name in phases[0]:
        values = [ph[name] for ph in phases]
        print(f"| {name} | {statistics.median(values):.2f} | {', '.join(f'{v:.2f}' for v in values)} |")
    rows = [("`python -m videogen generate` wall", cli), ("`python -c pass`", bare)]
    if args.serve:
        rows += [("`videogen serve` start-up, until it listens", [startup]),
                 ("`python -m videogen generate` wall, served", warm)]
    for name, values in rows:
        print(f"| {name} | {statistics.median(values):.2f} | {', '.join(f'{v:.2f}' for v in values)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
