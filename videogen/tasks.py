"""The tasks -- generate, image-first, extend, interpolate -- over the pipeline's public steps, and `VideoPipeline`.

Every task is text-to-video with some latent frames known in advance: the known pixel frames are encoded by the
causal VAE (`Pipeline.encode_frames`), and the sampler holds those latent frames at their clean values while it
denoises the rest (`Pipeline.denoise`, `videogen.diffusion.sampling.sample`). What differs between tasks is only
the mask over latent frames:

    generate                  known = [0 0 0 0 0]   text-to-video
    image-first               known = [1 0 0 0 0]   the first latent frame sampled alone, then the clip from it
    extend / image-to-video   known = [1 1 0 0 0]   the first 1 + k latent frames: the last 1 + 4k input frames
    interpolate               known = [1 0 0 0 1]   START's frame, and END's frame as the last latent frame

How the frames are held is the model folder's choice (`Pipeline.frame_method`): at timestep 0 for a
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

from videogen.atomic import check_target
from videogen.diffusion.sampling import StepCallback
from videogen.errors import InputError
from videogen.frames import fit_frames, fit_notice
from videogen.io import Video, frame_sink, iter_frames, probe_video
from videogen.pipeline import Condition, Pipeline, TextStates, bridge_clip  # noqa: F401 (bridge_clip: the tasks' API)
from videogen.settings import Settings

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


def _fitted(source: FrameSource, height: int, width: int, notify: Notify | None) -> Iterator[np.ndarray]:
    """The source's chunks fitted to (height, width); the first chunk reports the fit."""
    for i, chunk in enumerate(source.chunks()):
        if i == 0 and notify is not None:
            notice = fit_notice(source.name, chunk.shape[1:3], height, width)
            if notice:
                notify(notice)
        yield fit_frames(chunk, height, width)


# ------------------------------------------------------------------------------------------ latents


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
    """What every sampling window of a task shares: the settings, the text states, the method, the noise."""

    pipe: Pipeline
    settings: Settings
    text: TextStates
    method: str
    generator: torch.Generator
    attention: str | None
    progress: bool

    latents: torch.Tensor | None = None  # the caller's initial noise for the first window

    def sample(self, first: np.ndarray | None = None, last: np.ndarray | None = None) -> torch.Tensor:
        """One window's latents (1, C, T', H', W'), conditioned on the frames it opens with and ends on
        (`Pipeline.condition`: the model's own way)."""
        s, pipe = self.settings, self.pipe
        condition = pipe.condition(s, first=first, last=last, method=self.method)
        if self.latents is not None:
            noise, self.latents = pipe.initial_noise(s, self.latents), None
        else:
            shape = pipe.latent_shape(s.num_frames, s.height, s.width)
            noise = torch.randn(shape, generator=self.generator, dtype=torch.float32).to(pipe.device)
        return pipe.denoise(s, noise, self.text, condition=condition, method=self.method,
                            attention=self.attention, progress=self.progress)

    def decode(self, latents: torch.Tensor) -> Iterator[np.ndarray]:
        return self.pipe.decode_frames(latents, progress=self.progress, total=self.settings.num_frames)


def check_run(pipe: Pipeline, settings: Settings, *, output, overwrite: bool, attention: str | None) -> Path | None:
    """Refuse, before any work, an output that would fail or destroy something, an unknown attention backend,
    and a run that cannot fit in the device's memory. Returns the output path (None: in memory)."""
    from videogen.models.attention import backend_name

    output = None if output is None else Path(output)
    if output is not None:
        check_target(output, overwrite)
    if attention is not None:
        backend_name(attention)
    pipe.check_memory(settings, keep_frames=output is None)
    return output


