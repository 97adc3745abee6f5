"""Where the wall time of ``videogen generate`` goes, on the bundled demo model or another folder (issue 7).

Each in a fresh interpreter, ``--repeats`` times:

- the phases of a generation through the library, timed one by one in a child process: importing torch and
  videogen, `VideoPipeline.from_pretrained`, and one `VideoPipeline.generate` to an MP4 (prompt encoding,
  denoising, decoding and writing);
- the whole command, ``python -m videogen generate PROMPT --model DIR``, wall time from outside;
- ``python -c pass``: the interpreter alone;
- with ``--serve``, the same command again while ``videogen serve`` holds the model (its start-up timed
  once, until it listens): what a warm process saves.

    python tools/bench_generate_latency.py --repeats 5 --serve             # the bundled model
    python tools/bench_generate_latency.py --repeats 3 --model runs/my-dit/model
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
sys.path.insert(0, str(ROOT))  # this checkout's videogen

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
from videogen import VideoPipeline; mark("import videogen's pipeline (diffusers, transformers)")
pipe = VideoPipeline.from_pretrained(sys.argv[2], device="cpu", dtype=torch.float32); mark("model load")
pipe.generate(sys.argv[4], seed=0, output=sys.argv[3], overwrite=True, progress=False)
mark("generate: T5, denoise, VAE decode, MP4 write")
times["total (child process)"] = time.perf_counter() - start
print(json.dumps(times))
'''


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
    p.add_argument("--model", type=Path, help="the model folder to time (default: the bundled demo model)")
    p.add_argument("--serve", action="store_true", help="also time the command against a running videogen serve")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        from videogen.bundled import default_model_path

        model = (args.model or default_model_path()).resolve()
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
