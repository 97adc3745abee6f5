"""`videogen serve`: keep a model loaded, so that each sampling command pays for its sampling, not its start-up.

On a CPU most of a one-off ``videogen generate`` with the demo model is start-up: importing torch, diffusers
and transformers, and loading the model. That is about 10 s of 12 s on 2 cores (docs/benchmarks.md). A
server pays it once and then answers its user's sampling commands (generate, extend, interpolate).

- **Private.** The server listens on a Unix socket, and only its user may connect (`socket_path`). The
  files a request writes are that user's in any case.
- **Found, not configured.** A sampling command first looks for the socket (`request`). If a server is
  there, the command sends it its arguments and working directory and prints what the server prints, as
  the server prints it. It then exits with the server's status. The output is written by the server,
  atomically as always, with relative paths taken from the command's working directory.
- **Declines what it cannot do as asked.** That is another model, device, dtype or offloading; LoRAs (merging
  them would change the model for every later request); or another videogen version. The command then
  runs in its own process, as if no server were running. ``--no-server`` forces that.
- **One request at a time**, in the order they come: the CPU (or the GPU) is the limit anyway.

The protocol is JSON lines. The client sends one: ``{"version", "cwd", "argv", "elapsed"}``. The server
then sends ``{"out": text}`` and ``{"err": text}`` to print, and ends with ``{"exit": status}`` or
``{"declined": reason}``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import signal
import socket
import stat
import sys
import tempfile
import time
import traceback
from pathlib import Path

from videogen import __version__
from videogen.errors import EXIT_USER_ERROR, InputError, ResourceError, VideogenError

SOCKET_ENV = "VIDEOGEN_SOCKET"  # where the server listens and the commands look; default `socket_path`
REQUEST_TIMEOUT = 10.0  # seconds a connected client has to send its request line


# ------------------------------------------------------------------------------------------------ socket


def socket_path() -> Path:
    """``$VIDEOGEN_SOCKET``; else ``videogen.sock`` in ``$XDG_RUNTIME_DIR`` (a directory only its user can
    enter); else ``videogen-<uid>/videogen.sock`` under the temporary directory, made private on first use."""
    if os.environ.get(SOCKET_ENV):
        return Path(os.environ[SOCKET_ENV]).expanduser()
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "videogen.sock"
    return _private_root() / "videogen.sock"


def _private_root() -> Path:
    user = os.getuid() if hasattr(os, "getuid") else os.getlogin()
    return Path(tempfile.gettempdir()) / f"videogen-{user}"


def _private_folder(folder: Path) -> None:
    """Create ``folder`` readable by its user only, or check that an existing one is theirs alone."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = folder.stat()
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise ResourceError(f"{folder}: not a private folder of this user (mode {stat.filemode(info.st_mode)}); "
                            f"set {SOCKET_ENV} to a socket path in one")


def _connect(path: Path) -> socket.socket | None:
    """A connection to the server on ``path``; None when no server answers there (none, or a stale socket)."""
    try:
        if not path.is_socket():
            return None
    except OSError:  # a folder this user may not enter: not their server
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError:  # refused: the server that made it has died
        sock.close()
        return None
    return sock


def check_free(path: Path) -> None:
    """Refuse ``path`` when a server already answers there."""
    live = _connect(path)
    if live is not None:
        live.close()
        raise InputError(f"a videogen server already runs on {path} (stop it first)")


def _send(sock: socket.socket, **message) -> None:
    sock.sendall((json.dumps(message) + "\n").encode())


# ------------------------------------------------------------------------------------------------ client


def request(argv: list[str], started: float) -> int | None:
    """Have the running server execute the sampling command ``argv``, printing what it prints.

    Returns the command's exit status, or None when no server runs or it declined (with a note why): the
    caller then runs the command itself.
    """
    sock = _connect(socket_path()) if hasattr(socket, "AF_UNIX") else None  # no Unix sockets: no server
    if sock is None:
        return None
    with sock, sock.makefile("r", encoding="utf-8") as replies:
        _send(sock, version=__version__, cwd=os.getcwd(), argv=argv, elapsed=time.perf_counter() - started)
        for line in replies:
            message = json.loads(line)
            if "out" in message:
                sys.stdout.write(message["out"])
                sys.stdout.flush()
            elif "err" in message:
                sys.stderr.write(message["err"])
                sys.stderr.flush()
            elif "exit" in message:
                return int(message["exit"])
            elif "declined" in message:
                print(f"note: not using the videogen server ({message['declined']}); running here", flush=True)
                return None
    raise ResourceError("the videogen server stopped in the middle of the request (its console says why)")


# ------------------------------------------------------------------------------------------------ server


class _Relay(io.TextIOBase):
    """A text stream whose writes go to the client as ``{key: text}`` lines (stdout or stderr)."""

    def __init__(self, sock: socket.socket, key: str):
        self.sock, self.key = sock, key

    @property
    def encoding(self) -> str:  # progress bars draw with Unicode blocks, as on the client's terminal
        return "utf-8"

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if text:
            _send(self.sock, **{self.key: text})
        return len(text)


