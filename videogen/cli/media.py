"""The commands over files: ``videogen info`` (what a video is) and ``reconstruct`` (a VAE round trip)."""

from __future__ import annotations

import argparse
import sys

from videogen.cli.common import command_parser, elapsed, examples
from videogen.errors import EXIT_USER_ERROR, VideogenError


def add_info(subparsers, root) -> None:
    p = command_parser(
        subparsers, "info", help="show frames, fps, size, duration and codec of videos and images",
        description="Print frames, fps, size (WxH), duration, codec and container of each video or image.",
        epilog=examples("videogen info clip.mp4", "videogen info outputs/*.mp4 still.png"),
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="video (MP4, MOV, MKV, WebM, GIF) or image files")
    p.set_defaults(run=run_info)


def run_info(args, pipelines=None) -> int:
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


def add_reconstruct(subparsers, root) -> None:
    p = command_parser(
        subparsers, "reconstruct", help="encode and decode a video through a VAE and report PSNR and SSIM",
        description="Encode a video into latents and decode it back through a VAE, streaming (memory does not "
        "grow with the video's length), write the result, and print PSNR and SSIM against the input.",
        epilog=examples("videogen reconstruct clip.mp4 -o clip_vae.mp4 --model models/wan2.1-t2v-1.3b"),
    )
    p.add_argument("input", metavar="IN", help="video file to reconstruct")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="where to write the reconstruction")
    p.add_argument("--model", metavar="DIR", help="model folder with vae/, or a VAE folder (diffusers layout); "
                   "default: the bundled demo model")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--tiled", action=argparse.BooleanOptionalAction, default=None,
                   help="force spatial tiling on or off (default: on for frames above 1280x720 pixels)")
    p.set_defaults(run=run_reconstruct)


def run_reconstruct(args, pipelines=None) -> int:
    from videogen.bundled import default_model_path
    from videogen.reconstruct import reconstruct

    model = args.model if args.model is not None else default_model_path()
    result = reconstruct(args.input, args.output, model=model, overwrite=args.overwrite, tiled=args.tiled)
    for notice in result.notices:
        print(f"note: {notice}")
    print(f"PSNR {result.psnr:.2f} dB, SSIM {result.ssim:.4f} over {result.frames} frames")
    print(f"wrote {result.output} ({result.frames} frames, {result.width}x{result.height}, {result.fps:.6g} fps) "
          f"in {elapsed(args.started)}")
    return 0


COMMANDS = (add_info, add_reconstruct)
