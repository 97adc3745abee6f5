"""Timing and peak memory of one call, as the benchmarks under ``tools/`` measure them.

Times are wall and process CPU seconds (CPU time is steadier on a shared machine); functions compared are run
in alternating order, so that load from other processes hits each alike, and the best repeat counts (the run
least disturbed, as ``timeit`` advises). Peak memory is the growth above what the process held when the call
started: on CUDA ``max_memory_allocated``; on a CPU the kernel's peak resident mark (Linux ``VmHWM``, reset just
before the call) or, with ``sampled``, the resident set read every 2 ms (``/proc/self/status``). A peak is best
taken in a fresh process (`in_fresh_process`), where nothing before the call has left memory behind.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch


def timed(fn, device: torch.device | str = "cpu") -> tuple[float, float]:
    """Wall and process CPU seconds of one call of ``fn``."""
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    if cuda:
        torch.cuda.synchronize(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def best_of(fns: dict, repeats: int, device: torch.device | str = "cpu", *, grad: bool = False) -> dict:
    """Best (wall, cpu) seconds of each function: one warm-up each, then ``repeats`` rounds, order alternating."""
    times = {name: [] for name in fns}
    with torch.set_grad_enabled(grad):
        for fn in fns.values():
            fn()
        for r in range(repeats):
            for name in list(fns) if r % 2 == 0 else list(reversed(fns)):
                times[name].append(timed(fns[name], device))
    return {name: (min(t[0] for t in ts), min(t[1] for t in ts)) for name, ts in times.items()}


def resident_kib(field: str = "VmRSS") -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process, in KiB (Linux)."""
    status = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+)", status, re.MULTILINE).group(1))


def peak_growth(fn, device: torch.device | str = "cpu", *, sampled: bool = False):
    """``(fn(), seconds, peak bytes above the start)``; see the module docstring for how the peak is read."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = resident_kib() * 1024
        if not sampled:
            Path("/proc/self/clear_refs").write_text("5")  # reset the peak mark (VmHWM) to the current RSS
    done, peak, out = threading.Event(), [0], []

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], resident_kib() * 1024 - base)
            time.sleep(0.002)

    thread = threading.Thread(target=sample, daemon=True) if sampled and device.type != "cuda" else None
    if thread is not None:
        thread.start()
    try:
        seconds = timed(lambda: out.append(fn()), device)[0]
    finally:
        done.set()
        if thread is not None:
            thread.join()
    if device.type == "cuda":
        return out[0], seconds, torch.cuda.max_memory_allocated(device) - base
    now = resident_kib("VmRSS" if sampled else "VmHWM") * 1024 - base
    return out[0], seconds, max(peak[0], now)


def in_fresh_process(args: list[str], *, release_freed: bool = False) -> dict:
    """Run ``python ARGS`` in a fresh interpreter and return the JSON object its last line of output holds.

    ``release_freed``: glibc's ``MALLOC_MMAP_THRESHOLD_=65536``, so that freed tensors leave the resident set at
    once and it follows live memory. A run that fails raises RuntimeError with the end of its stderr.
    """
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"} if release_freed else None
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:].strip() or "failed")
    return json.loads(done.stdout.strip().splitlines()[-1])
