"""The sampling commands: ``videogen generate``, ``extend`` and ``interpolate``.

Each refuses bad values, inputs and outputs before the (slow) model load, then makes one library call on the
pipeline its provider gives (`videogen.cli.common.Loader`, or the one a running ``videogen serve`` holds).
"""

from __future__ import annotations

import secrets
from pathlib import Path

from videogen.atomic import check_target
from videogen.cli.common import (
    add_model_options,
    add_settings_options,
    check_before_loading,
    command_parser,
    default_output_path,
    elapsed,
    examples,
    note,
    settings_overrides,
)

INPUT_HELP = "video (MP4, MOV, MKV, WebM, GIF) or image (PNG, JPEG...)"
IMAGE_FIRST = ("image_first", "image_guidance_scale", "image_guidance_interval", "image_first_frames")


def _seeded(args) -> dict:
    """The settings the options give, with the seed drawn here when none is given (so it can be printed)."""
    overrides = settings_overrides(args)
    overrides.setdefault("seed", secrets.randbelow(2**32))
    return overrides


def _add_dry_run(p) -> None:
    p.add_argument("--dry-run", action="store_true",
                   help="print the memory each phase would need on the device (from the model folder's configs, "
                   "no weights read) and exit")


def _dry_run(args, settings) -> int:
    """The memory estimate of this run, as the loaded pipeline would check it, printed without loading."""
    import torch

    from videogen.footprint import estimate_folder

    report = estimate_folder(args.model, settings, dtype=getattr(torch, args.dtype), offload=args.offload,
                             keep_frames=False).report()
    print(f"{args.model}: {settings.num_frames} frames at {settings.width}x{settings.height}, {args.dtype}"
          f"{', offloaded' if args.offload else ''}\n{report}")
    return 0


def _wrote(path: Path, args, overrides: dict) -> int:
    print(f"wrote {path} in {elapsed(args.started)} (seed {overrides['seed']})")
    return 0


# ------------------------------------------------------------------------------------------ generate


def add_generate(subparsers, root) -> None:
    p = command_parser(
        subparsers, "generate", help="generate a video from a text prompt",
        description="Generate a clip from a prompt with a model folder (diffusers layout, e.g. Wan2.1-T2V). "
        "Settings not given come from the model folder.",
        epilog=examples(
            'videogen generate "a red circle moving left on a black background" -o circle.mp4   # the demo model',
            'videogen generate "a cat surfing" --model ~/models/Wan2.1-T2V-1.3B-Diffusers --dtype bfloat16 '
            "--frames 81 --height 480 --width 832 --seed 7 -o cat.mp4",
        ),
    )
    p.add_argument("prompt", help="what the video shows")
    p.add_argument("-o", "--output", help="output video (.mp4); default ./videogen-<prompt>-<n>.mp4, never overwritten")
    add_model_options(p)
    add_settings_options(p)
    _add_dry_run(p)
    p.set_defaults(run=run_generate)


def run_generate(args, pipelines) -> int:
    overrides = _seeded(args)
    settings = check_before_loading(args, overrides, from_text=True)
    if args.dry_run:
        return _dry_run(args, settings)
    output = Path(args.output) if args.output else default_output_path(args.prompt)
    check_target(output, args.overwrite)
    pipe = pipelines.pipeline(args)
    path = pipe.generate(args.prompt, output=output, overwrite=args.overwrite, attention=args.attention, **overrides)
    return _wrote(path, args, overrides)


# ---------------------------------------------------------------------------------- extend, interpolate


def _add_task_options(p, *, frames_flag: tuple[str, str]) -> None:
    """What extend and interpolate share with generate, plus the frame-conditioning method."""
    p.add_argument("-p", "--prompt", required=True, help="what the video shows")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output video (.mp4)")
    add_model_options(p)
    add_settings_options(p, skip=IMAGE_FIRST, flags={
        "num_frames": frames_flag,
        "fps": ("--fps", "frame rate of the file (default: the input's; the model's for an image)"),
    })
    _add_dry_run(p)
    p.add_argument("--method", choices=["timestep", "replace"],
                   help="how known frames are held: timestep 0 (models trained with frame conditioning) or "
                   "replace (training-free); default: what the model folder declares")


