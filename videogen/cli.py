"""The ``videogen`` command line: argument parsing over library calls, nothing more.

Each command is a pair: ``add_<name>(subparsers)`` declares its arguments and ``run_<name>(args)`` calls the
library. A `VideogenError` becomes one line ``error: ...`` on stderr and exit status 2; ``--debug`` shows
the traceback instead. Anything else escaping a command is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
import time

from videogen import __version__
from videogen.errors import VideogenError

EXIT_USER_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors in the same one-line form as every other user error."""

    def error(self, message):
        self.exit(EXIT_USER_ERROR, f"error: {message} (see '{self.prog} --help')\n")


def _examples(*lines: str) -> str:
    return "example:\n" + "\n".join(f"  {line}" for line in lines)


# ---------------------------------------------------------------------------------------------- commands


COMMANDS = []  # (add_fn, run_fn), in the order `videogen --help` lists them


def command(add_fn):
    """Register a command: decorate its ``add_*`` function; its ``run_*`` is set by ``add_*`` as default."""
    COMMANDS.append(add_fn)
    return add_fn


# -------------------------------------------------------------------------------------------------- info


@command
def add_info(subparsers):
    p = subparsers.add_parser(
        "info",
        help="show frames, fps, size, duration and codec of videos and images",
        description="Print frames, fps, size (WxH), duration, codec and container of each video or image.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_examples("videogen info clip.mp4", "videogen info outputs/*.mp4 still.png"),
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="video (MP4, MOV, MKV, WebM, GIF) or image files")
    p.set_defaults(run=run_info)


def run_info(args) -> int:
    """One line per file; a bad file among several is reported and the others still shown (exit 2)."""
    from videogen.io import probe_video

    failed = 0
    for path in args.paths:
        try:
            print(probe_video(path).describe(), flush=True)
        except VideogenError as e:
            if args.debug or len(args.paths) == 1:
                raise
            print(f"error: {e}", file=sys.stderr, flush=True)
            failed += 1
    return EXIT_USER_ERROR if failed else 0

# ------------------------------------------------------------------------------------------------ train


@command
def add_train(subparsers):
    p = subparsers.add_parser(
        "train",
        help="train or fine-tune the DiT (full or LoRA) or the VAE",
        description="Train from a YAML config into a run folder: config, log.csv, checkpoints, and at the end "
        "lora.safetensors (LoRA runs) or model/ (full runs). Ctrl-C saves a checkpoint; --resume continues.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_examples(
            "videogen train configs/finetune-lora.yaml --data clips/ --output runs/my-lora",
            "videogen train configs/finetune-lora.yaml --data clips/ --output runs/my-lora --resume",
            "videogen train configs/demo-vae.yaml --data shapes --output runs/vae --set optim.lr=3e-4",
        ),
    )
    p.add_argument("config", metavar="CONFIG.yaml", help="the run's configuration (see configs/)")
    p.add_argument("--data", help="footage folder (videos/images with .txt captions or metadata.csv), or 'shapes'")
    p.add_argument("--output", "-o", required=True, metavar="RUN", help="run folder (new, or existing with --resume)")
    p.add_argument("--max-steps", type=int, help="optimizer steps (overrides train.max_steps)")
    p.add_argument("--resume", action="store_true", help="continue the run folder's latest checkpoint")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    p.set_defaults(run=run_train)


def run_train(args) -> int:
    from videogen.train.config import load_train_config, validate
    from videogen.train.trainer import TrainingInterrupted, train

    start = time.perf_counter()
    cfg = load_train_config(args.config, args.set)
    if args.data == "shapes":
        cfg.data.kind = "shapes"
    elif args.data is not None:
        cfg.data.kind, cfg.data.path = "footage", args.data
    if args.max_steps is not None:
        cfg.train.max_steps = args.max_steps
    try:
        result = train(validate(cfg), args.output, resume=args.resume)
    except TrainingInterrupted as e:
        print(f"interrupted: {e}", file=sys.stderr)
        return 130
    print(f"trained {result.step} steps (last loss {result.loss:.4f}, {result.samples_per_second:.2f} samples/s); "
          f"wrote {result.output} in {elapsed(start)}")
    return 0


# ------------------------------------------------------------------------------------------- reconstruct


@command
def add_reconstruct(subparsers):
    p = subparsers.add_parser(
        "reconstruct",
        help="encode and decode a video through a VAE and report PSNR and SSIM",
        description=(
            "Encode a video into latents and decode it back through a VAE, streaming (memory does not grow "
            "with the video's length), write the result, and print PSNR and SSIM against the input."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_examples("videogen reconstruct clip.mp4 -o clip_vae.mp4 --model models/wan2.1-t2v-1.3b"),
    )
    p.add_argument("input", metavar="IN", help="video file to reconstruct")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="where to write the reconstruction")
    p.add_argument("--model", metavar="DIR", help="model folder with vae/, or a VAE folder (diffusers layout)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--tiled", action=argparse.BooleanOptionalAction, default=None,
                   help="force spatial tiling on or off (default: on for frames above 1280x720 pixels)")
    p.set_defaults(run=run_reconstruct)


def run_reconstruct(args) -> int:
    from videogen.errors import InputError
    from videogen.reconstruct import reconstruct

    if args.model is None:
        raise InputError("no model: pass --model DIR (a model folder with vae/, or a VAE folder)")
    start = time.perf_counter()
    result = reconstruct(args.input, args.output, model=args.model, overwrite=args.overwrite, tiled=args.tiled)
    for notice in result.notices:
        print(f"note: {notice}")
    print(f"PSNR {result.psnr:.2f} dB, SSIM {result.ssim:.4f} over {result.frames} frames")
    print(
        f"wrote {result.output} ({result.frames} frames, {result.width}x{result.height}, {result.fps:.6g} fps) "
        f"in {elapsed(start)}"
    )
    return 0


# ------------------------------------------------------------------------------------------------- frame


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="videogen",
        description="Text-to-video diffusion: generate, extend and interpolate clips, train models.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_examples('videogen info clip.mp4'),
    )
    parser.add_argument("--version", action="version", version=f"videogen {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for add_fn in COMMANDS:
        add_fn(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USER_ERROR
    try:
        return args.run(args) or 0
    except VideogenError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def elapsed(start: float) -> str:
    """A wall time as the CLI prints it: ``3.2 s`` or ``4 min 12 s``."""
    seconds = time.perf_counter() - start
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{int(seconds // 60)} min {int(seconds % 60)} s"


if __name__ == "__main__":
    raise SystemExit(main())
