"""The ``videogen`` command line: argument parsing over library calls, nothing more.

One module per command family -- `videogen.cli.media` (info, reconstruct), `videogen.cli.training` (train),
`videogen.cli.sampling` (generate, extend, interpolate), `videogen.cli.serving` (serve) -- over the shared
options and checks of `videogen.cli.common`. Each command is a pair: ``add_<name>(subparsers, root)``
declares its arguments and sets ``run``; ``run_<name>(args, pipelines)`` calls the library, taking its
pipeline from the provider it is given. A `VideogenError` becomes one line ``error: ...`` on stderr and exit
status 2; ``--debug`` shows the traceback instead. Anything else escaping a command is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import contextmanager

from videogen import __version__
from videogen.cli import media, sampling, serving, training
from videogen.cli.common import Loader, Parser, examples
from videogen.errors import EXIT_USER_ERROR, VideogenError

# in the order `videogen --help` lists them
COMMANDS = (*media.COMMANDS[:1], *training.COMMANDS, *sampling.COMMANDS, *media.COMMANDS[1:], *serving.COMMANDS)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="videogen",
        description="Text-to-video diffusion: generate, extend and interpolate clips, train models.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=examples("videogen info clip.mp4"),
    )
    parser.add_argument("--version", action="version", version=f"videogen {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for add_fn in COMMANDS:
        add_fn(subparsers, parser)
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
        if args.command in sampling.SERVED and not args.no_server:
            from videogen.serve import request

            code = request(sys.argv[1:] if argv is None else list(argv), started)
            if code is not None:
                return code, args.command
        return args.run(args, Loader()) or 0, args.command
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
# 2-core CPU, of the 12.3 s a cold `videogen generate` with the demo model took.
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


if __name__ == "__main__":
    run()
