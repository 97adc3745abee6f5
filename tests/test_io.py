"""videogen.io against real PyAV: round trips, rates, sizes, atomic writes, and every kind of bad file."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

import videogen.io
from videogen.errors import InputError
from videogen.io import Video, VideoFileError, VideoWriter, iter_frames, probe_video, read_video, write_video

T, H, W = 17, 32, 48


def smooth_clip(t: int = T, h: int = H, w: int = W) -> np.ndarray:
    """Low-frequency colour waves drifting over time: 'smooth content' for the PSNR thresholds."""
    tt = np.arange(t)[:, None, None] / t
    y = np.arange(h)[None, :, None] / h
    x = np.arange(w)[None, None, :] / w
    r = 128 + 90 * np.sin(np.pi * (x + 0.5 * tt))
    g = 128 + 90 * np.cos(np.pi * (y - 0.3 * tt))
    b = 128 + 60 * np.sin(np.pi * (x + y - tt))
    rgb = np.stack(np.broadcast_arrays(r, g, b), axis=-1)  # (T, H, W, 3)
    return np.clip(rgb, 0, 255).round().astype(np.uint8)


def level_clip(t: int = T) -> np.ndarray:
    """Flat grey frames whose level encodes the frame index, so a test can tell which frames it got."""
    levels = 8 + 14 * np.arange(t, dtype=np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (t, H, W, 3)).copy()  # (T, H, W, 3)


def indices(frames: np.ndarray) -> list[int]:
    return [int(round((f.mean() - 8) / 14)) for f in frames]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def plain_pyav_decode(path: Path) -> tuple[np.ndarray, Fraction]:
    """Decode with PyAV directly (not our reader), as another program would."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        return np.stack(frames), stream.average_rate


# ---------------------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("suffix, min_psnr", [(".mp4", 35.0), (".webm", 35.0), (".gif", 32.0)])
def test_round_trip_keeps_count_rate_and_quality(tmp_path, suffix, min_psnr):
    clip = smooth_clip()
    path = write_video(tmp_path / f"clip{suffix}", clip, fps=8)
    assert path == tmp_path / f"clip{suffix}"
    video = read_video(path)
    assert video.frames.dtype == np.uint8 and video.frames.shape == clip.shape
    assert video.fps == pytest.approx(8.0, abs=1e-9)
    assert video.num_frames == T and (video.height, video.width) == (H, W)
    assert video.duration == pytest.approx(T / 8)
    assert psnr(video.frames, clip) >= min_psnr


def test_mp4_reads_back_in_plain_pyav(tmp_path):
    clip = smooth_clip()
    path = write_video(tmp_path / "clip.mp4", clip, fps=Fraction(30000, 1001), crf=18)
    frames, rate = plain_pyav_decode(path)
    assert frames.shape == clip.shape
    assert rate == Fraction(30000, 1001)
    assert psnr(frames, clip) >= 35.0
    data = path.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")  # faststart: the index comes first
    with av.open(str(path)) as c:
        cc = c.streams.video[0].codec_context
        assert (cc.name, cc.pix_fmt, cc.colorspace) == ("h264", "yuv420p", 1)  # tagged BT.709


@pytest.mark.parametrize("fps", [23.976, Fraction(24000, 1001)])
def test_fractional_fps_is_exact(tmp_path, fps):
    path = write_video(tmp_path / "ntsc.mp4", smooth_clip(9), fps=fps)
    assert read_video(path).fps == pytest.approx(24000 / 1001, abs=1e-9)
    info = probe_video(path)
    assert info.frames == 9 and info.fps == pytest.approx(24000 / 1001, abs=1e-9)
    assert plain_pyav_decode(path)[1] == Fraction(24000, 1001)


def test_gif_rate_from_frame_delays(tmp_path):
    # 8 fps is stored as delays of 13, 12, 13, ... hundredths; FFmpeg's own average rate says 8.33
    path = write_video(tmp_path / "a.gif", smooth_clip(9), fps=8)
    assert read_video(path).fps == pytest.approx(8.0, abs=1e-6)
    assert probe_video(path).fps == pytest.approx(8.0, abs=1e-6)


