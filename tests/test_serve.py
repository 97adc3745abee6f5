"""`videogen serve`: a real server process on the tiny Wan2.1 folder, real client commands against it."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from videogen.serve import Server, request

PROMPT = "a red circle moving left"
FAST = ["--frames", "9", "--height", "32", "--width", "48", "--steps", "2"]


def _videogen(*args, cwd=None, env=None, **kwargs):
    return subprocess.run([sys.executable, "-m", "videogen", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300, **kwargs)


class _Running:
    """A `videogen serve` child process and its console."""

    def __init__(self, model, sock, log):
        self.model, self.sock, self.log_path = model, sock, log
        self.env = {**os.environ, "VIDEOGEN_SOCKET": str(sock)}
        self.log = open(log, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "videogen", "serve", "--model", str(model)],
                                     env=self.env, stdout=self.log, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 120
        while "serving " not in self.console():
            assert self.proc.poll() is None, self.console()
            assert time.monotonic() < deadline, "the server did not start in 2 min"
            time.sleep(0.2)

    def console(self) -> str:
        return self.log_path.read_text()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=60)
        self.log.close()


@pytest.fixture(scope="module")
def server(tiny_wan_folder, tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve")
    running = _Running(tiny_wan_folder, folder / "s.sock", folder / "server.log")
    yield running
    running.stop()


def test_a_served_generate_writes_the_same_video_as_one_run_here(server, tmp_path):
    from videogen.io import read_video

    args = ["generate", PROMPT, "--model", str(server.model), *FAST, "--seed", "3"]
    served = _videogen(*args, "-o", "served.mp4", cwd=tmp_path, env=server.env)  # relative: the client's folder
    assert served.returncode == 0, served.stderr
    assert "wrote served.mp4 in" in served.stdout and "denoising" in served.stderr  # relayed, progress included
    assert "exit 0" in server.console() and "served.mp4" in server.console()
    here = _videogen(*args, "-o", "here.mp4", "--no-server", cwd=tmp_path, env=server.env)
    assert here.returncode == 0, here.stderr
    assert server.console().count("exit 0") == 1  # --no-server did not ask it
    assert np.array_equal(read_video(tmp_path / "served.mp4").frames, read_video(tmp_path / "here.mp4").frames)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["here.mp4", "served.mp4"]


def test_served_extend_and_interpolate_read_their_inputs_from_the_clients_folder(server, tmp_path):
    from videogen.io import read_video, write_video

    write_video(tmp_path / "in.mp4", np.random.default_rng(0).integers(0, 256, (5, 40, 40, 3), dtype=np.uint8), 8)
    size = ["--model", str(server.model), "--height", "32", "--width", "32", "--steps", "2", "--seed", "4"]
    done = _videogen("extend", "in.mp4", "-p", PROMPT, "-o", "x.mp4", "--frames", "6", "--window", "9", *size,
                     cwd=tmp_path, env=server.env)
    assert done.returncode == 0, done.stderr
    assert "40x40 frames resized to 32x32" in done.stdout and "wrote x.mp4 in" in done.stdout  # its notes, relayed
    done = _videogen("interpolate", "in.mp4", "x.mp4", "-p", PROMPT, "-o", "y.mp4", "--frames", "9", *size,
                     cwd=tmp_path, env=server.env)
    assert done.returncode == 0, done.stderr
    assert [read_video(tmp_path / name).num_frames for name in ("x.mp4", "y.mp4")] == [11, 9]
    assert len(re.findall(r"exit 0 in [\d.]+ s: videogen (extend|interpolate) ", server.console())) == 2


def test_served_user_errors_are_one_line_and_lose_nothing(server, tmp_path):
    precious = tmp_path / "clip.mp4"
    precious.write_bytes(b"precious")
    done = _videogen("generate", PROMPT, "--model", str(server.model), *FAST, "-o", str(precious), env=server.env)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        f"error: {precious}: file exists; refusing to overwrite it (pass --overwrite, or overwrite=True, to replace it)"]
    assert precious.read_bytes() == b"precious"
    done = _videogen("generate", PROMPT, "--model", str(server.model), "--height", "30", "-o", "x.mp4",
                     cwd=tmp_path, env=server.env)
    assert done.returncode == 2 and done.stderr.strip() == "error: height 30 is not a multiple of 16: use 16 or 32"
    assert "Traceback" not in server.console() and server.proc.poll() is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_what_the_server_cannot_do_as_asked_runs_here_with_a_note(server, tmp_path):
    # a LoRA would change the served model for everyone after: declined; here the file is missing, so the
    # command's own check (in this process) refuses it
    done = _videogen("generate", PROMPT, "--model", str(server.model), "--lora", "missing.safetensors",
                     "-o", "x.mp4", cwd=tmp_path, env=server.env)
    assert "note: not using the videogen server (LoRAs" in done.stdout
    assert done.returncode == 2 and done.stderr.strip() == "error: missing.safetensors: no such LoRA file"
    assert "declined (LoRAs" in server.console()


def test_a_client_that_leaves_mid_request_leaves_no_file_and_the_server_goes_on(server, tmp_path):
    slow = subprocess.Popen([sys.executable, "-m", "videogen", "generate", PROMPT, "--model", str(server.model),
                             *FAST[:-1], "100000", "-o", "slow.mp4"], cwd=tmp_path, env=server.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    progress = ""
    while "denoising" not in progress:  # the server is sampling for it
        progress += slow.stderr.read(1)
        assert slow.poll() is None
    slow.send_signal(signal.SIGINT)
    slow.communicate(timeout=60)
    assert slow.returncode == 130
    after = _videogen("generate", PROMPT, "--model", str(server.model), *FAST, "-o", "after.mp4",
                      cwd=tmp_path, env=server.env)
    assert after.returncode == 0, after.stderr
    assert "the client left during" in server.console()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["after.mp4"]  # no half-written slow.mp4


def test_a_second_server_on_the_same_socket_is_refused_before_loading(server):
    done = _videogen("serve", "--model", str(server.model), env=server.env)
    assert done.returncode == 2 and done.stderr.strip() == f"error: a videogen server already runs on {server.sock} " \
        "(stop it first)"
    assert "Loading" not in done.stderr


def test_sigterm_stops_the_server_and_removes_its_socket(server):
    server.stop()
    assert server.proc.returncode == 0 and "stopped after" in server.console()
    assert not server.sock.exists()


# ------------------------------------------------------------------------------ in process: the protocol


def test_a_stale_socket_means_no_server_and_a_new_server_replaces_it(tmp_path, monkeypatch):
    path = tmp_path / "s.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # a socket file nobody listens on: its server died
    monkeypatch.setenv("VIDEOGEN_SOCKET", str(path))
    assert path.is_socket() and request(["generate", "x"], time.perf_counter()) is None
    listener = Server(None, None, path).bind()
    try:
        assert path.is_socket() and oct(path.stat().st_mode & 0o777) == "0o600"  # its user only
    finally:
        listener.close()


def _exchange(server: Server, message: bytes) -> list[dict]:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.sendall(message)
        server.answer(theirs)
        theirs.shutdown(socket.SHUT_WR)
        return [json.loads(line) for line in ours.makefile("r")]


def test_malformed_requests_and_other_versions_are_declined(tmp_path):
    server = Server(None, None, tmp_path / "s.sock")
    assert _exchange(server, b"not json\n") == [{"declined": "malformed request"}]
    request = {"version": "0.0.1", "cwd": str(tmp_path), "argv": ["generate", "x"], "elapsed": 0.1}
    [reply] = _exchange(server, (json.dumps(request) + "\n").encode())
    assert reply["declined"].startswith("the server runs videogen") and reply["declined"].endswith("this is 0.0.1")


def test_a_client_that_sends_nothing_is_dropped(tmp_path, monkeypatch):
    import videogen.serve

    monkeypatch.setattr(videogen.serve, "REQUEST_TIMEOUT", 0.2)
    ours, theirs = socket.socketpair()
    with ours, theirs:
        Server(None, None, tmp_path / "s.sock").answer(theirs)  # returns: the server is free again
        theirs.shutdown(socket.SHUT_WR)
        assert [json.loads(line) for line in ours.makefile("r")] == [{"declined": "malformed request"}]
