"""Video files in and out: the only module that touches containers (PyAV).

Frames at this edge are uint8 ``(T, H, W, 3)`` RGB arrays; the library converts them to float ``(B, 3, T, H, W)``
in [-1, 1] itself.

Reading (`read_video`; `iter_frames` streams the same frames chunk by chunk; `probe_video`) takes MP4/MOV/MKV/WebM/
GIF and still images (PNG, JPEG, ...; one frame).
Writing (`VideoWriter`, `write_video`) picks the codec from the extension:

- ``.mp4``: H.264 (libx264), yuv420p, ``movflags=+faststart`` so a browser can play it while it downloads;
- ``.webm``: VP9 (libvpx-vp9) in constant-quality mode;
- ``.gif``: 8-bit palette, one median-cut palette per frame (Pillow) so colours stay true.

RGB becomes BT.709 limited-range YUV for MP4/WebM and the stream is tagged so, so any player (and PyAV's own
``to_ndarray``) converts back with the same matrix. Writes are atomic: frames go to a temporary file next to the
target (``.clip.1a2b3c4d.tmp.mp4``, the muxer still sees the extension), which is renamed into place only when the
video is complete; on any error it is removed, and an existing file is never touched unless ``overwrite=True``
(`videogen.atomic`).
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from itertools import islice
from numbers import Integral, Real
from pathlib import Path
from typing import Iterable, Iterator

import av
import numpy as np
from av.video.reformatter import ColorPrimaries, ColorRange, ColorTrc

from videogen.atomic import check_target, publish, reserve_temp
from videogen.errors import InputError, ResourceError

__all__ = [
    "Video", "VideoInfo", "VideoFileError", "VideoWriter", "read_video", "iter_frames", "write_video", "probe_video",
    "FrameCollector", "FileSink", "frame_sink",
]


class VideoFileError(InputError):
    """A file that cannot be read as a video or image: missing, empty, corrupt, truncated or of another kind."""


# ------------------------------------------------------------------------------------------------- types


@dataclass
class Video:
    """Decoded frames and their rate."""

    frames: np.ndarray  # uint8 (T, H, W, 3), RGB
    fps: float  # frames per second of `frames` (constant)

    def __post_init__(self):
        _check_frames(self.frames, "Video.frames")
        if not (self.fps > 0 and math.isfinite(self.fps)):
            raise InputError(f"Video.fps must be a positive number, got {self.fps!r}")

    @property
    def num_frames(self) -> int:
        return self.frames.shape[0]

    @property
    def height(self) -> int:
        return self.frames.shape[1]

    @property
    def width(self) -> int:
        return self.frames.shape[2]

    @property
    def duration(self) -> float:
        """Seconds: each frame is shown for 1 / fps."""
        return self.num_frames / self.fps


@dataclass(frozen=True)
class VideoInfo:
    """What `probe_video` learns about a file without decoding it."""

    path: Path
    frames: int  # number of frames (1 for a still image)
    fps: float  # average frame rate (1.0 for a still image, as `read_video` gives it)
    width: int
    height: int
    duration: float  # seconds
    codec: str  # decoder name, e.g. "h264", "vp9", "gif", "png"
    container: str  # e.g. "mp4", "webm", "matroska", "gif", "image"
    is_image: bool = False

    def describe(self) -> str:
        """One line for people, as ``videogen info`` prints it."""
        size = f"{self.width}x{self.height}"
        if self.is_image:
            return f"{self.path}: still image, {size}, {self.codec}"
        return (
            f"{self.path}: {self.frames} frames, {self.fps:.6g} fps, {size}, {self.duration:.3f} s, "
            f"{self.codec} in {self.container}"
        )


# ------------------------------------------------------------------------------------------ opening files


def _check_input_file(path: str | os.PathLike) -> Path:
    """The path, if it names a non-empty readable file; else a VideoFileError saying what is wrong with it."""
    p = Path(path)
    if not p.exists():
        raise VideoFileError(f"{p}: no such file")
    if p.is_dir():
        raise VideoFileError(f"{p}: is a directory, not a video file")
    if p.stat().st_size == 0:
        raise VideoFileError(f"{p}: file is empty")
    if not os.access(p, os.R_OK):
        raise VideoFileError(f"{p}: cannot read the file (permission denied)")
    return p


def _reason(e: Exception) -> str:
    """FFmpeg's words for an error, without the errno and file name PyAV adds."""
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return text[0].lower() + text[1:]


