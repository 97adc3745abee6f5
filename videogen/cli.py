"""The ``videogen`` command line: argument parsing over library calls, nothing more.

Each command is a pair: ``add_<name>(subparsers)`` declares its arguments and ``run_<name>(args)`` calls the
library. A `VideogenError` becomes one line ``error: ...`` on stderr and exit status 2; ``--debug`` shows
the traceback instead. Anything else escaping a command is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from videogen import __version__
from videogen.errors import VideogenError

EXIT_USER_ERROR = 2
SERVED = ("generate", "extend", "interpolate")  # the commands a running `videogen serve` answers


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

    start = args.started
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
    budget = f", train.max_minutes reached before step {cfg.train.max_steps}" if result.out_of_time else ""
    print(f"trained {result.step} steps (last loss {result.loss:.4f}, {result.samples_per_second:.2f} samples/s"
          f"{budget}); wrote {result.output} in {elapsed(start)}")
    return 0


# -------------------------------------------------------------------------------------------- generate

DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


@command
def add_generate(subparsers):
    p = subparsers.add_parser(
        "generate",
        help="generate a video from a text prompt",
        description="Generate a clip from a prompt with a model folder (diffusers layout, e.g. Wan2.1-T2V). "
        "Settings not given come from the model folder.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_examples(
            'videogen generate "a red circle moving left on a black background" -o circle.mp4   # the demo model',
            'videogen generate "a cat surfing" --model ~/models/Wan2.1-T2V-1.3B-Diffusers --dtype bfloat16 '
            "--frames 81 --height 480 --width 832 --seed 7 -o cat.mp4",
        ),
    )
    p.add_argument("prompt", help="what the video shows")
    p.add_argument("-o", "--output", help="output video (.mp4); default ./videogen-<prompt>-<n>.mp4, never overwritten")
    add_model_options(p)
    p.add_argument("--frames", type=int, help="number of frames, 4k+1 (Wan2.1: 81)")
    p.add_argument("--image-first", action=argparse.BooleanOptionalAction, default=None,
                   help="sample the first frame alone, then the clip from it (models trained for it; "
                   "default: what the model folder declares)")
    p.add_argument("--image-guidance", type=float,
                   help="guidance scale of --image-first's first frame (default: the folder's, else --guidance)")
    p.add_argument("--image-first-frames", type=int, metavar="N",
                   help="frames --image-first's first pass samples together before it keeps the first, so the "
                   "image is drawn with its motion in view; 4k+1 (default: the folder's, else 1)")
    add_sampling_options(p)
    p.set_defaults(run=run_generate)


def add_model_options(p) -> None:
    """The options that say which model folder runs where: shared by every command that samples."""
    p.add_argument("--model", help="model folder: model_index.json with transformer/, vae/, text_encoder/, "
                   "tokenizer/, scheduler/ (a Wan2.1-T2V diffusers checkpoint or one saved by videogen); "
                   "default: the bundled demo model")
    p.add_argument("--device", help="cuda, cuda:1, cpu... (default: cuda if available)")
    p.add_argument("--dtype", choices=list(DTYPES), default="float32",
                   help="transformer and text encoder precision (the VAE stays float32); bfloat16 on GPUs")
    p.add_argument("--attention", help="attention backend: xformers, sdpa, chunked or math (default: automatic)")
    p.add_argument("--offload", action="store_true", help="keep each model on the CPU except while it works")


def add_sampling_options(p, *, fps_help: str = "frame rate of the file (Wan2.1: 16)") -> None:
    """Size, sampler and output options shared by every command that samples (defaults: the model folder's)."""
    p.add_argument("--height", type=int, help="height in pixels, a multiple of 16 (Wan2.1: 480)")
    p.add_argument("--width", type=int, help="width in pixels, a multiple of 16 (Wan2.1: 832)")
    p.add_argument("--fps", type=float, help=fps_help)
    p.add_argument("--steps", type=int, help="sampling steps (Wan2.1: 50)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale; <= 1 turns it off (Wan2.1: 5)")
    p.add_argument("--guidance-interval", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   help="apply guidance only at noise levels from LOW to HIGH (0 clean, 1 pure noise), the "
                   "conditional branch alone elsewhere (default: the folder's, else 0 1)")
    p.add_argument("--shift", type=float, help="timestep shift (Wan2.1: 3 at 480p, 5 at 720p)")
    p.add_argument("--sampler", choices=["unipc", "euler", "dpm++"], help="default: the model folder's scheduler")
    p.add_argument("--seed", type=int, help="random seed; the same seed gives the same video (default: random)")
    p.add_argument("--negative-prompt", help="what to steer away from")
    p.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    p.add_argument("--lora", action="append", default=[], metavar="FILE[:SCALE]",
                   help="merge a LoRA (lora.safetensors from videogen train, or another diffusers-format "
                        "Wan LoRA) at SCALE (default 1); repeatable")
    p.add_argument("--no-server", action="store_true",
                   help="run in this process even when 'videogen serve' is running")


def check_sampling_args(args) -> None:
    """Refuse bad sizes and a missing model before the (slow) model load; no --model means the bundled one."""
    from videogen.bundled import default_model_path
    from videogen.errors import InputError
    from videogen.pipeline import check_size

    if args.model is None:
        args.model = default_model_path()
    for name in ("height", "width"):
        if getattr(args, name) is not None:
            check_size(name, getattr(args, name))
    for lora, _ in _loras(args):
        if not lora.is_file():
            raise InputError(f"{lora}: no such LoRA file")


def _loras(args) -> list:
    from videogen.train.lora import parse_lora_arg

    return [parse_lora_arg(text) for text in args.lora]


def load_pipeline(args):
    """The `VideoPipeline` the model options name (under `videogen serve`, the one it holds)."""
    if getattr(args, "pipeline", None) is not None:
        return args.pipeline

    import torch

    from videogen.pipeline import VideoPipeline
    from videogen.train.lora import apply_lora

    pipe = VideoPipeline.from_pretrained(
        args.model, device=parse_device(args.device), dtype=getattr(torch, DTYPES[args.dtype]), offload=args.offload
    )
    for lora, scale in _loras(args):
        apply_lora(pipe, lora, scale)
    return pipe


def sampling_settings(args, seed: int) -> dict:
    """The pipeline keywords the sampling options give."""
    return dict(
        negative_prompt=args.negative_prompt, height=args.height, width=args.width, num_steps=args.steps,
        guidance_scale=args.guidance, guidance_interval=args.guidance_interval, shift=args.shift,
        sampler=args.sampler, seed=seed, fps=args.fps,
        overwrite=args.overwrite, attention=args.attention,
    )


def default_output_path(prompt: str, folder: Path = Path(".")) -> Path:
    """``videogen-<first words of the prompt>-<n>.mp4`` with the first n not taken: never overwrites."""
    slug = "-".join(re.findall(r"[a-z0-9]+", prompt.lower()))[:40].strip("-") or "video"
    n = 1
    while (folder / f"videogen-{slug}-{n}.mp4").exists():
        n += 1
    return folder / f"videogen-{slug}-{n}.mp4"


def parse_device(name: str | None):
    import torch

    from videogen.errors import InputError, ResourceError

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"unknown device {name!r} (cpu, cuda, cuda:1...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ResourceError(f"device {name!r} asked for, but CUDA is not available on this machine")
    return device


def run_generate(args) -> int:
    from videogen.pipeline import check_num_frames, check_output

    start = args.started
    # 1. refuse bad values before the (slow) model load
    check_sampling_args(args)
    if args.frames is not None:
        check_num_frames(args.frames)
    if args.image_first_frames is not None:
        check_num_frames(args.image_first_frames, name="image-first frames")
    output = check_output(args.output or default_output_path(args.prompt), args.overwrite)
    # 2. load and generate
    pipe = load_pipeline(args)
    seed = args.seed if args.seed is not None else secrets.randbelow(2**32)
    path = pipe.generate(args.prompt, num_frames=args.frames, image_first=args.image_first,
                         image_guidance_scale=args.image_guidance, image_first_frames=args.image_first_frames,
                         output=output, **sampling_settings(args, seed))
    print(f"wrote {path} in {elapsed(start)} (seed {seed})")
    return 0


# --------------------------------------------------------------------------------- extend, interpolate

INPUT_HELP = "video (MP4, MOV, MKV, WebM, GIF) or image (PNG, JPEG...)"


def _add_task_options(p) -> None:
    """What extend and interpolate share with generate, plus the frame-conditioning method."""
    p.add_argument("-p", "--prompt", required=True, help="what the video shows")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output video (.mp4)")
    add_model_options(p)
    add_sampling_options(p, fps_help="frame rate of the file (default: the input's; the model's for an image)")
    p.add_argument("--method", choices=["timestep", "replace"],
                   help="how known frames are held: timestep 0 (models trained with frame conditioning) or "
                   "replace (training-free); default: what the model folder declares")


@command
def add_extend(subparsers):
    p = subparsers.add_parser(
        "extend",
        help="continue a video (or animate an image) with new frames",
        description="Write INPUT's frames as they are, followed by new frames that continue them. An image is "
        "animated (1 + N frames). Long extensions go window by window, each conditioned on the last frames "
        "before it, in constant memory. Frames are centre-cropped and resized to the model's size.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_examples(
            'videogen extend clip.mp4 -p "a red circle moving left on a black background" --frames 16 '
            "--model ./demo -o longer.mp4",
            'videogen extend still.png -p "a blue square moving up on a white background" --model ./demo -o moving.mp4',
        ),
    )
    p.add_argument("input", metavar="INPUT", help=INPUT_HELP)
    p.add_argument("--frames", type=int, help="number of new frames (default: one window's worth)")
    p.add_argument("--context", type=int, help="frames of the past that condition each window, 4k+1 "
                   "(default: half the window)")
    p.add_argument("--window", type=int, help="frames sampled at a time, 4k+1 (default: the model's)")
    _add_task_options(p)
    p.set_defaults(run=run_extend)