def _start(pipe: Pipeline, prompt: str, *, method, attention, progress, output, overwrite, latents=None,
           notify: Notify | None = None, **overrides) -> tuple[_Run, Path | None]:
    """Validate a task's settings, check the output and memory, encode the prompt: all before the first window."""
    settings = pipe.settings(overrides.pop("settings", None), **overrides)
    output = check_run(pipe, settings, output=output, overwrite=overwrite, attention=attention)
    chosen, method = method, pipe.frame_method(method)
    if chosen is None and method == "replace" and notify is not None:
        notify(f"this {pipe.layout.name} model has no frame conditioning of its own: the given frames are held "
               "by the training-free replacement method")
    if latents is not None:
        pipe.initial_noise(settings, latents)  # the shape check, before any work
    text = pipe.encode_prompts(prompt, settings)
    generator = torch.Generator("cpu").manual_seed(settings.seed)
    return _Run(pipe, settings, text, method, generator, attention, progress, latents), output


def _window_of(pipe: Pipeline, latents: torch.Tensor | None) -> dict:
    """The window size that given initial latents ``(1, C, T', H', W')`` fix: frames, height and width."""
    if latents is None:
        return {}
    if latents.ndim != 5:
        raise InputError(f"initial latents must be (1, C, T', H', W'), got shape {tuple(latents.shape)}")
    g = pipe.geometry
    t, h, w = latents.shape[2:]
    return dict(num_frames=1 + g.temporal * (t - 1), height=h * g.spatial, width=w * g.spatial)


# ----------------------------------------------------------------------------------------- generate


@torch.no_grad()
def generate(pipe: Pipeline, prompt: str, *, latents: torch.Tensor | None = None,
             callback: StepCallback | None = None, output: str | Path | None = None, overwrite: bool = False,
             attention: str | None = None, progress: bool = True, **overrides):
    """A clip from a prompt; see `VideoPipeline.generate`."""
    settings = pipe.settings(overrides.pop("settings", None), **overrides)
    output = check_run(pipe, settings, output=output, overwrite=overwrite, attention=attention)
    noise = pipe.initial_noise(settings, latents)
    pipe.condition(settings)  # text alone: refused by a model that needs a first frame
    with frame_sink(output, settings.fps, overwrite) as sink:
        text = pipe.encode_prompts(prompt, settings)
        options = dict(callback=callback, attention=attention, progress=progress)
        if settings.image_first and noise.shape[2] > 1:
            clean = denoise_image_first(pipe, settings, noise, text, **options)
        else:
            clean = pipe.denoise(settings, noise, text, **options)
        for frames in pipe.decode_frames(clean, progress=progress, total=settings.num_frames):
            sink.write(frames)
    return sink.result()


def denoise_image_first(pipe: Pipeline, settings: Settings, noise: torch.Tensor, text: TextStates, *,
                        callback: StepCallback | None = None, attention: str | None = None,
                        progress: bool = False) -> torch.Tensor:
    """Text-to-video in two passes, as Emu Video factorises it (Girdhar et al. 2023): the first latent frame
    (under the causal VAE it codes the first frame by itself, so it is an image), then the whole clip with
    that frame held known. The first pass decides what is shown, the second how it moves; a small DiT learns
    to keep an object's look across frames far sooner from a given frame than from text alone. For models
    trained on both (``objective.p_image`` and ``p_first``). Same noise as plain sampling: frame 0's for the
    image, the rest for the clip.

    ``settings.image_first_frames`` > 1: the first pass samples the clip's opening (that many frames, at most
    the clip) and keeps only its first latent frame, so the image is drawn with the motion that follows it in
    view -- where an object starts depends on where it goes.
    """
    options = dict(callback=callback, attention=attention, progress=progress)
    opening = pipe.geometry.latent_frames(settings.image_first_frames)
    image = pipe.denoise(settings.first_pass(), noise[:, :, :opening], text, **options)[:, :, :1]  # (1, C, 1, H', W')
    known, clean = pipe.known_window(noise.shape, {0: image})  # the mask and latents extend holds
    return pipe.denoise(settings, noise, text, known=known, clean=clean, method=pipe.frame_method(), **options)


def _size(pipe: Pipeline, height: int | None, width: int | None) -> tuple[int, int]:
    return height or pipe.defaults.height, width or pipe.defaults.width


# ------------------------------------------------------------------------------------------- extend


