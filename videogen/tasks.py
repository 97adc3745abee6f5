"""Extend, interpolate and animate existing videos: one mechanism, known latent frames held clean.

Every task is text-to-video with some latent frames known in advance (DESIGN.md, "Tasks differ only in which
latent frames are held known"): the known pixel frames are encoded by the causal VAE, and the sampler holds
those latent frames at their clean values while it denoises the rest (`videogen.diffusion.sampling.sample`,
through `VideoPipeline.denoise`). What differs between tasks is only the mask over latent frames:

    extend / image-to-video   known = [1 1 0 0 0]   the first 1 + k latent frames: the last 1 + 4k input frames
    interpolate               known = [1 0 0 0 1]   START's frame, and END's frame as the last latent frame

How the frames are held is the model folder's choice (`VideoPipeline.frame_method`): at timestep 0 for a
model trained with frame conditioning, or the training-free "replace" method for one that was not.

Latent alignment with the causal VAE (4x in time, the first frame on its own): a context of ``1 + 4k`` pixel
frames encodes to ``1 + k`` latent frames, so a window of ``N = 1 + 4m`` frames whose first ``1 + k`` latent
frames are known decodes to the context again, then ``N - (1 + 4k)`` new frames. Only the new frames are kept:
the input's own frames are copied to the output as they were, never re-rendered by the VAE.

Long extensions proceed window by window, each conditioned on the last ``context`` frames written, and every
window's new frames stream into the writer as they are decoded: memory holds one window and the context,
however long the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from videogen.errors import InputError
from videogen.memory import check_fits
from videogen.pipeline import Request, _sink, check_output

CHUNK = 16  # frames read, fitted and written at a time
Notify = Callable[[str], None]


# ------------------------------------------------------------------------------------------- inputs


@dataclass
class FrameSource:
    """A user's frames -- a `Video`, uint8 frames or a file -- read chunk by chunk, never whole.

    fps is None for a still image (one frame, no rate of its own).
    """

    name: str
    fps: float | None
    chunks: Callable[[], Iterator[np.ndarray]]  # uint8 (t, H, W, 3) chunks, in order


def open_source(source, what: str) -> FrameSource:
    """A `FrameSource` over a `videogen.io.Video`, uint8 frames (T, H, W, 3) / (H, W, 3), or a file path.

    A missing, empty, corrupt or non-video file raises `videogen.io.VideoFileError` here, before any work.
    """
    from videogen.io import Video, iter_frames, probe_video

    if isinstance(source, FrameSource):
        return source
    if isinstance(source, (str, Path)):
        info = probe_video(source)
        fps = None if info.is_image or info.frames == 1 else info.fps
        return FrameSource(str(source), fps, lambda: iter_frames(source, chunk=CHUNK))
    fps = source.fps if isinstance(source, Video) else None  # bare frames carry no rate
    if not isinstance(source, Video):
        frames = source.detach().cpu().numpy() if isinstance(source, torch.Tensor) else source
        frames = frames[None] if getattr(frames, "ndim", 0) == 3 else frames  # (T, H, W, 3)
        source = Video(frames, fps=1.0)  # checks dtype and shape
    if source.num_frames == 0:
        raise InputError(f"{what}: no frames given")
    fps = fps if source.num_frames > 1 else None
    frames = source.frames
    return FrameSource(what, fps, lambda: (frames[i:i + CHUNK] for i in range(0, len(frames), CHUNK)))


def first_frame(source: FrameSource) -> np.ndarray:
    """The source's first frame, uint8 (1, H, W, 3)."""
    for chunk in source.chunks():
        return chunk[:1]
    raise InputError(f"{source.name}: no frames")


def last_frame(source: FrameSource) -> np.ndarray:
    """The source's last frame, uint8 (1, H, W, 3), streaming through the rest."""
    last = None
    for chunk in source.chunks():
        last = chunk[-1:]
    if last is None:
        raise InputError(f"{source.name}: no frames")
    return last