def run_extend(args) -> int:
    from videogen.pipeline import check_num_frames, check_output
    from videogen.tasks import check_new_frames, open_source

    start = args.started
    # 1. refuse bad values and inputs before the (slow) model load
    check_sampling_args(args)
    if args.frames is not None:
        check_new_frames(args.frames)
    if args.window is not None:
        check_num_frames(args.window)
    source = open_source(args.input, args.input)
    check_output(args.output, args.overwrite)
    # 2. load and extend
    pipe = load_pipeline(args)
    seed = args.seed if args.seed is not None else secrets.randbelow(2**32)
    path = pipe.extend(source, args.prompt, args.frames, context=args.context, window=args.window,
                       method=args.method, output=args.output, notify=_note, **sampling_settings(args, seed))
    print(f"wrote {path} in {elapsed(start)} (seed {seed})")
    return 0


@command
def add_interpolate(subparsers):
    p = subparsers.add_parser(
        "interpolate",
        help="generate the frames between two images or videos",
        description="Generate FRAMES frames that begin on START's last frame and end on END's first frame "
        "(both pasted exactly), moving between them as the prompt says.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_examples('videogen interpolate a.png b.png -p "a red circle moving left on a black background" '
                         "--frames 17 --model ./demo -o between.mp4"),
    )
    p.add_argument("start", metavar="START", help=f"{INPUT_HELP}; its last frame begins the output")
    p.add_argument("end", metavar="END", help=f"{INPUT_HELP}; its first frame ends the output")
    p.add_argument("--frames", type=int, help="number of frames, 4k+1, at least 5 (default: the model's)")
    _add_task_options(p)
    p.set_defaults(run=run_interpolate)


