"""The two halves of image-first text-to-video, and the direction word, measured apart as `videogen.eval.parts`
says; writes ``OUT/report.md`` and ``OUT/report.json`` (issue 7).

    python tools/eval_parts.py --model runs/my-dit/model --out runs/parts
    python tools/eval_parts.py --t2i 6 --i2v 4 --out /tmp/parts              # a quick look
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's videogen

from videogen.bundled import default_model_path  # noqa: E402
from videogen.errors import VideogenError  # noqa: E402
from videogen.eval.parts import evaluate_parts, markdown  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, help="model folder (default: the bundled demo model)")
    p.add_argument("--out", type=Path, default=Path("runs/eval-parts"), help="folder for the reports")
    p.add_argument("--t2i", type=int, default=72, help="captions for text-to-image (the first N of 72)")
    p.add_argument("--i2v", type=int, default=32, help="clips for image-to-video")
    p.add_argument("--word", type=int, default=16, help="corner first frames for the direction-word probe")
    p.add_argument("--new-frames", type=int, default=16, help="frames each image-to-video clip adds")
    p.add_argument("--seed", type=int, default=1000, help="seed of the first sample (sample k uses seed + k)")
    p.add_argument("--steps", type=int, help="sampling steps (default: the model folder's)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: the folder's)")
    p.add_argument("--shift", type=float, help="sampling schedule shift (default: the folder's)")
    args = p.parse_args(argv)
    try:
        model = (args.model or default_model_path()).resolve()
        result = evaluate_parts(model, t2i=args.t2i, i2v=args.i2v, word=args.word, new_frames=args.new_frames,
                                seed=args.seed, num_steps=args.steps, guidance_scale=args.guidance, shift=args.shift)
    except VideogenError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "report.md").write_text(markdown(result))
    print(markdown(result))
    print(f"wrote {args.out / 'report.md'} and {args.out / 'report.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