# FFmpeg's "tty" and related demuxers read any longer text file as a video of rendered text-mode art
_TEXT_ART_CODECS = {"ansi", "bintext", "xbin", "idf"}


class _Input:
    """An opened container and its first video stream; converts PyAV's errors into VideoFileError."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.container = av.open(str(path), "r")
        except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
            raise VideoFileError(f"{path}: not a video or image file, or corrupt ({_reason(e)})") from None
        if not self.container.streams.video:
            self.container.close()
            raise VideoFileError(f"{path}: not a video file (no video stream)")
        self.stream = self.container.streams.video[0]
        if self.stream.codec_context.name in _TEXT_ART_CODECS:
            self.container.close()
            raise VideoFileError(f"{path}: not a video file (text, which FFmpeg would render as ANSI art)")
        self.stream.thread_type = "AUTO"  # frame + slice threads: decoding is the cost of reading

    def __enter__(self) -> _Input:
        return self

    def __exit__(self, *exc) -> None:
        self.container.close()

    @property
    def is_image(self) -> bool:
        """Still images come through FFmpeg's image demuxers (``png_pipe``, ``jpeg_pipe``, ``image2``, ...)."""
        name = self.container.format.name
        return name == "image2" or name.endswith("_pipe")

    @property
    def container_name(self) -> str:
        """The format's name, preferring the alias that matches the extension (``mov,mp4,...`` -> ``mp4``)."""
        if self.is_image:
            return "image"
        names = self.container.format.name.split(",")
        suffix = self.path.suffix.lower().lstrip(".")
        return suffix if suffix in names else names[0]

    @property
    def start_time(self) -> float:
        """Seconds of the stream's first timestamp, which becomes time 0."""
        s = self.stream
        return float(s.start_time * s.time_base) if s.start_time is not None else 0.0

    def frames(self, *, seek_to: float = 0.0) -> Iterator:
        """Decoded `av.VideoFrame`s in display order, from the keyframe at or before `seek_to` seconds.

        Raises VideoFileError when the data is corrupt, or when a read to the end finds fewer packets than the
        header promises (a truncated MP4 keeps its header but loses frames).
        """
        seeked = seek_to > 0 and self._seek(seek_to)
        packets = 0
        try:
            for packet in self.container.demux(self.stream):
                packets += packet.size > 0
                yield from packet.decode()
        except (av.FFmpegError, OSError) as e:
            raise VideoFileError(f"{self.path}: corrupt or truncated video ({_reason(e)})") from None
        expected = self.stream.frames
        if not seeked and expected and packets < expected:
            raise VideoFileError(f"{self.path}: truncated video ({packets} of {expected} frames present)")

    def _seek(self, seconds: float) -> bool:
        """Jump to the keyframe at or before `seconds`; False where the format cannot seek (then read on)."""
        s = self.stream
        try:
            self.container.seek(int((seconds + self.start_time) / s.time_base), stream=s, backward=True)
        except (av.FFmpegError, OSError):
            return False
        return True


