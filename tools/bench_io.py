"""Video I/O speed and quality against diffusers in one run: `write_video` at CRF 23 and 18 against `encode_video`
(CRF 23); `read_video` against a plain PyAV loop (MP4) and `load_video` (GIF). Median wall time, size, PSNR.

    python tools/bench_io.py --frames 33 --height 480 --width 832
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # measure this checkout, not an installed copy

from videogen.metrics import psnr  # noqa: E402


def moving_pattern(t: int, h: int, w: int) -> np.ndarray:
    """Smooth colour waves plus a moving disc: easy to compress, but with motion and edges."""
    tt = np.arange(t, dtype=np.float32)[:, None, None] / t
    y = np.arange(h, dtype=np.float32)[None, :, None] / h
    x = np.arange(w, dtype=np.float32)[None, None, :] / w
    disc = ((x - 0.2 - 0.6 * tt) ** 2 + (y - 0.5) ** 2 < 0.02).astype(np.float32)
    r, g, b = 128 + 90 * np.sin(np.pi * (2 * x + tt)), 128 + 90 * np.cos(np.pi * (2 * y - tt)), 60 + 160 * disc
    return np.clip(np.stack(np.broadcast_arrays(r, g, b), axis=-1), 0, 255).round().astype(np.uint8)  # (T, H, W, 3)


def timed(fn, repeats: int) -> tuple[float, object]:
    """Median wall time of `repeats` calls, and the last result."""
    times = [(time.perf_counter(), fn(), time.perf_counter()) for _ in range(repeats)]
    return statistics.median(end - start for start, _, end in times), times[-1][1]


def plain_pyav_read(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])])


def bench(clip: np.ndarray, fps: int, folder: Path, repeats: int) -> list[tuple]:
    """(case, median seconds, ratio to its reference, bytes or None, PSNR or None) per row."""
    import torch
    from diffusers.utils import load_video
    from diffusers.utils.export_utils import encode_video

    from videogen.io import read_video, write_video

    ref_path = folder / "diffusers.mp4"
    ref, _ = timed(lambda: encode_video(torch.from_numpy(clip), fps, str(ref_path)), repeats)
    rows = [("write MP4, diffusers encode_video (crf 23)", ref, 1.0, ref_path.stat().st_size,
             psnr(read_video(ref_path).frames, clip))]
    for crf in (23, 18):
        path = folder / f"ours_crf{crf}.mp4"
        t, _ = timed(lambda: write_video(path, clip, fps, crf=crf, overwrite=True), repeats)
        rows.append((f"write MP4, videogen write_video (crf {crf})", t, t / ref, path.stat().st_size,
                     psnr(read_video(path).frames, clip)))
    mp4 = write_video(folder / "read.mp4", clip, fps, overwrite=True)
    ref, _ = timed(lambda: plain_pyav_read(mp4), repeats)
    ours, video = timed(lambda: read_video(mp4), repeats)
    rows += [("read MP4, plain PyAV loop", ref, 1.0, None, None),
             ("read MP4, videogen read_video", ours, ours / ref, None, None)]
    gif = write_video(folder / "read.gif", clip, fps, overwrite=True)
    ref, _ = timed(lambda: [np.asarray(im.convert("RGB")) for im in load_video(str(gif))], repeats)
    ours, video = timed(lambda: read_video(gif), repeats)
    return rows + [("read GIF, diffusers load_video", ref, 1.0, gif.stat().st_size, None),
                   ("read GIF, videogen read_video", ours, ours / ref, None, psnr(video.frames, clip))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, default in (("frames", 33), ("height", 480), ("width", 832), ("fps", 16), ("repeats", 3)):
        parser.add_argument(f"--{name}", type=int, default=default)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = bench(moving_pattern(args.frames, args.height, args.width), args.fps, Path(tmp), args.repeats)
    print(f"{args.frames} frames {args.width}x{args.height} @ {args.fps} fps, median of {args.repeats}\n")
    print("| case | time (s) | ratio to reference | size (KiB) | PSNR (dB) |\n|---|---|---|---|---|")
    for name, t, ratio, size, quality in rows:
        print(f"| {name} | {t:.3f} | {ratio:.2f} | {f'{size / 1024:.0f}' if size else ''} | "
              f"{f'{quality:.1f}' if quality else ''} |")


if __name__ == "__main__":
    main()