def add_extend(subparsers, root) -> None:
    p = command_parser(
        subparsers, "extend", help="continue a video (or animate an image) with new frames",
        description="Write INPUT's frames as they are, followed by new frames that continue them. An image is "
        "animated (1 + N frames). Long extensions go window by window, each conditioned on the last frames "
        "before it, in constant memory. Frames are centre-cropped and resized to the model's size.",
        epilog=examples(
            'videogen extend clip.mp4 -p "a red circle moving left on a black background" --frames 16 '
            "--model ./demo -o longer.mp4",
            'videogen extend still.png -p "a blue square moving up on a white background" --model ./demo -o moving.mp4',
        ),
    )
    p.add_argument("input", metavar="INPUT", help=INPUT_HELP)
    p.add_argument("--frames", dest="new_frames", type=int, help="number of new frames (default: one window's worth)")
    p.add_argument("--context", type=int, help="frames of the past that condition each window, 4k+1 "
                   "(default: half the window)")
    _add_task_options(p, frames_flag=("--window", "frames sampled at a time, 4k+1 (default: the model's)"))
    p.set_defaults(run=run_extend)


def run_extend(args, pipelines) -> int:
    from videogen.tasks import check_new_frames, open_source

    overrides = _seeded(args)
    settings = check_before_loading(args, overrides)
    if args.dry_run:
        return _dry_run(args, settings)
    if args.new_frames is not None:
        check_new_frames(args.new_frames)
    source = open_source(args.input, args.input)
    check_target(Path(args.output), args.overwrite)
    pipe = pipelines.pipeline(args)
    window = overrides.pop("num_frames", None)
    path = pipe.extend(source, args.prompt, args.new_frames, context=args.context, window=window,
                       method=args.method, output=args.output, overwrite=args.overwrite, attention=args.attention,
                       notify=note, **overrides)
    return _wrote(path, args, overrides)


def add_interpolate(subparsers, root) -> None:
    p = command_parser(
        subparsers, "interpolate", help="generate the frames between two images or videos",
        description="Generate FRAMES frames that begin on START's last frame and end on END's first frame "
        "(both pasted exactly), moving between them as the prompt says.",
        epilog=examples('videogen interpolate a.png b.png -p "a red circle moving left on a black background" '
                        "--frames 17 --model ./demo -o between.mp4"),
    )
    p.add_argument("start", metavar="START", help=f"{INPUT_HELP}; its last frame begins the output")
    p.add_argument("end", metavar="END", help=f"{INPUT_HELP}; its first frame ends the output")
    _add_task_options(p, frames_flag=("--frames", "number of frames, 4k+1, at least 5 (default: the model's)"))
    p.set_defaults(run=run_interpolate)


def run_interpolate(args, pipelines) -> int:
    from videogen.tasks import open_source

    overrides = _seeded(args)
    settings = check_before_loading(args, overrides)
    if args.dry_run:
        return _dry_run(args, settings)
    first, last = open_source(args.start, args.start), open_source(args.end, args.end)
    check_target(Path(args.output), args.overwrite)
    pipe = pipelines.pipeline(args)
    num_frames = overrides.pop("num_frames", None)
    path = pipe.interpolate(first, last, args.prompt, num_frames, method=args.method, output=args.output,
                            overwrite=args.overwrite, attention=args.attention, notify=note, **overrides)
    return _wrote(path, args, overrides)


COMMANDS = (add_generate, add_extend, add_interpolate)
SERVED = ("generate", "extend", "interpolate")  # the commands a running `videogen serve` answers