def test_still_images(tmp_path):
    image = smooth_clip(1)[0]
    Image.fromarray(image).save(tmp_path / "a.png")
    Image.fromarray(image).save(tmp_path / "a.jpg", quality=95)
    Image.fromarray(np.dstack([image, np.full((H, W), 128, np.uint8)])).save(tmp_path / "rgba.png")
    png = read_video(tmp_path / "a.png")
    assert png.frames.shape == (1, H, W, 3) and png.fps == 1.0
    assert np.array_equal(png.frames[0], image)  # lossless
    assert psnr(read_video(tmp_path / "a.jpg").frames[0], image) >= 35.0
    assert np.array_equal(read_video(tmp_path / "rgba.png").frames[0], image)  # alpha dropped
    assert read_video(tmp_path / "a.png", size=(16, 24), fps=8).frames.shape == (1, 16, 24, 3)
    info = probe_video(tmp_path / "a.jpg")
    assert info.is_image and (info.frames, info.width, info.height, info.codec) == (1, W, H, "mjpeg")


def test_odd_size_is_padded_by_edge_replication(tmp_path):
    clip = smooth_clip(9, 31, 47)
    video = read_video(write_video(tmp_path / "odd.mp4", clip, fps=8))
    assert video.frames.shape == (9, 32, 48, 3)
    assert psnr(video.frames[:, :31, :47], clip) >= 35.0
    # the added row / column repeat the edge (up to coding noise, ~3 levels here; black would be ~100)
    assert np.abs(video.frames[:, 31, :47].astype(int) - clip[:, 30].astype(int)).mean() < 6
    assert np.abs(video.frames[:, :31, 47].astype(int) - clip[:, :, 46].astype(int)).mean() < 6
    gif = read_video(write_video(tmp_path / "odd.gif", clip, fps=8))
    assert gif.frames.shape == (9, 31, 47, 3)  # GIF needs no padding


def test_streaming_writer_chunk_by_chunk(tmp_path):
    clip = smooth_clip()
    path = tmp_path / "stream.mp4"
    with VideoWriter(path, fps=12) as writer:
        writer.write(clip[:4])
        writer.write(torch.from_numpy(clip[4:8]))  # torch uint8 chunks too
        writer.write(clip[8])  # a single (H, W, 3) frame
        writer.write(clip[9:9])  # an empty chunk is a no-op
        writer.write(clip[9:])
        assert not path.exists()  # nothing at the target until the end
        (tmp,) = tmp_path.glob(".stream.*.tmp.mp4")  # the temporary file keeps the extension
    assert writer.frames_written == T and not tmp.exists()
    video = read_video(path)
    assert video.num_frames == T and video.fps == pytest.approx(12.0)
    assert psnr(video.frames, clip) >= 35.0


# --------------------------------------------------------------------------------------- atomic and safe


def test_existing_file_is_refused_and_left_intact(tmp_path):
    path = tmp_path / "keep.mp4"
    write_video(path, smooth_clip(5), fps=8)
    before = path.read_bytes()
    with pytest.raises(InputError, match="keep.mp4: file exists"):
        VideoWriter(path, fps=8)
    with pytest.raises(InputError, match="keep.mp4: file exists"):
        write_video(path, level_clip(5), fps=8)
    assert path.read_bytes() == before
    write_video(path, level_clip(5), fps=8, overwrite=True)
    assert indices(read_video(path).frames) == [0, 1, 2, 3, 4]


