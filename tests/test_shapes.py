"""The shapes world: renderer, dataset splits, and the pixel analysis that measures prompt adherence.

The analysis is the judge of the demo model (issue 7), so it is tested both ways: every rendered clip is
read correctly, also after the defects of a real pipeline (noise, blur, lossy coding, colour drift), and a
clip that does not match its caption is scored wrong, while noise or an empty clip gives "none", not a
confident guess.
"""

import math

import numpy as np
import pytest
import torch

from videogen.data.shapes import (
    BACKGROUNDS,
    COLORS,
    DIRECTIONS,
    HELDOUT_PAIRS,
    MARGIN,
    SHAPES,
    SIZE_RANGE,
    TRAVEL_RANGE,
    ShapeClip,
    ShapesDataset,
    all_captions,
    centers,
    coverage,
    every_combination,
    opposite,
    pairs,
    render,
    sample_spec,
)
from videogen.errors import InputError
from videogen.eval import degrade
from videogen.eval.shapes import NONE, analyze, parse_caption, score, start_fits, summarize

OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}


def accuracy(specs: list[ShapeClip], transform) -> tuple[dict[str, float], list[str]]:
    scores, failures = [], []
    for i, spec in enumerate(specs):
        analysis = analyze(transform(render(spec), np.random.default_rng(i)))
        scores.append(score(analysis, spec))
        if not scores[-1]["all_correct"]:
            failures.append(f"{spec.caption} -> {analysis.summary()}")
    return summarize(scores), failures


# ---------------------------------------------------------------------------------------------- renderer


def test_render_layout_colours_and_caption():
    spec = ShapeClip("red", "square", "right", "gray", x=0.3, y=0.5, size=0.25, travel=0.4)
    frames = render(spec, size=64, num_frames=17)
    assert frames.shape == (17, 64, 64, 3) and frames.dtype == np.uint8
    assert spec.caption == "a red square moving right on a gray background"
    assert (frames[:, 0, 0] == BACKGROUNDS["gray"]).all()
    centre = [round(c * 64) for c in spec.start]  # (x, y) in pixels
    assert (frames[0, centre[1], centre[0]] == COLORS["red"]).all()
    end = [round(c * 64) for c in spec.end]
    assert (frames[-1, end[1], end[0]] == COLORS["red"]).all()
    assert (frames[-1, centre[1], centre[0]] == BACKGROUNDS["gray"]).all()


@pytest.mark.parametrize("shape, area", [("circle", math.pi / 4), ("square", 1.0), ("triangle", 0.5)])
def test_coverage_is_anti_aliased_with_the_exact_area(shape, area):
    # a box of 15.3 px at sub-pixel positions: the supersampled coverage must integrate to the true area
    half = 15.3 / 2
    centers = np.array([[20.13, 30.71], [33.5, 31.25], [40.77, 22.02]])
    exact = area * (2 * half) ** 2
    for supersample in (4, 8):
        alpha = coverage(shape, centers, half, 64, supersample=supersample)  # (T, H, W)
        # samples 1/s apart place an edge within 1/(2s) px: the side is off by at most 1/s px of 15.3
        np.testing.assert_allclose(alpha.sum(axis=(1, 2)), exact, rtol=2 * (1 / supersample) / 15.3 + 0.002)
    alpha = coverage(shape, centers, half, 64, supersample=4)
    partial = (alpha > 0) & (alpha < 1)
    assert partial.sum(axis=(1, 2)).min() > 20  # soft edges, not a staircase
    assert len(np.unique(alpha)) >= 6  # several coverage levels between 0 and 1