def run_interpolate(args) -> int:
    from videogen.pipeline import check_num_frames, check_output
    from videogen.tasks import open_source

    start = args.started
    # 1. refuse bad values and inputs before the (slow) model load
    check_sampling_args(args)
    if args.frames is not None:
        check_num_frames(args.frames)
    first, last = open_source(args.start, args.start), open_source(args.end, args.end)
    check_output(args.output, args.overwrite)
    # 2. load and interpolate
    pipe = load_pipeline(args)
    seed = args.seed if args.seed is not None else secrets.randbelow(2**32)
    path = pipe.interpolate(first, last, args.prompt, args.frames, method=args.method, output=args.output,
                            notify=_note, **sampling_settings(args, seed))
    print(f"wrote {path} in {elapsed(start)} (seed {seed})")
    return 0


def _note(message: str) -> None:
    print(f"note: {message}", flush=True)


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
    p.add_argument("--model", metavar="DIR", help="model folder with vae/, or a VAE folder (diffusers layout); "
                   "default: the bundled demo model")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--tiled", action=argparse.BooleanOptionalAction, default=None,
                   help="force spatial tiling on or off (default: on for frames above 1280x720 pixels)")
    p.set_defaults(run=run_reconstruct)


def run_reconstruct(args) -> int:
    from videogen.bundled import default_model_path
    from videogen.reconstruct import reconstruct

    model = args.model if args.model is not None else default_model_path()
    start = args.started
    result = reconstruct(args.input, args.output, model=model, overwrite=args.overwrite, tiled=args.tiled)
    for notice in result.notices:
        print(f"note: {notice}")
    print(f"PSNR {result.psnr:.2f} dB, SSIM {result.ssim:.4f} over {result.frames} frames")
    print(
        f"wrote {result.output} ({result.frames} frames, {result.width}x{result.height}, {result.fps:.6g} fps) "
        f"in {elapsed(start)}"
    )
    return 0