# --------------------------------------------------------------------------------------------- probing


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Frames, fps, size, duration, codec and container of a video or image, without decoding all of it.

    The packets are read (not decoded) to count frames and to notice truncation; only the first frame is
    decoded, to check that the codec can read the data at all. Raises VideoFileError for a bad file.
    """
    path = _check_input_file(path)
    with _Input(path) as src:
        first, times = _scan_packets(src)
        s = src.stream
        if src.is_image:
            return VideoInfo(path, 1, 1.0, first.width, first.height, 1.0, s.codec_context.name, "image", True)
        fps = _average_fps(src, times)
        frames = len(times)
        if s.frames and frames < s.frames:
            raise VideoFileError(f"{path}: truncated video ({frames} of {s.frames} frames present)")
        return VideoInfo(
            path, frames, fps, first.width, first.height, frames / fps, s.codec_context.name, src.container_name
        )


def _scan_packets(src: _Input):
    """The first decoded frame, and the presentation time (seconds) of every packet, in file order."""
    first, times = None, []
    try:
        for packet in src.container.demux(src.stream):
            if packet.size == 0:
                continue
            if packet.pts is not None:
                times.append(float(packet.pts * packet.time_base))
            else:
                times.append(math.nan)
            if first is None:
                first = next(iter(packet.decode()), None)
        if first is None:  # a decoder that holds frames back hands them over on flush
            first = next(iter(src.stream.decode(None)), None)
    except (av.FFmpegError, OSError) as e:
        raise VideoFileError(f"{src.path}: corrupt or truncated video ({_reason(e)})") from None
    if first is None:
        raise VideoFileError(f"{src.path}: corrupt or truncated video (no frame could be decoded)")
    return first, times


def _average_fps(src: _Input, times: list[float]) -> float:
    """The stream's average frame rate.

    GIF stores a delay per frame in 1/100 s, so 8 fps is written as delays 13, 12, 13, ... and FFmpeg's
    average_rate is off; (n - 1) frame intervals over the span of the timestamps recovers the rate.
    """
    finite = sorted(t for t in times if math.isfinite(t))
    if src.container_name == "gif" and len(finite) >= 2 and finite[-1] > finite[0]:
        return (len(finite) - 1) / (finite[-1] - finite[0])
    rate = src.stream.average_rate or src.stream.guessed_rate or src.stream.base_rate
    if rate:
        return float(rate)
    raise VideoFileError(f"{src.path}: the video has no frame rate")


# --------------------------------------------------------------------------------------------- reading


def read_video(
    path: str | os.PathLike,
    *,
    start: float = 0.0,
    max_frames: int | None = None,
    fps: float | None = None,
    size: tuple[int, int] | None = None,
) -> Video:
    """Decode a video (or a still image, as one frame) into uint8 RGB frames.

    Args:
        path: MP4, MOV, MKV, WebM, GIF, or a still image (PNG, JPEG, ...). An alpha channel is dropped.
        start: seconds from the beginning; the clip begins at the frame nearest this time.
        max_frames: at most this many frames are returned (after resampling).
        fps: resample to this constant rate: output frame k shows the source frame whose timestamp is nearest
            to ``start + k / fps`` (frames are repeated or dropped, never blended). Without it, frames come as
            stored and `Video.fps` is the stream's average rate; a variable-rate video is best read with `fps`,
            which follows its real timestamps.
        size: ``(H, W)`` to resize every frame to, exactly (no aspect-ratio preservation; crop first if needed).
            FFmpeg's swscale: area averaging when both sides shrink (antialiased, no ringing), bicubic otherwise.

    Returns:
        `Video` with frames (T, H, W, 3) uint8 and fps. A still image gives one frame at `fps` (default 1.0).
    """
    _check_read_args(start, max_frames, fps, size, chunk=None)
    path = _check_input_file(path)
    with _Input(path) as src:
        rate, picked = _pick(src, start, max_frames, fps)
        return Video(np.stack(list(_rgb(picked, size, reuse=True))), rate)  # (T, H, W, 3)


def iter_frames(
    path: str | os.PathLike,
    *,
    start: float = 0.0,
    max_frames: int | None = None,
    fps: float | None = None,
    size: tuple[int, int] | None = None,
    chunk: int | None = None,
) -> Iterator[np.ndarray]:
    """Stream the frames `read_video` returns, decoding only as the caller asks for more.

    Same arguments, frames and errors as `read_video`: concatenated, the chunks are its `Video.frames`. Only one
    chunk is held in memory, however long the video. The arguments and the path are checked by the call itself;
    a corrupt or truncated file, or a `start` past the end, raises while iterating.

    Args:
        chunk: None yields uint8 (H, W, 3) frames; an integer yields uint8 (t, H, W, 3) arrays of `chunk`
            frames (the last may hold fewer).
    """
    _check_read_args(start, max_frames, fps, size, chunk)
    return _stream(_check_input_file(path), start, max_frames, fps, size, chunk)


def _stream(path: Path, start, max_frames, fps, size, chunk) -> Iterator[np.ndarray]:
    """`iter_frames` after the argument checks: the container is opened when iteration starts."""
    with _Input(path) as src:
        _, picked = _pick(src, start, max_frames, fps)
        if chunk is None:
            yield from _rgb(picked, size, reuse=False)  # every frame its own array, for the caller to change
        else:
            yield from _batched(_rgb(picked, size, reuse=True), chunk)


def _check_read_args(start, max_frames, fps, size, chunk) -> None:
    if not (isinstance(start, Real) and math.isfinite(start) and start >= 0):
        raise InputError(f"start must be a number of seconds >= 0, got {start!r}")
    for name, n in (("max_frames", max_frames), ("chunk", chunk)):
        if n is not None and not (isinstance(n, Integral) and n >= 1):
            raise InputError(f"{name} must be a positive integer, got {n!r}")
    if fps is not None and not (isinstance(fps, Real) and 0 < fps < math.inf):
        raise InputError(f"fps must be a positive number, got {fps!r}")
    positive_ints = isinstance(size, (tuple, list)) and all(isinstance(n, Integral) and n >= 1 for n in size)
    if size is not None and not (positive_ints and len(size) == 2):
        raise InputError(f"size must be (height, width) in positive integers, got {size!r}")


def _pick(src: _Input, start: float, max_frames: int | None, fps: float | None) -> tuple[float, Iterator]:
    """The output rate, and the decoded frames `read_video` returns, lazily: the one path every read takes."""
    if src.is_image:
        return float(fps or 1.0), _nonempty(islice(src.frames(), 1), src.path, 0.0)
    # GIF's rate needs every frame's timestamp (see _average_fps): a packet scan, no decoding
    source_fps = probe_video(src.path).fps if src.container_name == "gif" else _average_fps(src, [])
    timed = _timed(src, start, source_fps)
    if fps:
        picked = _pick_resampled(timed, start, 1 / fps, 1 / source_fps)
    else:
        picked = _pick_from(timed, start, 1 / source_fps)
    return float(fps or source_fps), _nonempty(islice(picked, max_frames), src.path, start)


def _nonempty(frames: Iterable, path: Path, start: float) -> Iterator:
    """`frames`, then an error at their end if there were none: `start` past the end, or nothing decodable."""
    empty = True
    for frame in frames:
        empty = False
        yield frame
    if empty and start > 0:
        raise InputError(f"{path}: start={start:g} s is at or past the end of the video")
    if empty:
        raise VideoFileError(f"{path}: corrupt or truncated video (no frame could be decoded)")


def _timed(src: _Input, start: float, source_fps: float) -> Iterator[tuple[float, object]]:
    """(seconds since the stream start, frame) for each decoded frame; a frame with no timestamp is placed
    one average frame interval after the previous one."""
    t = -1 / source_fps
    for frame in src.frames(seek_to=start):
        t = frame.time - src.start_time if frame.time is not None else t + 1 / source_fps
        yield t, frame


def _pick_from(timed: Iterable, start: float, last_duration: float) -> Iterator:
    """Every frame from the one nearest `start` on (the last frame covers `last_duration` seconds)."""
    timed = iter(timed)
    prev = None
    for t, frame in timed:
        if prev is not None and start <= (prev[0] + t) / 2:
            yield prev[1]
            yield frame
            yield from (f for _, f in timed)
            return
        prev = (t, frame)
    if prev is not None and start < prev[0] + last_duration:
        yield prev[1]


def _pick_resampled(timed: Iterable, start: float, step: float, last_duration: float) -> Iterator:
    """For output times start + k * step, k = 0, 1, ..., the frame with the nearest timestamp.

    A frame is the nearest one for every time up to the midpoint between it and the next frame; the last frame
    covers its own display interval, `last_duration` long.
    """
    k, prev = 0, None
    for t, frame in timed:
        while prev is not None and start + k * step <= (prev[0] + t) / 2:
            yield prev[1]
            k += 1
        prev = (t, frame)
    while prev is not None and start + k * step < prev[0] + last_duration:
        yield prev[1]
        k += 1


def _rgb(picked: Iterable, size: tuple[int, int] | None, *, reuse: bool) -> Iterator[np.ndarray]:
    """uint8 (H, W, 3) arrays of the picked frames. With `reuse`, a frame picked twice in a row (fps upsampling)
    is converted once and yielded twice as the same array: for callers that copy it into a stack or chunk."""
    last = rgb = None
    for frame in picked:
        if frame is not last or not reuse:
            last, rgb = frame, _to_rgb(frame, size)
        yield rgb


def _batched(frames: Iterable[np.ndarray], chunk: int) -> Iterator[np.ndarray]:
    """(t, H, W, 3) arrays of `chunk` frames (the last may hold fewer), each filled in place: one chunk in memory."""
    batch, n = None, 0
    for rgb in frames:
        if n == 0:
            batch = np.empty((chunk, *rgb.shape), np.uint8)  # (chunk, H, W, 3)
        batch[n] = rgb
        n += 1
        if n == chunk:
            yield batch
            n = 0
    if n:
        yield batch[:n]  # (t, H, W, 3)


def _to_rgb(frame, size: tuple[int, int] | None) -> np.ndarray:
    """A decoded frame as uint8 (H, W, 3) RGB, resized to `size` = (H, W) if given.

    The YUV -> RGB matrix is the one the frame is tagged with (BT.601 when untagged, as FFmpeg assumes).
    """
    if size is None or tuple(size) == (frame.height, frame.width):
        return frame.to_ndarray(format="rgb24")
    height, width = int(size[0]), int(size[1])
    shrinking = height <= frame.height and width <= frame.width
    return frame.to_ndarray(
        format="rgb24", width=width, height=height, interpolation="AREA" if shrinking else "BICUBIC"
    )


# --------------------------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class _Format:
    """How one output extension is written."""

    muxer: str  # FFmpeg muxer name
    codec: str  # FFmpeg encoder name
    pix_fmt: str
    max_crf: int | None  # highest CRF the encoder takes; None: no CRF (GIF)
    max_fps: float  # GIF delays are whole 1/100 s
    even: bool  # yuv420p subsamples chroma 2x2, so width and height must be even


_FORMATS = {
    ".mp4": _Format("mp4", "libx264", "yuv420p", 51, 1000.0, True),
    ".webm": _Format("webm", "libvpx-vp9", "yuv420p", 63, 1000.0, True),
    ".gif": _Format("gif", "gif", "pal8", None, 50.0, False),
}


def _output_format(path: Path) -> _Format:
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        known = ", ".join(_FORMATS)
        raise InputError(f"{path}: cannot write '{path.suffix or 'no extension'}' files (use one of {known})")
    return fmt


def _frame_rate(fps: float | Fraction) -> Fraction:
    """fps as an exact fraction; NTSC rates given as decimals (23.976, 29.97, 59.94) become n * 1000 / 1001."""
    if isinstance(fps, Fraction):
        return fps
    ntsc = round(fps * 1.001)
    if ntsc and abs(fps - ntsc / 1.001) < 1e-3 and abs(fps - ntsc) > 1e-3:
        return Fraction(ntsc * 1000, 1001)
    return Fraction(fps).limit_denominator(1001)


def _check_frames(frames, what: str) -> np.ndarray:
    """`frames` as a C-contiguous uint8 numpy array (T, H, W, 3); numpy or torch, one frame (H, W, 3) allowed."""
    if hasattr(frames, "detach"):  # a torch tensor, checked without importing torch
        if str(frames.dtype) != "torch.uint8":  # before .numpy(), which cannot take bfloat16
            raise InputError(f"{what}: frames must be uint8 RGB in 0..255, got dtype {frames.dtype}")
        frames = frames.detach().cpu().numpy()
    if not isinstance(frames, np.ndarray):
        raise InputError(f"{what}: frames must be a numpy array or torch tensor, got {type(frames).__name__}")
    if frames.dtype != np.uint8:
        raise InputError(f"{what}: frames must be uint8 RGB in 0..255, got dtype {frames.dtype}")
    if frames.ndim == 3:
        frames = frames[None]  # (1, H, W, 3)
    if frames.ndim != 4 or frames.shape[-1] != 3 or 0 in frames.shape[1:3]:
        raise InputError(f"{what}: frames must have shape (T, H, W, 3), got {tuple(frames.shape)}")
    return np.ascontiguousarray(frames)


class VideoWriter:
    """Write a video chunk by chunk, atomically.

    >>> with VideoWriter("clip.mp4", fps=16) as w:
    ...     for chunk in decoder_chunks:  # uint8 (t, H, W, 3), numpy or torch
    ...         w.write(chunk)

    The target is checked when the writer is made: an existing file is refused unless ``overwrite=True``, and
    the folder must exist. Frames go to a temporary file in the same folder, renamed onto the target when the
    ``with`` block ends cleanly; if it raises (or the encoder fails) the temporary file is removed and the
    target left as it was. Odd widths or heights (MP4, WebM) are padded to even by repeating the last row or
    column, so a reader sees the padded size. `fps` may be fractional (23.976 or ``Fraction(24000, 1001)``).
    """

    def __init__(self, path: str | os.PathLike, fps: float | Fraction, *, crf: int = 18, overwrite: bool = False):
        self.path = Path(path)
        self._format = _output_format(self.path)
        self.fps = self._check_rate(fps)
        self.crf = self._check_crf(crf)
        self.overwrite = overwrite
        check_target(self.path, overwrite)
        self.frames_written = 0
        self.closed = False  # after close() or abort()
        self._finished = False  # close() succeeded: the target holds the video
        self._size = None  # (H, W) of the first chunk
        self._tmp = self._container = self._stream = None

    def _check_rate(self, fps) -> Fraction:
        if not (isinstance(fps, Real) and 0 < fps <= self._format.max_fps):
            raise InputError(f"{self.path}: fps must be in (0, {self._format.max_fps:g}], got {fps!r}")
        return _frame_rate(fps if isinstance(fps, Fraction) else float(fps))

    def _check_crf(self, crf) -> int:
        top = self._format.max_crf
        if top is not None and not (isinstance(crf, Integral) and 0 <= crf <= top):
            raise InputError(f"{self.path}: crf must be an integer in 0..{top}, got {crf!r}")
        return crf

    # -------------------------------------------------------------------------------------- lifecycle

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def close(self) -> Path:
        """Flush the encoder, finish the file and rename it onto the target; returns the target."""
        if self._finished:
            return self.path
        if self.closed:
            raise InputError(f"{self.path}: the writer was aborted; nothing was written")
        if self._container is None:
            self.abort()
            raise InputError(f"{self.path}: no frames were written")
        try:
            self._encode(None)
            self._close_container()
            publish(self._tmp, self.path, self.overwrite)
        except BaseException:
            self.abort()
            raise
        self._tmp = None
        self.closed = self._finished = True
        return self.path

    def abort(self) -> None:
        """Drop everything written so far: the target is left as it was. Safe to call twice."""
        self.closed = True
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # the file is discarded anyway; the error that brought us here matters
                pass
            self._container = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None

    # ---------------------------------------------------------------------------------------- frames

    def write(self, frames) -> None:
        """Append frames: uint8 (t, H, W, 3) RGB (or one (H, W, 3) frame), numpy or torch, any device."""
        if self.closed:
            raise InputError(f"{self.path}: the writer is closed")
        frames = _check_frames(frames, str(self.path))
        if self._size is None:
            self._size = frames.shape[1:3]
        elif frames.shape[1:3] != self._size:
            h, w = self._size
            raise InputError(
                f"{self.path}: frame size changed from {h}x{w} to {frames.shape[1]}x{frames.shape[2]} (HxW)"
            )
        try:
            if self._container is None:
                self._open()
            for rgb in frames:
                self._encode(self._to_video_frame(rgb))
        except BaseException:
            self.abort()
            raise

    def _open(self) -> None:
        """Reserve the temporary file and start the container; the frame size is known from the first chunk."""
        fmt = self._format
        self._tmp = reserve_temp(self.path)
        height, width = (n + n % 2 for n in self._size) if fmt.even else self._size
        options = {"movflags": "+faststart"} if fmt.muxer == "mp4" else {}
        try:
            self._container = av.open(str(self._tmp), "w", format=fmt.muxer, options=options)
            stream = self._container.add_stream(fmt.codec, rate=self.fps, options=self._codec_options())
        except (av.FFmpegError, OSError) as e:
            raise ResourceError(f"{self.path}: cannot start the {fmt.codec} encoder ({_reason(e)})") from None
        stream.width, stream.height, stream.pix_fmt = width, height, fmt.pix_fmt
        if fmt.pix_fmt == "yuv420p":
            _tag_bt709(stream.codec_context)
        self._stream = stream

    def _codec_options(self) -> dict[str, str]:
        codec = self._format.codec
        if codec == "libx264":
            return {"crf": str(self.crf), "preset": "medium"}
        if codec == "libvpx-vp9":
            # b=0 with crf is libvpx's constant-quality mode; cpu-used 4 + row-mt: the usual speed trade-off
            return {"crf": str(self.crf), "b": "0", "deadline": "good", "cpu-used": "4", "row-mt": "1"}
        return {}

    def _to_video_frame(self, rgb: np.ndarray):
        """One (H, W, 3) RGB array as the encoder's input frame, with its presentation timestamp."""
        if self._format.pix_fmt == "pal8":
            frame = av.VideoFrame.from_ndarray(_quantize(rgb), format="pal8")
        else:
            frame = av.VideoFrame.from_ndarray(_pad_even(rgb), format="rgb24")
            frame = frame.reformat(format="yuv420p", dst_colorspace="ITU709", dst_color_range="MPEG")
        frame.pts = self.frames_written
        frame.time_base = 1 / self.fps
        self.frames_written += 1
        return frame

    def _close_container(self) -> None:
        """Write the trailer (the MP4 index, moved to the front for faststart) and close the file."""
        try:
            self._container.close()
        except (av.FFmpegError, OSError) as e:
            raise ResourceError(f"{self.path}: writing failed ({_reason(e)})") from None
        self._container = None

    def _encode(self, frame) -> None:
        """Encode one frame (None flushes) and mux its packets; encoder or disk failures become ResourceError."""
        try:
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        except (av.FFmpegError, OSError) as e:
            raise ResourceError(f"{self.path}: writing failed ({_reason(e)})") from None