class _ClientGone(Exception):
    """The client closed its end (Ctrl-C, or killed) while its request ran."""


class Server:
    """A loaded pipeline answering sampling commands on a Unix socket, one at a time.

    Args:
        parser: the argparse parser that reads a request's command line (the CLI's); a parsed command
            carries ``run(args, provider)`` and ``debug``, as argparse's ``set_defaults`` gives them.
        provider: what the commands take their pipeline from (``provider.pipeline(args)``), and which says
            why it declines a command it cannot run as asked (``provider.declines(args, cwd)``: a reason or None).
        path: the socket; default `socket_path`.
    """

    def __init__(self, parser, provider, path: Path | None = None):
        self.parser, self.provider = parser, provider
        self.path = Path(path) if path is not None else socket_path()
        self.served = 0

    # 1. the socket

    def bind(self) -> socket.socket:
        """Listen on ``self.path``, replacing a stale socket; refuse if a server already answers there."""
        if self.path.parent == _private_root():
            _private_folder(self.path.parent)
        check_free(self.path)
        if self.path.is_socket():
            self.path.unlink()  # left by a server that died
        elif self.path.exists():
            raise InputError(f"{self.path}: exists and is not a socket")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        umask = os.umask(0o177)  # the socket is born rw for its user only: no window where others connect
        try:
            listener.bind(str(self.path))
        except OSError as e:
            listener.close()
            raise ResourceError(f"cannot listen on {self.path}: {e.strerror}") from None
        finally:
            os.umask(umask)
        listener.listen(8)
        return listener

    def serve_forever(self, ready=None) -> None:
        """Answer requests until interrupted (Ctrl-C or SIGTERM); the socket is removed on the way out.

        ``ready`` is called once the socket listens.
        """
        listener = self.bind()
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            if ready is not None:
                ready()
            while True:
                conn, _ = listener.accept()
                with conn:
                    self.answer(conn)
        finally:
            signal.signal(signal.SIGTERM, previous)
            listener.close()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    # 2. one request

    def answer(self, conn: socket.socket) -> None:
        """Read one request from ``conn``, run it or decline it, and log a line on the server's console."""
        try:
            conn.settimeout(REQUEST_TIMEOUT)  # a client that connects and says nothing must not hold the server
            with conn.makefile("r", encoding="utf-8") as lines:
                message = json.loads(lines.readline())
            conn.settimeout(None)
            argv, cwd = list(message["argv"]), str(message["cwd"])
            version, elapsed = message["version"], float(message["elapsed"])
        except (ValueError, KeyError, TypeError, OSError):
            with contextlib.suppress(OSError):
                _send(conn, declined="malformed request")
            return
        started = time.perf_counter() - elapsed
        try:
            args, why = self._parse(argv, cwd, version)
            if why is not None:
                _send(conn, declined=why)
                _log(f"declined ({why}): videogen {shlex.join(argv)}")
                return
            code = self._run(args, conn, cwd, started)
            _send(conn, exit=code)
        except (_ClientGone, BrokenPipeError, ConnectionResetError):
            _log(f"the client left during: videogen {shlex.join(argv)}")
            return
        except KeyboardInterrupt:
            with contextlib.suppress(OSError):
                _send(conn, err="error: the videogen server was stopped\n")
                _send(conn, exit=130)
            raise
        self.served += 1
        _log(f"exit {code} in {time.perf_counter() - started:.1f} s: videogen {shlex.join(argv)}")

    def _parse(self, argv: list[str], cwd: str, version: str):
        """The parsed command and None, or None and why this server does not run it."""
        if version != __version__:
            return None, f"the server runs videogen {__version__}, this is {version}"
        try:
            with contextlib.redirect_stderr(io.StringIO()):
                args = self.parser.parse_args(argv)
        except SystemExit:  # the client parsed the same arguments; a difference means another videogen
            return None, "it cannot parse this command"
        why = self.provider.declines(args, cwd)
        return (None, why) if why is not None else (args, None)

    def _run(self, args, conn: socket.socket, cwd: str, started: float) -> int:
        """Run the command in ``cwd`` with its output relayed: its exit status (2 for a user error, 1 for a bug)."""
        args.started = started
        here = os.getcwd()
        out, err = _Relay(conn, "out"), _Relay(conn, "err")
        try:
            os.chdir(cwd)
        except OSError as e:  # the client's working directory is gone, or closed to this user
            print(f"error: cannot work in {cwd}: {e.strerror}", file=err)
            return EXIT_USER_ERROR
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                return args.run(args, self.provider) or 0
        except VideogenError as e:
            if args.debug:
                traceback.print_exc(file=err)
            print(f"error: {e}", file=err)
            return EXIT_USER_ERROR
        except (BrokenPipeError, ConnectionResetError) as e:
            raise _ClientGone() from e
        except Exception:  # a bug: the client sees the traceback, the server goes on
            traceback.print_exc(file=err)
            return 1
        finally:
            os.chdir(here)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _log(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)