# ------------------------------------------------------------------------------------ frame fitting


def crop_box(height: int, width: int, target_h: int, target_w: int) -> tuple[int, int, int, int]:
    """The centred ``(top, left, h, w)`` crop of a ``height x width`` frame with the target's aspect ratio."""
    if width * target_h > height * target_w:  # too wide: crop the sides
        w = max(1, round(height * target_w / target_h))
        return 0, (width - w) // 2, height, w
    h = max(1, round(width * target_h / target_w))
    return (height - h) // 2, 0, h, width


def fit_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 frames (t, h, w, 3) centre-cropped to the target's aspect ratio and resized to (t, H, W, 3).

    Frames already of the target size come back unchanged (the same pixels, byte for byte). Resizing is
    bicubic with antialiasing, so shrinking does not alias.
    """
    if frames.shape[1:3] == (height, width):
        return frames
    top, left, h, w = crop_box(frames.shape[1], frames.shape[2], height, width)
    x = torch.from_numpy(np.ascontiguousarray(frames[:, top:top + h, left:left + w]))
    x = rearrange(x, "t h w c -> t c h w").float()  # (t, 3, h, w)
    if (h, w) != (height, width):
        x = F.interpolate(x, size=(height, width), mode="bicubic", antialias=True, align_corners=False)
    return rearrange(x.round().clamp(0, 255).to(torch.uint8), "t c h w -> t h w c").numpy()  # (t, H, W, 3)


def fit_notice(name: str, size: tuple[int, int], height: int, width: int) -> str | None:
    """One line saying how an input was fitted to the model's frame size, or None when it already fits."""
    h, w = size
    if (h, w) == (height, width):
        return None
    _, _, ch, cw = crop_box(h, w, height, width)
    crop = "" if (ch, cw) == (h, w) else f" centre-cropped to {cw}x{ch} and"
    return f"{name}: {w}x{h} frames{crop} resized to {width}x{height} to fit the model"


def _fitted(source: FrameSource, height: int, width: int, notify: Notify | None) -> Iterator[np.ndarray]:
    """The source's chunks fitted to (height, width); the first chunk reports the fit."""
    for i, chunk in enumerate(source.chunks()):
        if i == 0 and notify is not None:
            notice = fit_notice(source.name, chunk.shape[1:3], height, width)
            if notice:
                notify(notice)
        yield fit_frames(chunk, height, width)


# ------------------------------------------------------------------------------------------ latents


def to_pixels(frames: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 frames (t, H, W, 3) -> float pixels (1, 3, t, H, W) in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).to(device).float() / 127.5 - 1.0
    return rearrange(x, "t h w c -> 1 c t h w")  # (1, 3, t, H, W)


def encode_frames(pipe, frames: np.ndarray) -> torch.Tensor:
    """uint8 frames (1 + 4k, H, W, 3) -> normalized latents (1, C, 1 + k, H/8, W/8), as the DiT sees them.

    The posterior's mean, not a sample: the known frames should be the input, not a noisy reading of it.
    """
    with pipe._on_device(pipe.vae):
        z = pipe.vae.encode(to_pixels(frames, pipe.device).to(pipe.vae.dtype)).mode()  # (1, C, 1 + k, H', W')
        return pipe.vae.normalize(z).float()


def known_window(pipe, shape: tuple[int, ...], known_latents: dict[int, torch.Tensor]):
    """The ``known`` mask (T',) and ``clean`` latents (1, C, T', H', W') of one window.

    known_latents: latent frame index -> normalized latents (1, C, t', H', W') starting at that index.
    """
    clean = torch.zeros(shape, device=pipe.device)  # (1, C, T', H', W')
    known = torch.zeros(shape[2], dtype=torch.bool, device=pipe.device)  # (T',)
    for index, z in known_latents.items():
        clean[:, :, index:index + z.shape[2]] = z
        known[index:index + z.shape[2]] = True
    return known, clean