def write_video(
    path: str | os.PathLike, frames, fps: float | Fraction, *, crf: int = 18, overwrite: bool = False
) -> Path:
    """Write uint8 (T, H, W, 3) frames (numpy or torch) to `path` atomically; see `VideoWriter`."""
    frames = _check_frames(frames, str(path))
    with VideoWriter(path, fps, crf=crf, overwrite=overwrite) as writer:
        writer.write(frames)
    return writer.path


# -------------------------------------------------------------------------------------------- sinks


class FrameCollector:
    """The in-memory counterpart of `VideoWriter`: keeps the chunks written to it; the result is a `Video`."""

    def __init__(self, fps: float):
        self.fps, self.chunks = fps, []

    def write(self, frames: np.ndarray) -> None:
        self.chunks.append(frames)

    def result(self) -> Video:
        return Video(frames=np.concatenate(self.chunks), fps=self.fps)


class FileSink:
    """Chunks streamed into a `VideoWriter`; the result is the written file's path."""

    def __init__(self, writer: VideoWriter, path: Path):
        self.writer, self.path = writer, path

    def write(self, frames: np.ndarray) -> None:
        self.writer.write(frames)

    def result(self) -> Path:
        return self.path


@contextmanager
def frame_sink(output: str | os.PathLike | None, fps: float, overwrite: bool = False):
    """Where generated chunks go: a streaming `VideoWriter` into ``output`` (atomic: nothing is left if the
    block fails), or with no output a `FrameCollector` for an in-memory `Video`. ``sink.result()`` after."""
    if output is None:
        yield FrameCollector(fps)
        return
    with VideoWriter(output, fps, overwrite=overwrite) as writer:
        yield FileSink(writer, Path(output))