# ------------------------------------------------------------------------------------------------- serve


@command
def add_serve(subparsers):
    p = subparsers.add_parser(
        "serve",
        help="keep a model loaded: generate, extend and interpolate then skip the start-up",
        description="Load a model once and answer this user's generate, extend and interpolate commands on a "
        "Unix socket, one at a time, until Ctrl-C. The commands find the server by themselves, and they run "
        "in their own process when it runs another model, device or dtype, or when they ask for a LoRA. "
        f"The socket: ${{VIDEOGEN_SOCKET}}, else $XDG_RUNTIME_DIR/videogen.sock, else "
        "videogen-<uid>/videogen.sock in the temporary folder.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_examples("videogen serve &   # the bundled demo model",
                         'videogen generate "a red circle moving left on a black background" -o circle.mp4'),
    )
    add_model_options(p)
    p.set_defaults(run=run_serve)


def run_serve(args) -> int:
    from videogen.bundled import default_model_path
    from videogen.serve import Server, check_free, socket_path

    start = args.started
    args.model = args.model if args.model is not None else default_model_path()
    args.lora = []  # the model as it is: requests with LoRAs run in their own process
    check_free(socket_path())  # before the (slow) model load
    server = Server(load_pipeline(args), args)

    def ready():
        print(f"serving {args.model} on {server.path} (loaded in {elapsed(start)}; Ctrl-C stops)", flush=True)

    try:
        server.serve_forever(ready)
    except KeyboardInterrupt:
        print(f"stopped after {server.served} request{'' if server.served == 1 else 's'}")
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
    return _dispatch(argv)[0]


def _dispatch(argv: list[str] | None) -> tuple[int, str | None]:
    """Run the command ``argv`` names: its exit status, and the command (None when none was given)."""
    started = time.perf_counter()
    parser = build_parser()
    args = parser.parse_args(argv)
    args.started = started  # commands report their time from here: the imports a user waits for count
    if args.command is None:
        parser.print_help()
        return EXIT_USER_ERROR, None
    try:
        if args.command in SERVED and not args.no_server:
            from videogen.serve import request

            code = request(sys.argv[1:] if argv is None else list(argv), started)
            if code is not None:
                return code, args.command
        return args.run(args) or 0, args.command
    except VideogenError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR, args.command
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130, args.command


# Commands that read inputs and write files or a report. Once one has returned, its outputs are renamed into place
# and closed, and the interpreter's teardown (freeing torch's and the libraries' state: ~3 s of a 15 s
# `videogen generate` on a 2-core CPU, measured) has nothing left to do for the user.
QUICK_EXIT = {"generate", "extend", "interpolate", "reconstruct", "info"}


# Installed packages that diffusers and transformers import when present but no videogen command uses: scipy
# (diffusers' schedulers import scipy.stats for beta-sigma schedules, transformers' losses scipy.optimize for
# object detection). scikit-image, the tests' SSIM reference, installs it. Importing it takes 1.1-1.3 s on a
# 2-core CPU, of the 12.3 s a cold `videogen generate` with the demo model took (docs/benchmarks.md).
UNUSED_PACKAGES = ("scipy",)


@contextmanager
def without_unused_packages():
    """Hide UNUSED_PACKAGES from the libraries while a command runs, as if they were not installed.

    ``sys.modules[name] = None`` makes ``importlib.util.find_spec(name)`` (the libraries' availability checks)
    answer None and ``import name`` raise ImportError, which their guarded imports expect. Only before the
    libraries are imported: one that has already seen the package installed would import it unguarded.
    """
    if any(name in sys.modules for name in ("diffusers", "transformers", *UNUSED_PACKAGES)):
        yield
        return
    for name in UNUSED_PACKAGES:
        sys.modules[name] = None
    try:
        yield
    finally:
        for name in UNUSED_PACKAGES:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


def run() -> None:
    """The console script: `main`, then, after a file-writing command, exit without the interpreter's teardown."""
    with without_unused_packages():
        code, command = _dispatch(sys.argv[1:])
    if command in QUICK_EXIT:
        import logging

        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise SystemExit(code)


def elapsed(start: float) -> str:
    """A wall time as the CLI prints it: ``3.2 s`` or ``4 min 12 s``."""
    seconds = time.perf_counter() - start
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{int(seconds // 60)} min {int(seconds % 60)} s"


if __name__ == "__main__":
    run()
