"""``videogen serve``: load a model once; the sampling commands then skip the start-up (`videogen.serve`).

The server is given the CLI's parser (the root parser this command was added to) and `Held`, the provider that
hands every request the loaded pipeline and says which requests it cannot run as asked; it imports nothing from
the CLI.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from videogen.cli.common import Loader, add_model_options, command_parser, elapsed, examples, parse_device
from videogen.cli.sampling import SERVED
from videogen.errors import VideogenError


class Held:
    """The pipeline provider of a server: the one model it loaded, for the requests that ask for it."""

    def __init__(self, pipe, model_args):
        self.pipe, self.model_args = pipe, model_args  # the model options it was loaded with

    def pipeline(self, args):
        return self.pipe

    def declines(self, args, cwd: str) -> str | None:
        """Why this server does not run the parsed command as asked, or None (then ``args.model`` is absolute)."""
        from videogen.bundled import default_model_path

        if args.command not in SERVED:
            return f"it serves {', '.join(SERVED)}, not {args.command}"
        if args.lora:
            return "LoRAs would change its model for every later request"
        try:
            model = Path(cwd, args.model).resolve() if args.model is not None else default_model_path().resolve()
        except VideogenError as e:  # no bundled model here: the command says so itself, in its own process
            return str(e)
        ours = self.model_args
        if model != Path(ours.model).resolve():
            return f"it runs the model {ours.model}"
        if args.dtype != ours.dtype or args.offload != ours.offload:
            return f"it runs in {ours.dtype}{' with offloading' if ours.offload else ''}"
        if args.device is not None and parse_device(args.device) != self.pipe.device:
            return f"it runs on {self.pipe.device}"
        args.model = str(model)
        return None


def add_serve(subparsers, root) -> None:
    p = command_parser(
        subparsers, "serve", help="keep a model loaded: generate, extend and interpolate then skip the start-up",
        description="Load a model once and answer this user's generate, extend and interpolate commands on a "
        "Unix socket, one at a time, until Ctrl-C. The commands find the server by themselves, and they run "
        "in their own process when it runs another model, device or dtype, or when they ask for a LoRA. "
        "The socket: ${VIDEOGEN_SOCKET}, else $XDG_RUNTIME_DIR/videogen.sock, else "
        "videogen-<uid>/videogen.sock in the temporary folder.",
        epilog=examples("videogen serve &   # the bundled demo model",
                        'videogen generate "a red circle moving left on a black background" -o circle.mp4'),
    )
    add_model_options(p)
    p.set_defaults(run=partial(run_serve, parser=root), lora=[])  # the model as it is: no LoRAs


def run_serve(args, pipelines=None, *, parser) -> int:
    """Serve the sampling commands that ``parser`` (the CLI's) reads, on the model the options name."""
    from videogen.bundled import default_model_path
    from videogen.serve import Server, check_free, socket_path

    args.model = args.model if args.model is not None else str(default_model_path())
    check_free(socket_path())  # before the (slow) model load
    server = Server(parser, Held(Loader().pipeline(args), args))

    def ready():
        print(f"serving {args.model} on {server.path} (loaded in {elapsed(args.started)}; Ctrl-C stops)", flush=True)

    try:
        server.serve_forever(ready)
    except KeyboardInterrupt:
        print(f"stopped after {server.served} request{'' if server.served == 1 else 's'}")
    return 0


COMMANDS = (add_serve,)