def test_motion_is_straight_constant_speed_and_inside_the_frame():
    rng = np.random.default_rng(0)
    for _ in range(40):
        spec = sample_spec(rng, "all")
        alpha = coverage(spec.shape, centers(spec, 64, 17), spec.size * 64 / 2, 64)  # (T, H, W)
        assert alpha[:, 0].sum() == 0 and alpha[:, -1].sum() == 0  # never touches the border
        assert alpha[:, :, 0].sum() == 0 and alpha[:, :, -1].sum() == 0
        mass = alpha.sum(axis=(1, 2))
        np.testing.assert_allclose(mass, mass.mean(), rtol=0.03)  # whole object in every frame (to 1/4 px edges)
        ys, xs = np.mgrid[:64, :64] + 0.5
        cx, cy = (alpha * xs).sum(axis=(1, 2)) / mass, (alpha * ys).sum(axis=(1, 2)) / mass
        # a straight line at the spec's speed; supersampling quantises an edge to 1/4 px, so the centroid
        # may wobble by a fraction of a pixel about it
        t = np.arange(17)
        for centroid, step in zip((cx, cy), DIRECTIONS[spec.direction]):
            slope, intercept = np.polyfit(t, centroid, 1)
            assert slope == pytest.approx(step * spec.travel * 64 / 16, abs=0.01)
            assert np.abs(centroid - (slope * t + intercept)).max() < 0.15


def test_sampled_specs_cover_the_ranges():
    rng = np.random.default_rng(1)
    specs = [sample_spec(rng, "all") for _ in range(3000)]
    assert {(s.color, s.shape, s.direction, s.background) for s in specs} == {
        (c, s, d, b) for c, s in pairs("all") for d in DIRECTIONS for b in BACKGROUNDS
    }
    sizes, travels = np.array([s.size for s in specs]), np.array([s.travel for s in specs])
    assert SIZE_RANGE[0] <= sizes.min() and sizes.max() <= SIZE_RANGE[1]
    assert TRAVEL_RANGE[0] <= travels.min() and travels.max() <= TRAVEL_RANGE[1]
    for s in specs:  # the whole path keeps the margin
        for cx, cy in (s.start, s.end):
            assert min(cx, cy) - s.size / 2 >= MARGIN - 1e-9 and max(cx, cy) + s.size / 2 <= 1 - MARGIN + 1e-9


def test_opposite_reverses_every_direction():
    assert {d: opposite(d) for d in DIRECTIONS} == {"left": "right", "right": "left", "up": "down", "down": "up"}
    with pytest.raises(InputError, match="unknown direction 'sideways'"):
        opposite("sideways")


def test_spec_rejects_bad_values():
    with pytest.raises(InputError, match="unknown color 'purple'"):
        ShapeClip("purple", "circle", "left", "black")
    with pytest.raises(InputError, match="unknown shape 'hexagon'"):
        ShapeClip("red", "hexagon", "left", "black")
    with pytest.raises(InputError, match="leaves the canvas"):
        ShapeClip("red", "circle", "left", "black", x=0.3, travel=0.5)
    with pytest.raises(InputError, match="not in the 'train' split"):
        sample_spec(np.random.default_rng(0), "train", color="cyan", shape="circle")
    with pytest.raises(InputError, match="unknown shapes split"):
        pairs("test")
    with pytest.raises(InputError, match="cannot render"):
        render(ShapeClip("red", "circle", "left", "black"), num_frames=0)


# ----------------------------------------------------------------------------------------------- dataset


def test_dataset_is_deterministic_per_seed_and_index():
    a, b = ShapesDataset(50, seed=7), ShapesDataset(50, seed=7)
    video, caption = a[13]
    assert video.shape == (3, 17, 64, 64) and video.dtype == torch.float32
    assert video.min() >= -1 and video.max() <= 1 and video.min() < 0 < video.max()
    again, caption_again = b[13]
    assert torch.equal(video, again) and caption == caption_again == a.spec(13).caption
    assert torch.equal(a[-1][0], a[49][0])
    assert a.spec(12) != a.spec(13)
    assert [ShapesDataset(50, seed=8).spec(i) for i in range(10)] != [a.spec(i) for i in range(10)]
    np.testing.assert_array_equal(a.frames(13), np.round((video.permute(1, 2, 3, 0).numpy() + 1) * 127.5))
    with pytest.raises(IndexError):
        a[50]


