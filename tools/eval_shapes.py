"""Prompt adherence of a shapes-world model by pixel analysis of the MP4s it writes, as `videogen.eval.adherence`
says; writes the clips, ``OUT/report.md`` and ``OUT/report.json`` (issue 7).

    python tools/eval_shapes.py --out runs/eval-shapes               # the bundled model, 72 captions
    python tools/eval_shapes.py --model DIR --out /tmp/e --quick     # 6 captions, 2 PSNR clips
    python tools/eval_shapes.py --caption "a red circle moving up on a gray background" --repeat 8 --lora L.safetensors
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's videogen

from videogen.bundled import default_model_path  # noqa: E402
from videogen.errors import VideogenError  # noqa: E402
from videogen.eval.adherence import captions, evaluate, markdown  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, help="model folder (default: the bundled demo model)")
    p.add_argument("--out", type=Path, default=Path("runs/eval-shapes"), help="folder for clips and reports")
    p.add_argument("--quick", action="store_true", help="6 captions and 2 PSNR clips instead of 72 and 8")
    p.add_argument("--timed", type=int, default=3, help="clips generated (and timed) through the CLI subprocess")
    p.add_argument("--seed", type=int, default=1000, help="seed of the first clip (clip k uses seed + k)")
    p.add_argument("--psnr-clips", type=int, help="rendered held-out clips for the VAE PSNR (default 8, quick 2)")
    p.add_argument("--caption", action="append", default=[], help="evaluate these captions instead (repeatable)")
    p.add_argument("--repeat", type=int, default=1, help="clips per caption, each with its own seed")
    p.add_argument("--lora", action="append", default=[], metavar="FILE[:SCALE]", help="merge a LoRA first")
    args = p.parse_args(argv)
    try:
        model = (args.model or default_model_path()).resolve()
        prompts = [c for c in (args.caption or captions(args.quick)) for _ in range(args.repeat)]
        result = evaluate(model, args.out, prompts, timed=args.timed, seed=args.seed, loras=args.lora,
                          psnr_clips=args.psnr_clips or (2 if args.quick else 8))
    except VideogenError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    (args.out / "report.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "report.md").write_text(markdown(result))
    print(markdown(result))
    print(f"wrote {args.out / 'report.md'} and {args.out / 'report.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