@torch.no_grad()
def extend(
    pipe: Pipeline,
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
    latents: torch.Tensor | None = None,
    **overrides,
):
    """The input's frames followed by ``num_new_frames`` new frames that continue them.

    video: a `videogen.io.Video`, uint8 frames (T, H, W, 3), one image (H, W, 3), or a video/image file.
    An image is animated (image-to-video: 1 + N frames). num_new_frames: any positive count (default: one
    window's worth); the last window is generated whole and trimmed. context: how many of the last frames
    condition each window, ``1 + 4k`` (default: one frame for a Wan model's own image conditioning -- I2V,
    FLF2V, TI2V --, else half the window's latent frames; fewer if the input is shorter). window: frames per sampling window, ``4k + 1`` (default: the model folder's). height/width:
    the output size (default: the folder's); inputs are centre-cropped and resized to it, and ``notify``
    is told so. fps: default the input's (the folder's for an image). method: "timestep" or "replace"
    (default: what the folder declares; an I2V model takes frames as input channels). latents: the first
    window's initial noise ``(1, C, T', H', W')``, which fixes the window's frames and size. overrides: other `videogen.settings.Settings` fields (negative_prompt,
    num_steps, guidance_scale, guidance_interval, shift, sampler, seed...).

    Returns a `videogen.io.Video`, or with ``output`` the `Path` of the file the frames streamed into.
    """
    source = open_source(video, "input video")
    fixed = _window_of(pipe, latents)
    height, width = _size(pipe, height or fixed.get("height"), width or fixed.get("width"))
    window = window or fixed.get("num_frames") or pipe.defaults.num_frames
    temporal = pipe.geometry.temporal
    if context is None:  # a Wan model's own conditioning was trained on one frame; ours on half a window
        native = pipe.layout.condition_channels or pipe.layout.expand_timesteps
        context = 1 if native else default_context(window, temporal)
    wanted = check_context(context, window, temporal)
    run, output = _start(pipe, prompt, num_frames=window, height=height, width=width, fps=fps or source.fps,
                         method=method, attention=attention, progress=progress, output=output,
                         overwrite=overwrite, latents=latents, notify=notify, **overrides)
    if num_new_frames is not None:
        check_new_frames(num_new_frames)
    with frame_sink(output, run.settings.fps, overwrite) as sink:
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
    temporal = run.pipe.geometry.temporal
    produced = 0
    while produced < num_new:
        k = context_frames(len(tail), context, temporal)  # 1 + 4k frames encode to 1 + k latent frames
        latents = run.sample(first=tail[-k:])  # (1, C, T', H', W')
        for chunk in _new_frames(run, latents, skip=k, limit=num_new - produced):
            produced += len(chunk)
            tail = np.concatenate([tail, chunk])[-context:]
            yield chunk


def _new_frames(run: _Run, latents: torch.Tensor, *, skip: int, limit: int) -> Iterator[np.ndarray]:
    """Decode a window, dropping its first ``skip`` frames (the context again) and all after ``limit``."""
    seen = 0
    for chunk in run.decode(latents):
        start, seen = seen, seen + len(chunk)
        chunk = chunk[max(0, skip - start):]
        chunk = chunk[:max(0, limit)]
        if len(chunk):
            limit -= len(chunk)
            yield chunk


# -------------------------------------------------------------------------------------- interpolate


@torch.no_grad()
def interpolate(
    pipe: Pipeline,
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
    latents: torch.Tensor | None = None,
    **overrides,
):
    """``num_frames`` frames that begin on START's last frame and end on END's first, moving between.

    start, end: as `extend`'s video (images or videos). num_frames: ``4k + 1``, at least 5 (default: the
    folder's window). The two given frames are pasted into the output exactly; the others are sampled
    conditioned on both, the model's own way (an FLF2V model's first and last frame, else the first and
    last latent frames held known). Other arguments as in `extend`.
    """
    first_source, last_source = open_source(start, "start"), open_source(end, "end")
    fixed = _window_of(pipe, latents)
    height, width = _size(pipe, height or fixed.get("height"), width or fixed.get("width"))
    num_frames = num_frames or fixed.get("num_frames") or pipe.defaults.num_frames
    temporal = pipe.geometry.temporal
    if isinstance(num_frames, (int, np.integer)) and not isinstance(num_frames, bool) and 0 < num_frames <= temporal:
        raise InputError(f"interpolation needs at least {temporal + 1} frames, got {num_frames}")
    run, output = _start(pipe, prompt, num_frames=num_frames, height=height, width=width,
                         fps=fps or first_source.fps, method=method, attention=attention, progress=progress,
                         output=output, overwrite=overwrite, latents=latents, notify=notify, **overrides)
    a = fit_frames(_report(last_frame(first_source), first_source.name, height, width, notify), height, width)
    b = fit_frames(_report(first_frame(last_source), last_source.name, height, width, notify), height, width)
    latents = run.sample(first=a, last=b)  # (1, C, T', H', W')
    with frame_sink(output, run.settings.fps, overwrite) as sink:
        for chunk in _pasted(run, latents, a, b):
            sink.write(chunk)
    return sink.result()