def test_failed_write_leaves_no_temp_and_keeps_target(tmp_path):
    path = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError, match="decoder blew up"):
        with VideoWriter(path, fps=8) as writer:
            writer.write(smooth_clip(4))
            raise RuntimeError("decoder blew up")
    assert list(tmp_path.iterdir()) == []
    write_video(path, smooth_clip(5), fps=8)
    before = path.read_bytes()
    with pytest.raises(RuntimeError):
        with VideoWriter(path, fps=8, overwrite=True) as writer:
            writer.write(level_clip(4))
            raise RuntimeError("mid-stream")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_bad_frames_are_refused(tmp_path):
    path = tmp_path / "x.mp4"
    with pytest.raises(InputError, match="uint8.*float32"):
        write_video(path, smooth_clip(3).astype(np.float32), fps=8)
    with pytest.raises(InputError, match="uint8.*bfloat16"):
        write_video(path, torch.zeros(3, H, W, 3, dtype=torch.bfloat16), fps=8)
    with pytest.raises(InputError, match=r"shape \(T, H, W, 3\), got \(3, 32, 48, 4\)"):
        write_video(path, np.zeros((3, H, W, 4), np.uint8), fps=8)
    with pytest.raises(InputError, match="frame size changed from 32x48 to 16x48"):
        with VideoWriter(path, fps=8) as writer:
            writer.write(smooth_clip(3))
            writer.write(smooth_clip(3, 16, W))
    with pytest.raises(InputError, match="x.mp4: no frames were written"):
        with VideoWriter(path, fps=8):
            pass
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("missing/x.mp4", {}, "output folder .*missing does not exist"),
        ("x.avi", {}, r"cannot write '.avi' files"),
        ("x.mp4", {"fps": 0}, r"fps must be in \(0, 1000\]"),
        ("x.mp4", {"fps": float("nan")}, "fps must be"),
        ("x.mp4", {"crf": 52}, "crf must be an integer in 0..51"),
        ("x.gif", {"fps": 60}, r"fps must be in \(0, 50\]"),
    ],
)
def test_bad_writer_arguments(tmp_path, name, kwargs, message):
    with pytest.raises(InputError, match=message):
        VideoWriter(tmp_path / name, **{"fps": 8, **kwargs})


# -------------------------------------------------------------------------------------------- bad files