def test_dataset_iterates_and_batches_with_a_dataloader():
    dataset = ShapesDataset(5, seed=0, size=32, num_frames=5)
    items = list(dataset)
    assert len(items) == 5 and items[0][0].shape == (3, 5, 32, 32)
    videos, captions = next(iter(torch.utils.data.DataLoader(dataset, batch_size=4)))
    assert videos.shape == (4, 3, 5, 32, 32) and len(captions) == 4
    assert torch.equal(videos[2], items[2][0]) and captions[2] == items[2][1]


def test_heldout_pairs_never_in_train_and_always_in_heldout():
    train = ShapesDataset(20_000, seed=3, split="train")
    seen = {(s.color, s.shape) for s in map(train.spec, range(len(train)))}
    assert seen.isdisjoint(HELDOUT_PAIRS)
    assert seen == set(pairs("all")) - HELDOUT_PAIRS  # every other pair does appear
    heldout = ShapesDataset(300, seed=3, split="heldout")
    assert {(s.color, s.shape) for s in map(heldout.spec, range(len(heldout)))} == HELDOUT_PAIRS
    every = ShapesDataset(2000, seed=3, split="all")
    assert {(s.color, s.shape) for s in map(every.spec, range(len(every)))} == set(pairs("all"))


def test_all_captions():
    train, heldout, every = all_captions("train"), all_captions("heldout"), all_captions("all")
    assert (len(train), len(heldout), len(every)) == (180, 36, 216)
    assert set(train).isdisjoint(heldout) and set(train) | set(heldout) == set(every)
    assert "a yellow triangle moving up on a white background" in heldout
    assert all(parse_caption(c).caption == c for c in every)


# -------------------------------------------------------------------------------------------- captions


def test_parse_caption_forgives_case_spaces_and_full_stop():
    expected = parse_caption("a blue triangle moving up on a white background")
    assert expected.caption == "a blue triangle moving up on a white background"
    assert (expected.color, expected.shape, expected.direction, expected.background) == (
        "blue", "triangle", "up", "white"
    )
    assert parse_caption("  A Blue  triangle moving UP on a white background. ") == expected


@pytest.mark.parametrize(
    "caption, message",
    [
        ("", "is not of the form"),
        ("a red circle", "is not of the form"),
        ("the red circle moving left on a black background", "is not of the form"),
        ("a purple circle moving left on a black background", "unknown color 'purple'"),
        ("a red hexagon moving left on a black background", "unknown shape 'hexagon'"),
        ("a red circle moving sideways on a black background", "unknown direction 'sideways'"),
        ("a red circle moving left on a pink background", "unknown background 'pink'"),
        (42, "must be a string"),
    ],
)
def test_parse_caption_refuses_malformed(caption, message):
    with pytest.raises(InputError, match=message):
        parse_caption(caption)


# -------------------------------------------------------------------------------------------- analysis


def test_every_combination_is_analysed_correctly():
    result, failures = accuracy(every_combination(positions=2, seed=0), lambda frames, rng: frames)
    assert result["all_correct"] == 1.0, failures[:5]


@pytest.mark.parametrize("size, num_frames", [(32, 9), (128, 9)])
def test_analysis_is_resolution_independent(size, num_frames):
    rng = np.random.default_rng(4)
    specs = [sample_spec(rng, "all", color=color, shape=shape) for color, shape in pairs("all")]
    scores = [score(analyze(render(s, size=size, num_frames=num_frames)), s) for s in specs]
    assert summarize(scores)["all_correct"] == 1.0


DEGRADATIONS = {
    "noise": lambda f, rng: degrade.gaussian_noise(f, 12.0, rng=rng),
    "blur": lambda f, rng: degrade.gaussian_blur(f, 1.2),
    "jpeg": lambda f, rng: degrade.jpeg(f, quality=60),
    "color_shift": lambda f, rng: degrade.color_shift(f, rng=rng, max_offset=25, max_gain=0.1),
    "all_together": lambda f, rng: degrade.jpeg(
        degrade.color_shift(degrade.gaussian_blur(degrade.gaussian_noise(f, 6.0, rng=rng), 0.8), rng=rng), 75
    ),
}


