"""The two halves of image-first text-to-video, measured apart on a shapes-world model (issue 7).

Image-first sampling (the folder's ``image_first`` setting) makes a clip as text-to-image, then
image-to-video from that image. A clip is right only if both halves are, so this tool scores them
separately, each by pixel analysis (`videogen.eval.shapes.analyze`) of what the library call returns:

- **text-to-image**: one frame per caption (eval_shapes' 72 captions, or the first ``--t2i``), generated
  with ``num_frames=1`` (the first latent frame alone) and scored on colour, shape and background -- a
  single frame has no direction;
- **image-to-video**: ``--i2v`` clips, each from a rendered first frame of a seeded shapes-world clip
  (every direction equally often, colours, shapes and backgrounds drawn), animated by
  `VideoPipeline.extend` with the folder's method, and its new frames scored on all four attributes.

- **the direction word** (``--word`` first frames): in the shapes world a clip's start position leaves room
  for its travel, so a first frame drawn for one direction tells much of it (an object on the right can only
  move left, up or down), and image-to-video can score its direction from the position without reading
  the word. Here each first frame is placed in a corner, where two directions fit (top left: right and
  down), and animated twice from the same noise, once with each of those words. A model that ignores the
  word moves the object the same way both times and can be right at most once per frame; ``both`` counts
  the frames where the object went as captioned both times.

The product of the two "all right" shares is roughly what image-first text-to-video can reach.

``tools/eval_parts.py`` is the command; it writes ``OUT/report.md`` and ``OUT/report.json``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from videogen.data.shapes import DIRECTIONS, SHAPES
from videogen.eval.adherence import captions
from videogen.eval.shapes import ATTRIBUTES, analyze, parse_caption, score, start_fits

IMAGE_ATTRIBUTES = ("color", "shape", "background")


def text_to_image(pipe, prompts: list[str], seed: int, **settings) -> list[dict]:
    """One frame per caption (seed + k), scored on the attributes one frame shows.

    settings: `VideoPipeline.generate`'s num_steps, guidance_scale, shift (None: the folder's)."""
    rows = []
    for k, caption in enumerate(prompts):
        frames = pipe.generate(caption, num_frames=1, seed=seed + k, progress=False, **settings).frames
        seen = analyze(frames)
        scored = score(seen, caption)
        right = {a: scored[a] for a in IMAGE_ATTRIBUTES}
        placed = start_fits(seen, parse_caption(caption).direction)  # the direction word read as a place
        rows.append({"caption": caption, "seed": seed + k, "frames": len(frames), **right,
                     "all_correct": all(right.values()), "placed": placed, "seen": drawn(seen, IMAGE_ATTRIBUTES)})
        print(f"[t2i {k + 1}/{len(prompts)}] {'ok' if rows[-1]['all_correct'] else '--'} {caption}", flush=True)
    return rows


def image_to_video(pipe, clips: int, seed: int, new_frames: int, **settings) -> list[dict]:
    """``clips`` animations of rendered first frames (directions in turn), scored on all four attributes."""
    from videogen.data.shapes import render, sample_spec

    rng, size = np.random.default_rng(seed), pipe.defaults.height
    directions, rows = list(DIRECTIONS), []
    for k in range(clips):
        spec = sample_spec(rng, "all", direction=directions[k % len(directions)])
        first = render(spec, size=size, num_frames=1)[0]
        video = pipe.extend(first, spec.caption, new_frames, seed=seed + k, progress=False, **settings)
        seen = analyze(video.frames[1:])
        scored = score(seen, spec.caption)
        rows.append({"caption": spec.caption, "seed": seed + k, "frames": len(video.frames),
                     **{a: scored[a] for a in ATTRIBUTES},
                     "all_correct": scored["all_correct"], "seen": drawn(seen, ATTRIBUTES)})
        print(f"[i2v {k + 1}/{clips}] {'ok' if rows[-1]['all_correct'] else '--'} {spec.caption}", flush=True)
    return rows


def corner_spec(rng, horizontal: str, vertical: str):
    """Two shapes-world clips with one first frame, moving ``horizontal`` and ``vertical``: the frame lies in
    the corner where both paths fit."""
    from dataclasses import replace

    from videogen.data.shapes import sample_spec, start_range

    spec = sample_spec(rng, "all", direction=horizontal)  # x leaves room for the horizontal travel
    y = rng.uniform(*start_range(spec.size, spec.travel, DIRECTIONS[vertical][1]))
    return replace(spec, y=y), replace(spec, direction=vertical, y=y)


def direction_word(pipe, frames: int, seed: int, new_frames: int, **settings) -> list[dict]:
    """``frames`` corner first frames (corners in turn), each animated with both directions that fit there."""
    from videogen.data.shapes import render

    rng, size = np.random.default_rng(seed), pipe.defaults.height
    corners = [(h, v) for v in ("up", "down") for h in ("left", "right")]
    rows = []
    for k in range(frames):
        specs = corner_spec(rng, *corners[k % len(corners)])
        first = render(specs[0], size=size, num_frames=1)[0]  # one first frame, two captions
        words = [spec.direction for spec in specs]
        seen = [analyze(pipe.extend(first, spec.caption, new_frames, seed=seed + k, progress=False,  # same noise
                                    **settings).frames[1:]).direction for spec in specs]
        right = [s == w for s, w in zip(seen, words)]
        rows.append({"caption": specs[0].caption, "seed": seed + k, "words": words, "seen": seen, "right": right,
                     "both": all(right)})
        print(f"[word {k + 1}/{frames}] {words} -> {seen}", flush=True)
    return rows


def drawn(seen, attributes) -> dict[str, str]:
    """What the analyser saw, attribute by attribute ("none" where it found nothing to judge)."""
    return {a: getattr(seen, a) for a in attributes}


def shape_table(rows: list[dict]) -> list[str]:
    """Captioned shape against the shape the analyser saw: where the shape errors go."""
    seen_labels = sorted({row["seen"]["shape"] for row in rows} | set(SHAPES), key=lambda s: (s not in SHAPES, s))
    lines = ["| captioned | " + " | ".join(f"seen {label}" for label in seen_labels) + " |",
             "|---|" + "---:|" * len(seen_labels)]
    for shape in SHAPES:
        of = [row["seen"]["shape"] for row in rows if parse_caption(row["caption"]).shape == shape]
        lines.append(f"| {shape} | " + " | ".join(str(of.count(label)) for label in seen_labels) + " |")
    return lines


def share(rows: list[dict], keys) -> dict[str, float]:
    """The fraction of rows with each key true."""
    return {key: float(np.mean([row[key] for row in rows])) for key in keys}


def markdown(r: dict) -> str:
    g = r["settings"]
    lines = [f"Model `{r['model']}`; seed {r['seed']}; {g['num_steps']} steps, guidance {g['guidance_scale']:g}, "
             f"shift {g['shift']:g}; {r['seconds']:.0f} s in all.", "",
             "| part | n | " + " | ".join(ATTRIBUTES) + " | all right |",
             "|---|---:|" + "---:|" * (len(ATTRIBUTES) + 1)]
    for part in ("text_to_image", "image_to_video"):
        acc = r["accuracy"].get(part)
        if acc:
            cells = " | ".join("-" if a not in acc else f"{100 * acc[a]:.0f}%" for a in (*ATTRIBUTES, "all_correct"))
            lines.append(f"| {part.replace('_', '-')} | {len(r[part])} | {cells} |")
    placed = r["accuracy"].get("text_to_image", {}).get("placed")
    if placed is not None:
        lines += ["", f"Placement, text-to-image: the object has room to move as captioned in {100 * placed:.0f}% of "
                  "the frames (rendered first frames: 100%; placed without reading the direction word: about 50%)."]
    for part in ("text_to_image", "image_to_video"):
        if r[part]:
            lines += ["", f"Shapes, {part.replace('_', '-')}:", "", *shape_table(r[part])]
    word = r["accuracy"].get("direction_word")
    if word:
        n = len(r["direction_word"])
        lines += ["", f"Direction word: {n} corner first frames, each animated with the two directions that fit "
                  f"there: the object went as the word said in {100 * word['followed']:.0f}% of the {2 * n} clips "
                  f"(50% if the word is ignored), both ways right on {100 * word['both']:.0f}% of the frames "
                  "(0% if ignored)."]
    return "\n".join(lines) + "\n"


def evaluate_parts(model: Path, *, t2i: int, i2v: int, word: int, new_frames: int, seed: int,
                   **settings) -> dict:
    """Both halves and the direction-word probe on ``model``; ``settings``: generate's num_steps,
    guidance_scale, shift (None: the folder's). Returns the report."""
    from videogen import VideoPipeline

    start = time.perf_counter()
    settings = {k: v for k, v in settings.items() if v is not None}
    pipe = VideoPipeline.from_pretrained(model, device="cpu")
    rows = {"text_to_image": text_to_image(pipe, captions(False)[:t2i], seed, **settings),
            "image_to_video": image_to_video(pipe, i2v, seed, new_frames, **settings),
            "direction_word": direction_word(pipe, word, seed, new_frames, **settings)}
    accuracy = {}
    if rows["text_to_image"]:
        accuracy["text_to_image"] = share(rows["text_to_image"], (*IMAGE_ATTRIBUTES, "all_correct", "placed"))
    if rows["image_to_video"]:
        accuracy["image_to_video"] = share(rows["image_to_video"], (*ATTRIBUTES, "all_correct"))
    if rows["direction_word"]:
        accuracy["direction_word"] = {"followed": float(np.mean([r["right"] for r in rows["direction_word"]])),
                                      "both": share(rows["direction_word"], ("both",))["both"]}
    return {"model": str(model), "seed": seed, "settings": {**vars(pipe.defaults), **settings},
            "seconds": time.perf_counter() - start, "accuracy": accuracy, **rows}
