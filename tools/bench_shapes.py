"""The shapes world's renderer and analyser speed, and the analyser's accuracy on all 216 combinations x
``--positions`` layouts degraded as `videogen.eval.robustness.CONDITIONS` says (right: all four attributes are).

    python tools/bench_shapes.py                 # docs/benchmarks.md's figures
    python tools/bench_shapes.py --positions 0   # speed only
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's videogen

from videogen.data.shapes import every_combination  # noqa: E402
from videogen.eval.robustness import CONDITIONS, accuracy, throughput  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--positions", type=int, default=2, help="layouts per combination (216 each); 0: speed only")
    parser.add_argument("--clips", type=int, default=2000, help="clips rendered for the throughput figures")
    args = parser.parse_args(argv)
    print("| measure | value |\n|---|---|")
    for name, value in throughput(args.clips):
        print(f"| {name} | {value:.1f} |")
    if args.positions < 1:
        return
    specs = every_combination(args.positions)
    print(f"\n{len(specs)} clips per condition (216 combinations x {args.positions} layouts)\n")
    print("| condition | all correct | colour | shape | direction | background | median min-confidence |")
    print("|---|---|---|---|---|---|---|")
    for name, transform in CONDITIONS.items():
        r, confidence = accuracy(specs, transform)
        cells = " | ".join(f"{100 * r[k]:.1f}%" for k in ("all_correct", "color", "shape", "direction", "background"))
        print(f"| {name} | {cells} | {confidence:.2f} |")


if __name__ == "__main__":
    main()