@pytest.mark.parametrize("name", list(DEGRADATIONS))
def test_analysis_survives_pipeline_degradations(name):
    result, failures = accuracy(every_combination(positions=1, seed=1), DEGRADATIONS[name])
    assert result["all_correct"] >= 0.98, (result, failures[:5])


def test_analysis_survives_a_real_h264_round_trip():
    # a stride coprime with 3 and 4: 31 clips over every colour, shape, direction and background
    specs = every_combination(positions=1, seed=2)[::7]
    result, failures = accuracy(specs, lambda f, rng: degrade.h264(f, fps=8, crf=23))
    assert result["all_correct"] >= 30 / 31, failures  # one miss allowed: x264 builds may code differently


def test_degradations_really_change_the_frames():
    frames = render(ShapeClip("green", "circle", "left", "gray", x=0.6, travel=0.3))
    for name, transform in DEGRADATIONS.items():
        changed = transform(frames, np.random.default_rng(0))
        assert changed.shape == frames.shape and changed.dtype == np.uint8
        assert np.abs(changed.astype(int) - frames).mean() > 0.5, name


def test_wrong_attributes_are_scored_wrong():
    spec = ShapeClip("magenta", "triangle", "down", "white", x=0.4, y=0.3, size=0.27, travel=0.45)
    analysis = analyze(render(spec))
    assert score(analysis, spec)["all_correct"] and score(analysis, spec.caption)["all_correct"]
    assert all(type(v) is bool for v in score(analysis, spec).values())
    assert all(type(v) is float and 0 <= v <= 1 for v in analysis.confidence.values())
    vocabulary = {"color": COLORS, "shape": SHAPES, "direction": DIRECTIONS, "background": BACKGROUNDS}
    for attribute, values in vocabulary.items():
        for value in values:
            if value == getattr(spec, attribute):
                continue
            wrong = {**spec.to_dict(), attribute: value}
            caption = "a {color} {shape} moving {direction} on a {background} background".format(**wrong)
            result = score(analysis, caption)
            assert not result[attribute] and not result["all_correct"], caption
            assert all(result[other] for other in vocabulary if other != attribute), caption


def test_reversed_and_flipped_clips_are_caught():
    spec = ShapeClip("blue", "triangle", "up", "black", x=0.5, y=0.7, size=0.25, travel=0.45)
    frames = render(spec)
    reversed_clip = analyze(frames[::-1])
    assert reversed_clip.direction == "down" and reversed_clip.shape == "triangle"
    upside_down = analyze(frames[:, ::-1])  # a triangle pointing down, moving down
    assert upside_down.shape != "triangle" and upside_down.direction == "down"
    assert not score(upside_down, "a blue triangle moving down on a black background")["shape"]
    sideways = analyze(np.ascontiguousarray(np.swapaxes(frames, 1, 2)))  # moves left, points left
    assert sideways.direction == "left" and sideways.shape != "triangle"


def test_largest_jump_tells_steady_motion_from_a_teleporting_object():
    steady = render(ShapeClip("red", "circle", "left", "black", x=0.7, y=0.5, size=0.25, travel=0.45))
    assert analyze(steady).diagnostics["largest_jump"] < 0.05  # 0.45 of the side over 16 steps: ~0.028 each
    elsewhere = render(ShapeClip("red", "circle", "left", "black", x=0.7, y=0.2, size=0.25, travel=0.45))
    jumped = np.concatenate([steady[:9], elsewhere[9:]])  # frames 9-16 drawn 0.3 of the side higher
    analysis = analyze(jumped)
    assert analysis.direction == "left"  # the overall displacement still reads as left...
    assert 0.25 < analysis.diagnostics["largest_jump"] < 0.35  # ...but the jump is measured