def make_bad(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / {"text": "notes.txt", "directory": "clips", "audio": "sound.wav"}.get(kind, "clip.mp4")
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif kind in ("truncated", "cut_at_packet"):
        data = write_video(tmp_path / "whole.mp4", smooth_clip(), fps=8).read_bytes()
        path.write_bytes(data[: int(len(data) * (0.6 if kind == "truncated" else 0.95))])
    elif kind == "text":
        path.write_text("a red circle moving left on a black background\n" * 20)
    elif kind == "directory":
        path.mkdir()
    elif kind == "audio":
        with av.open(str(path), "w") as c:
            stream = c.add_stream("pcm_s16le", rate=8000)
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
            frame.sample_rate = 8000
            for packet in [*stream.encode(frame), *stream.encode(None)]:
                c.mux(packet)
    return path


BAD_FILES = [
    ("missing", "clip.mp4: no such file"),
    ("empty", "clip.mp4: file is empty"),
    ("garbage", "clip.mp4: not a video or image file, or corrupt"),
    ("truncated", "clip.mp4: corrupt or truncated video"),
    ("cut_at_packet", r"clip.mp4: truncated video \(\d+ of 17 frames present\)"),
    ("text", r"notes.txt: not a video file \(text"),  # FFmpeg's tty demuxer would render it as ANSI art
    ("directory", "clips: is a directory"),
    ("audio", r"sound.wav: not a video file \(no video stream\)"),
]


@pytest.mark.parametrize("kind, message", BAD_FILES, ids=[k for k, _ in BAD_FILES])
def test_bad_file_gives_its_error(tmp_path, kind, message):
    path = make_bad(tmp_path, kind)
    for fn in (read_video, probe_video):
        with pytest.raises(VideoFileError, match=message) as e:
            fn(path)
        assert isinstance(e.value, InputError) and "\n" not in str(e.value)


# -------------------------------------------------------------------------------------- read options


def test_start_and_max_frames(tmp_path):
    path = write_video(tmp_path / "levels.mp4", level_clip(), fps=8)
    assert indices(read_video(path).frames) == list(range(T))
    assert indices(read_video(path, start=1.0, max_frames=4).frames) == [8, 9, 10, 11]
    assert indices(read_video(path, start=1.06, max_frames=1).frames) == [8]  # nearest frame: 1.0 s
    assert indices(read_video(path, start=1.07, max_frames=1).frames) == [9]  # nearest frame: 1.125 s
    assert indices(read_video(path, start=1.9).frames) == [15, 16]
    with pytest.raises(InputError, match="levels.mp4: start=3 s is at or past the end"):
        read_video(path, start=3.0)


def test_fps_resampling_picks_nearest_frames(tmp_path):
    path = write_video(tmp_path / "levels.mp4", level_clip(), fps=8)
    down = read_video(path, fps=4)
    assert down.fps == 4.0 and indices(down.frames) == list(range(0, T, 2))
    up = read_video(path, fps=16)
    assert up.num_frames == 2 * T and indices(up.frames) == [i for i in range(T) for _ in range(2)]
    odd = read_video(path, fps=6)  # output time k/6 -> source frame round(8k/6), while inside the clip
    assert indices(odd.frames) == [round(8 * k / 6) for k in range(13)]
    assert indices(read_video(path, fps=4, start=0.5, max_frames=3).frames) == [4, 6, 8]


def test_variable_frame_rate_mkv_follows_timestamps(tmp_path):
    times_ms = [0, 100, 320, 350, 600, 900]
    path = tmp_path / "vfr.mkv"
    with av.open(str(path), "w") as c:
        stream = c.add_stream("ffv1", rate=10)  # lossless, so frames are recognised exactly
        stream.width, stream.height, stream.pix_fmt = W, H, "bgr0"
        stream.codec_context.time_base = Fraction(1, 1000)
        for i, ms in enumerate(times_ms):
            frame = av.VideoFrame.from_ndarray(level_clip(len(times_ms))[i], format="rgb24")
            frame.pts, frame.time_base = ms, Fraction(1, 1000)
            for packet in stream.encode(frame):
                c.mux(packet)
        for packet in stream.encode(None):
            c.mux(packet)
    assert indices(read_video(path).frames) == list(range(6))
    assert indices(read_video(path, fps=10, max_frames=10).frames) == [0, 1, 1, 2, 3, 4, 4, 4, 5, 5]
    assert indices(read_video(path, start=0.33, max_frames=2).frames) == [2, 3]


def test_resize(tmp_path):
    clip = smooth_clip()
    path = write_video(tmp_path / "clip.mp4", clip, fps=8)
    small = read_video(path, size=(16, 24)).frames
    assert small.shape == (T, 16, 24, 3) and psnr(small, pil_resize(clip, 16, 24, Image.Resampling.BOX)) >= 33.0
    large = read_video(path, size=(40, 72), max_frames=2).frames
    assert large.shape == (2, 40, 72, 3)
    assert psnr(large, pil_resize(clip[:2], 40, 72, Image.Resampling.BICUBIC)) >= 33.0


def pil_resize(frames: np.ndarray, h: int, w: int, method) -> np.ndarray:
    """An independent resize of the source frames (Pillow), to compare ours against."""
    return np.stack([np.asarray(Image.fromarray(f).resize((w, h), method)) for f in frames])  # (T, h, w, 3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"start": -1.0}, "start must be"),
        ({"max_frames": 0}, "max_frames must be a positive integer"),
        ({"fps": -2}, "fps must be a positive number"),
        ({"size": (0, 8)}, "size must be"),
        ({"size": (8,)}, "size must be"),
    ],
)
def test_bad_read_arguments(tmp_path, kwargs, message):
    path = write_video(tmp_path / "clip.mp4", smooth_clip(3), fps=8)
    with pytest.raises(InputError, match=message):
        read_video(path, **kwargs)


# ------------------------------------------------------------------------------------------- streaming


def streamed(path: Path, chunk: int | None = None, **kwargs) -> np.ndarray:
    """All of `iter_frames`, joined into (T, H, W, 3)."""
    parts = list(iter_frames(path, chunk=chunk, **kwargs))
    return np.stack(parts) if chunk is None else np.concatenate(parts)


@pytest.mark.parametrize(
    "suffix, kwargs",
    [
        (".mp4", {}),
        (".mp4", {"start": 1.0, "max_frames": 5}),
        (".mp4", {"fps": 6, "size": (16, 24)}),
        (".mp4", {"fps": 16, "start": 0.5, "max_frames": 9}),  # upsampling: frames repeat
        (".gif", {"fps": 4}),
        (".png", {"size": (40, 72)}),
    ],
)
@pytest.mark.parametrize("chunk", [None, 1, 4, 64])
def test_iter_frames_equals_read_video(tmp_path, suffix, kwargs, chunk):
    clip = smooth_clip()
    if suffix == ".png":
        path = tmp_path / "a.png"
        Image.fromarray(clip[0]).save(path)
    else:
        path = write_video(tmp_path / f"clip{suffix}", clip, fps=8)
    assert np.array_equal(streamed(path, chunk, **kwargs), read_video(path, **kwargs).frames)


