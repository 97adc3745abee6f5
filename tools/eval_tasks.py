"""Extend, interpolate and image-to-video on a model through the CLI a user runs, as `videogen.eval.tasks` says
(issue 8).

    python tools/eval_tasks.py --model assets/demo-model --cases 16 --device cpu
    python tools/eval_tasks.py --tiny --size 32 --window 9 --steps 2 --cases 1   # the machinery only
"""

import argparse
import json
import platform
import sys
import tempfile
from dataclasses import fields
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's videogen

from videogen.eval.tasks import TaskOptions, evaluate_tasks  # noqa: E402


def main(argv=None) -> int:
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
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.tiny:
            from videogen.testing import build_tiny_wan_folder

            args.model = build_tiny_wan_folder(Path(tmp) / "tiny")
        if args.model is None:
            raise SystemExit("error: pass --model FOLDER or --tiny")
        opts = TaskOptions(**{f.name: getattr(args, f.name) for f in fields(TaskOptions)})
        results = evaluate_tasks(opts, args.cases, Path(tmp) / "work")
    results["machine"] = f"{platform.machine()} {platform.processor() or ''}".strip()
    results["settings"] = {k: str(v) for k, v in vars(args).items()}
    print(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