def test_start_fits_reads_the_direction_word_as_a_place():
    """Every clip of the world starts with room ahead (a clip moving left starts on the right), never with
    room for the opposite direction; a frame, a clip and its first frame alone agree; no object fits none."""
    rng = np.random.default_rng(5)
    for _ in range(100):
        spec = sample_spec(rng, "all")
        clip = render(spec, size=64, num_frames=17)
        for frames in (clip, clip[:1]):
            analysis = analyze(frames)
            assert start_fits(analysis, spec.direction) and not start_fits(analysis, opposite(spec.direction))
    centre = analyze(render(ShapeClip("red", "circle", "left", "black", x=0.5, travel=0.0), num_frames=1))
    assert not any(start_fits(centre, d) for d in DIRECTIONS)  # half the side ahead is too little room
    corner = analyze(render(ShapeClip("red", "square", "left", "black", x=0.8, y=0.2, travel=0.0), num_frames=1))
    assert [d for d in DIRECTIONS if start_fits(corner, d)] == ["left", "down"]
    blank = np.broadcast_to(np.array(BACKGROUNDS["white"], np.uint8), (1, 64, 64, 3))
    assert not start_fits(analyze(blank), "left")


def test_a_still_object_has_no_direction():
    analysis = analyze(render(ShapeClip("cyan", "square", "left", "gray", x=0.5, travel=0.0)))
    assert (analysis.color, analysis.shape, analysis.direction) == ("cyan", "square", NONE)
    assert analysis.confidence["direction"] == 0 and analysis.motion < 0.02
    barely = analyze(render(ShapeClip("cyan", "square", "left", "gray", x=0.5, travel=0.05)))
    assert barely.direction == NONE
    assert not score(barely, "a cyan square moving left on a gray background")["all_correct"]


@pytest.mark.parametrize("background", ["black", "gray", "white"])
def test_a_blank_clip_has_no_object(background):
    blank = np.broadcast_to(np.array(BACKGROUNDS[background], np.uint8), (17, 64, 64, 3))
    analysis = analyze(blank)
    assert analysis.background == background and analysis.confidence["background"] > 0.9
    for attribute in ("color", "shape", "direction"):
        assert getattr(analysis, attribute) == NONE and analysis.confidence[attribute] == 0
    assert analysis.caption is None


def test_pure_noise_gives_none_not_a_confident_answer():
    noise = np.random.default_rng(0).integers(0, 256, (17, 64, 64, 3), dtype=np.uint8)
    analysis = analyze(noise)
    assert analysis.background == NONE and analysis.caption is None
    assert max(analysis.confidence.values()) < 0.2, analysis.summary()
    assert not score(analysis, "a red circle moving left on a gray background")["all_correct"]


def test_confidence_is_high_on_clean_clips_and_lower_when_degraded():
    specs = every_combination(positions=1, seed=3)[::5]  # 44 clips over every attribute value
    clean = [min(analyze(render(s)).confidence.values()) for s in specs]
    blurred = [min(analyze(degrade.gaussian_blur(render(s), 1.5)).confidence.values()) for s in specs]
    assert np.median(clean) > 0.6 and min(clean) > 0.3
    assert np.median(blurred) < np.median(clean)


def test_analyze_refuses_what_is_not_a_clip():
    with pytest.raises(InputError, match="uint8 frames"):
        analyze(np.zeros((17, 64, 64, 3), np.float32))
    with pytest.raises(InputError, match="uint8 frames"):
        analyze(np.zeros((17, 64, 64), np.uint8))
    with pytest.raises(InputError, match="at least 8x8"):
        analyze(np.zeros((17, 4, 4, 3), np.uint8))
    one_frame = analyze(render(ShapeClip("red", "circle", "left", "white"), num_frames=1)[0])
    assert (one_frame.color, one_frame.shape, one_frame.direction) == ("red", "circle", NONE)