def context_frames(available: int, wanted: int, temporal: int = 4) -> int:
    """The largest ``1 + temporal * k`` frame count that is at most both ``available`` and ``wanted``."""
    n = min(available, wanted)
    return (n - 1) // temporal * temporal + 1


def default_context(window: int, temporal: int = 4) -> int:
    """Half the window's latent frames known (at least one): 9 frames of a 17-frame window."""
    latent = 1 + (window - 1) // temporal
    return 1 + temporal * max(0, min((latent - 1) // 2, latent - 2))


def check_context(context, window: int, temporal: int = 4) -> int:
    """A context of ``1 + 4k`` frames that leaves at least one latent frame of the window to generate."""
    if isinstance(context, bool) or not isinstance(context, (int, np.integer)) or context <= 0:
        raise InputError(f"context must be a positive whole number of frames, got {context!r}")
    if (context - 1) % temporal:
        lower = (context - 1) // temporal * temporal + 1
        raise InputError(f"context {context} is not {temporal}k+1 frames: use {lower} or {lower + temporal}")
    if context > window - temporal:
        raise InputError(f"context {context} leaves nothing to generate in a window of {window} frames: "
                         f"use at most {window - temporal}")
    return int(context)


# ------------------------------------------------------------------------------------------- shared


@dataclass
class _Run:
    """What every window of a task shares: the request, the text states, the method and the noise source."""

    pipe: object
    request: Request
    cond: torch.Tensor
    uncond: torch.Tensor | None
    method: str
    generator: torch.Generator
    attention: str | None
    progress: bool

    def sample(self, known_latents: dict[int, torch.Tensor]) -> torch.Tensor:
        """One window's latents (1, C, T', H', W'), the given latent frames held clean."""
        r, pipe = self.request, self.pipe
        shape = pipe.latent_shape(r.num_frames, r.height, r.width)
        noise = torch.randn(shape, generator=self.generator, dtype=torch.float32).to(pipe.device)
        known, clean = known_window(pipe, shape, known_latents)
        return pipe.denoise(r, noise, self.cond, self.uncond, known=known, clean=clean, method=self.method,
                            attention=self.attention, progress=self.progress)


def _start(pipe, prompt: str, *, num_frames, fps, method, attention, progress, output, overwrite,
           **settings) -> tuple[_Run, Path | None]:
    """Validate a task's settings, check memory, encode the prompt: everything before the first window."""
    from videogen.pipeline import _attention_backend

    request = pipe.make_request(prompt, num_frames=num_frames, fps=fps, **settings)
    output = check_output(output, overwrite)
    method = pipe.frame_method(method)
    _attention_backend(attention)  # an unknown backend fails here, before any work
    check_fits(pipe.estimate_memory(request, keep_frames=output is None), pipe.device,
               resident=pipe._resident_bytes())
    cond, uncond = pipe._encode_prompts(request)
    generator = torch.Generator("cpu").manual_seed(request.seed)
    return _Run(pipe, request, cond, uncond, method, generator, attention, progress), output


def _size(pipe, height: int | None, width: int | None) -> tuple[int, int]:
    return height or pipe.defaults.height, width or pipe.defaults.width


# ------------------------------------------------------------------------------------------- extend


@torch.no_grad()
def extend(
    pipe,
    video,
    prompt: str,
    num_new_frames: int | None = None,
    *,
    context: int | None = None,
    window: int | None = None,
    height: int | None = None,
    width: int | None = None,
    fps: float | None = None,
    method: str | None = None,
    output: str | Path | None = None,
    overwrite: bool = False,
    attention: str | None = None,
    progress: bool = True,
    notify: Notify | None = None,
    **settings,
):
    """The input's frames followed by ``num_new_frames`` new frames that continue them.

    video: a `videogen.io.Video`, uint8 frames (T, H, W, 3), one image (H, W, 3), or a video/image file.
    An image is animated (image-to-video: 1 + N frames). num_new_frames: any positive count (default: one
    window's worth); the last window is generated whole and trimmed. context: how many of the last frames
    condition each window, ``1 + 4k`` (default: half the window's latent frames; fewer if the input is
    shorter). window: frames per sampling window, ``4k + 1`` (default: the model folder's). height/width:
    the output size (default: the folder's); inputs are centre-cropped and resized to it, and ``notify``
    is told so. fps: default the input's (the folder's for an image). method: "timestep" or "replace"
    (default: what the folder declares). settings: `VideoPipeline.generate`'s negative_prompt, num_steps,
    guidance_scale, guidance_interval, shift, sampler and seed.

    Returns a `videogen.io.Video`, or with ``output`` the `Path` of the file the frames streamed into.
    """
    source = open_source(video, "input video")
    height, width = _size(pipe, height, width)
    window = window or pipe.defaults.num_frames
    temporal = pipe.vae.temporal_compression
    wanted = check_context(context if context is not None else default_context(window, temporal), window, temporal)
    run, output = _start(pipe, prompt, num_frames=window, height=height, width=width, fps=fps or source.fps,
                         method=method, attention=attention, progress=progress, output=output,
                         overwrite=overwrite, **settings)
    if num_new_frames is not None:
        check_new_frames(num_new_frames)
    with _sink(output, run.request.fps, overwrite) as sink:
        tail = _copy_input(_fitted(source, height, width, notify), sink, wanted)
        if num_new_frames is None:  # one window's worth after the context the input can give
            num_new_frames = window - context_frames(len(tail), wanted, temporal)
        for frames in extension_frames(run, tail, int(num_new_frames), wanted):
            sink.write(frames)
    return sink.result()


def check_new_frames(n) -> None:
    """A count of new frames: any positive whole number (the last window is trimmed to it)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
        raise InputError(f"number of new frames must be a positive whole number, got {n!r}")


def _copy_input(chunks: Iterable[np.ndarray], sink, keep: int) -> np.ndarray:
    """Write the input's frames as they are; return its last ``keep`` frames (t, H, W, 3), the context."""
    tail = None
    for chunk in chunks:
        sink.write(chunk)
        tail = chunk[-keep:] if tail is None else np.concatenate([tail, chunk])[-keep:]
    if tail is None:
        raise InputError("the input has no frames")
    return tail


def extension_frames(run: _Run, tail: np.ndarray, num_new: int, context: int) -> Iterator[np.ndarray]:
    """New frames, window by window, each conditioned on the last ``context`` frames before it.

    tail: uint8 (t, H, W, 3), the frames so far (at least the last ``context``). Yields uint8 chunks,
    ``num_new`` frames in all; only the tail and one window are held at any time.
    """
    temporal = run.pipe.vae.temporal_compression
    produced = 0
    while produced < num_new:
        k = context_frames(len(tail), context, temporal)  # 1 + 4k frames encode to 1 + k latent frames
        latents = run.sample({0: encode_frames(run.pipe, tail[-k:])})  # (1, C, T', H', W')
        for chunk in _new_frames(run, latents, skip=k, limit=num_new - produced):
            produced += len(chunk)
            tail = np.concatenate([tail, chunk])[-context:]
            yield chunk


def _new_frames(run: _Run, latents: torch.Tensor, *, skip: int, limit: int) -> Iterator[np.ndarray]:
    """Decode a window, dropping its first ``skip`` frames (the context again) and all after ``limit``."""
    seen = 0
    for chunk in run.pipe.decode_frames(latents, progress=run.progress, total=run.request.num_frames):
        start, seen = seen, seen + len(chunk)
        chunk = chunk[max(0, skip - start):]
        chunk = chunk[:max(0, limit)]
        if len(chunk):
            limit -= len(chunk)
            yield chunk


# -------------------------------------------------------------------------------------- interpolate


@torch.no_grad()
def interpolate(
    pipe,
    start,
    end,
    prompt: str,
    num_frames: int | None = None,
    *,
    height: int | None = None,
    width: int | None = None,
    fps: float | None = None,
    method: str | None = None,
    output: str | Path | None = None,
    overwrite: bool = False,
    attention: str | None = None,
    progress: bool = True,
    notify: Notify | None = None,
    **settings,
):
    """``num_frames`` frames that begin on START's last frame and end on END's first, moving between.

    start, end: as `extend`'s video (images or videos). num_frames: ``4k + 1``, at least 5 (default: the
    folder's window). The two given frames are pasted into the output exactly; the others are sampled
    with the first and last latent frames known. Other arguments as in `extend`.
    """
    first_source, last_source = open_source(start, "start"), open_source(end, "end")
    height, width = _size(pipe, height, width)
    num_frames = num_frames or pipe.defaults.num_frames
    temporal = pipe.vae.temporal_compression
    if isinstance(num_frames, (int, np.integer)) and not isinstance(num_frames, bool) and 0 < num_frames <= temporal:
        raise InputError(f"interpolation needs at least {temporal + 1} frames, got {num_frames}")
    run, output = _start(pipe, prompt, num_frames=num_frames, height=height, width=width,
                         fps=fps or first_source.fps, method=method, attention=attention, progress=progress,
                         output=output, overwrite=overwrite, **settings)
    a = fit_frames(_report(last_frame(first_source), first_source.name, height, width, notify), height, width)
    b = fit_frames(_report(first_frame(last_source), last_source.name, height, width, notify), height, width)
    latent = encode_frames(pipe, bridge_clip(a, b, run.request.num_frames, temporal))  # (1, C, T', H', W')
    latents = run.sample({0: latent[:, :, :1], latent.shape[2] - 1: latent[:, :, -1:]})
    with _sink(output, run.request.fps, overwrite) as sink:
        for chunk in _pasted(run, latents, a, b):
            sink.write(chunk)
    return sink.result()


def _report(frame: np.ndarray, name: str, height: int, width: int, notify: Notify | None) -> np.ndarray:
    notice = fit_notice(name, frame.shape[1:3], height, width)
    if notice and notify is not None:
        notify(notice)
    return frame


def bridge_clip(a: np.ndarray, b: np.ndarray, num_frames: int, temporal: int = 4) -> np.ndarray:
    """The clip whose first and last latent frames stand for frame ``a`` and frame ``b``.

    The causal VAE's last latent frame summarises the last ``temporal`` pixel frames, so those are all
    ``b`` (a still end, as the output will show it); the frames between are a linear crossfade, a neutral
    guess of the motion that only the causal history of the last latent frame sees (their own latent
    frames are not used). Encoding the clip at the window's full length gives the last latent frame the
    same causal history length as in the sampled video. a, b: uint8 (1, H, W, 3); returns (N, H, W, 3).
    """
    middle = num_frames - 1 - temporal
    weights = np.linspace(0.0, 1.0, middle + 2)[1:-1].reshape(-1, 1, 1, 1)  # (middle, 1, 1, 1)
    fade = ((1 - weights) * a.astype(np.float32) + weights * b.astype(np.float32)).round().astype(np.uint8)
    return np.concatenate([a, fade, np.repeat(b, temporal, axis=0)])  # (N, H, W, 3)


def _pasted(run: _Run, latents: torch.Tensor, a: np.ndarray, b: np.ndarray) -> Iterator[np.ndarray]:
    """Decoded frames with the given first and last frames pasted in exactly."""
    total, seen = run.request.num_frames, 0
    for chunk in run.pipe.decode_frames(latents, progress=run.progress, total=total):
        chunk = chunk.copy()
        if seen == 0:
            chunk[0] = a[0]
        seen += len(chunk)
        if seen == total:
            chunk[-1] = b[0]
        yield chunk