# ----------------------------------------------------------------------------------- encoding helpers


def _pad_even(rgb: np.ndarray) -> np.ndarray:
    """Pad (H, W, 3) to even H and W by repeating the last row / column (edge replication: no dark border)."""
    h, w = rgb.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return rgb
    return np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")  # (H', W', 3)


def _tag_bt709(codec_context) -> None:
    """Mark the stream as BT.709 limited range, the matrix `_to_video_frame` converts with, so that players
    and decoders do not have to guess (FFmpeg guesses BT.601 for untagged video, browsers often BT.709)."""
    codec_context.colorspace = 1  # AVCOL_SPC_BT709
    codec_context.color_primaries = ColorPrimaries.BT709
    codec_context.color_trc = ColorTrc.BT709
    codec_context.color_range = ColorRange.MPEG


def _quantize(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) RGB to 256 colours with this frame's own median-cut palette (Pillow), for GIF.

    A per-frame palette keeps colours true where a fixed 3-3-2 palette (``rgb8``) would band them; FFmpeg's GIF
    encoder writes it as the frame's local colour table. Returns (indices (H, W), palette (256, 4) ARGB).
    """
    from PIL import Image

    image = Image.fromarray(rgb).quantize(256, method=Image.Quantize.MEDIANCUT)
    colours = np.asarray(image.getpalette(), dtype=np.uint8).reshape(-1, 3)  # (n, 3)
    palette = np.zeros((256, 4), dtype=np.uint8)
    palette[:, 0] = 255  # opaque
    palette[: len(colours), 1:] = colours
    return np.asarray(image, dtype=np.uint8), palette