def _report(frame: np.ndarray, name: str, height: int, width: int, notify: Notify | None) -> np.ndarray:
    notice = fit_notice(name, frame.shape[1:3], height, width)
    if notice and notify is not None:
        notify(notice)
    return frame


def _pasted(run: _Run, latents: torch.Tensor, a: np.ndarray, b: np.ndarray) -> Iterator[np.ndarray]:
    """Decoded frames with the given first and last frames pasted in exactly."""
    total, seen = run.settings.num_frames, 0
    for chunk in run.decode(latents):
        chunk = chunk.copy()
        if seen == 0:
            chunk[0] = a[0]
        seen += len(chunk)
        if seen == total:
            chunk[-1] = b[0]
        yield chunk



# ------------------------------------------------------------------------------------ the user's object


class VideoPipeline(Pipeline):
    """A loaded model with its tasks: ``VideoPipeline.from_pretrained(folder).generate("a red circle ...")``.

    Every task takes the settings of `videogen.settings.Settings` as keyword overrides of the folder's
    defaults (``num_frames=17, num_steps=4, guidance_scale=5.0, seed=7``...; ``None`` keeps a default), and
    ``settings=`` a whole `Settings` to start from instead of the folder's (``pipe.defaults.override(...)``).
    """

    def generate(self, prompt: str, *, latents: torch.Tensor | None = None, callback: StepCallback | None = None,
                 output: str | Path | None = None, overwrite: bool = False, attention: str | None = None,
                 progress: bool = True, **overrides):
        """A clip from a prompt.

        seed: the initial noise is drawn from ``torch.Generator().manual_seed(seed)`` on the CPU (the same
        seed gives the same clip on any device); latents: initial noise ``(1, C, T', H', W')`` instead.
        image_first: sample the first latent frame alone, then the clip from it (`denoise_image_first`).
        callback: called after each step with (step, timestep, latents), for each pass. attention: a
        `videogen.models.attention` backend name for the DiT.

        Returns a `videogen.io.Video` (uint8 frames ``(T, H, W, 3)`` and fps); with ``output``, the frames
        stream to that file as they are decoded and its `Path` is returned instead.
        """
        return generate(self, prompt, latents=latents, callback=callback, output=output, overwrite=overwrite,
                        attention=attention, progress=progress, **overrides)

    def extend(self, video, prompt: str, num_new_frames: int | None = None, **options):
        """The input followed by ``num_new_frames`` frames that continue it; see `extend`."""
        return extend(self, video, prompt, num_new_frames, **options)

    def interpolate(self, start, end, prompt: str, num_frames: int | None = None, **options):
        """``num_frames`` frames from START's last frame to END's first; see `interpolate`."""
        return interpolate(self, start, end, prompt, num_frames, **options)

    def load_lora(self, path: str | Path, scale: float = 1.0, expert: str | None = None) -> int:
        """Merge a LoRA file into an expert's weights (`videogen.models.lora.merge_lora`): the number of linears
        changed. The merge is permanent for this object: load the model again to drop it.

        expert: ``"transformer"`` (or ``"high"``) or ``"transformer_2"`` (or ``"low"``, Wan2.2 A14B's low-noise
        expert); None: the one the file records (``videogen train`` writes ``lora.safetensors`` and
        ``lora_2.safetensors`` for the two), else ``transformer``.
        """
        from videogen.models.lora import merge_lora

        return merge_lora(self, path, scale, expert=expert)