def test_iter_frames_chunks(tmp_path):
    path = write_video(tmp_path / "levels.mp4", level_clip(), fps=8)
    frames = list(iter_frames(path))
    assert len(frames) == T and all(f.shape == (H, W, 3) and f.dtype == np.uint8 for f in frames)
    chunks = list(iter_frames(path, chunk=4))
    assert [c.shape for c in chunks] == [(4, H, W, 3)] * 4 + [(1, H, W, 3)]
    assert [len(c) for c in iter_frames(path, chunk=4, max_frames=8)] == [4, 4]
    assert [len(c) for c in iter_frames(path, chunk=100)] == [T]
    assert [indices(c) for c in iter_frames(path, chunk=3, start=1.0, fps=4)] == [[8, 10, 12], [14, 16]]
    up = list(iter_frames(path, fps=16, max_frames=2))  # one source frame, shown twice
    up[0][:] = 0
    assert indices(up) == [-1, 0]  # each frame is its own array: changing one leaves the other


@pytest.mark.parametrize("kind, message", BAD_FILES, ids=[k for k, _ in BAD_FILES])
def test_iter_frames_bad_file_gives_read_video_error(tmp_path, kind, message):
    path = make_bad(tmp_path, kind)
    with pytest.raises(VideoFileError, match=message) as e:
        list(iter_frames(path, chunk=4))
    assert "\n" not in str(e.value)


def test_iter_frames_checks_arguments_when_called(tmp_path):
    path = write_video(tmp_path / "clip.mp4", smooth_clip(3), fps=8)
    with pytest.raises(InputError, match="chunk must be a positive integer"):
        iter_frames(path, chunk=0)  # no iteration needed
    with pytest.raises(InputError, match="fps must be a positive number"):
        iter_frames(path, fps=-1)
    with pytest.raises(VideoFileError, match="nope.mp4: no such file"):
        iter_frames(tmp_path / "nope.mp4")
    with pytest.raises(InputError, match="clip.mp4: start=3 s is at or past the end"):
        list(iter_frames(path, start=3.0))


def test_iter_frames_decodes_as_it_goes(tmp_path, monkeypatch):
    n, chunk = 80, 8
    path = write_video(tmp_path / "long.mp4", smooth_clip(n, 16, 16), fps=8)
    decoded = 0
    frames = videogen.io._Input.frames

    def counting_frames(self, **kwargs):
        nonlocal decoded
        for frame in frames(self, **kwargs):
            decoded += 1
            yield frame

    monkeypatch.setattr(videogen.io._Input, "frames", counting_frames)
    stream = iter_frames(path, chunk=chunk)
    assert decoded == 0  # nothing is opened or decoded before the first next()
    seen = 0
    for c in stream:
        seen += len(c)
        assert decoded <= seen + 1  # at most one frame of look-ahead (the nearest-frame choice) per chunk
    assert seen == decoded == n


def test_probe_video(tmp_path):
    mp4 = probe_video(write_video(tmp_path / "a.mp4", smooth_clip(9), fps=8))
    assert (mp4.frames, mp4.fps, mp4.width, mp4.height) == (9, 8.0, W, H)
    assert (mp4.duration, mp4.codec, mp4.container, mp4.is_image) == (9 / 8, "h264", "mp4", False)
    webm = probe_video(write_video(tmp_path / "a.webm", smooth_clip(9), fps=8))
    assert (webm.frames, webm.codec, webm.container) == (9, "vp9", "webm")
    assert "9 frames, 8 fps, 48x32, 1.125 s, h264 in mp4" in mp4.describe()


def test_video_dataclass_checks_its_frames():
    video = Video(level_clip(5), fps=2.5)
    assert (video.num_frames, video.height, video.width, video.duration) == (5, H, W, 2.0)
    with pytest.raises(InputError, match="uint8"):
        Video(level_clip(5).astype(np.float32), fps=8)
    with pytest.raises(InputError, match="fps"):
        Video(level_clip(5), fps=0)
