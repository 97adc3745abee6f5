"""The bundled demo model (issue 7): where it is found, the tool that trains it, the tool that evaluates it,
and -- once assets/demo-model exists -- the shipped model itself."""

import importlib.util
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from videogen.bundled import candidate_paths, default_model_path, find_default_model
from videogen.cli import main
from videogen.data.shapes import SHAPES
from videogen.errors import ModelError
from videogen.eval import adherence
from videogen.eval import tasks as eval_tasks
from videogen.eval.shapes import parse_caption

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _fake_model(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text("{}")
    return folder


# --------------------------------------------------------------------------------- default location


def test_default_model_in_the_wheel_and_the_checkout_layouts(tmp_path):
    wheel = tmp_path / "site-packages" / "videogen"  # pip install .: videogen/assets/demo-model
    checkout = tmp_path / "repo" / "videogen"  # pip install -e .: <repo>/assets/demo-model
    for package in (wheel, checkout):
        package.mkdir(parents=True)
    with pytest.raises(ModelError, match="no bundled demo model.*--model"):
        default_model_path(wheel)
    a = _fake_model(wheel / "assets" / "demo-model")
    b = _fake_model(checkout.parent / "assets" / "demo-model")
    assert default_model_path(wheel) == a and default_model_path(checkout) == b
    _fake_model(checkout / "assets" / "demo-model")  # both present: the one inside the package wins
    assert default_model_path(checkout) == checkout / "assets" / "demo-model"
    assert candidate_paths(checkout)[1] == b


def test_generate_and_reconstruct_without_a_model_say_so_in_one_line(tmp_path, monkeypatch, capsys):
    import videogen.bundled

    monkeypatch.setattr(videogen.bundled, "_package_folder", lambda: tmp_path / "videogen")
    clip = tmp_path / "in.mp4"
    assert main(["generate", "a red circle moving left on a black background", "-o", str(tmp_path / "x.mp4")]) == 2
    assert main(["reconstruct", str(clip), "-o", str(tmp_path / "y.mp4")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: no bundled demo model") for line in err)
    assert all("--model" in line for line in err) and not list(tmp_path.glob("*.mp4"))


@pytest.mark.slow
def test_a_built_wheel_ships_assets_and_finds_the_model(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "videogen", source / "videogen", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "configs", source / "configs")  # setup.py ships them as videogen.configs
    (source / "assets").mkdir()
    _fake_model(source / "assets" / "demo-model")
    (source / "assets" / "demo-model" / "vae").mkdir()
    (source / "assets" / "demo-model" / "vae" / "config.json").write_text("{}")
    build = [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)]
    subprocess.run(build, cwd=source, check=True, capture_output=True)
    wheel = next(tmp_path.glob("videogen-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert {"videogen/assets/demo-model/model_index.json", "videogen/assets/demo-model/vae/config.json",
            "videogen/bundled.py"} <= set(names)
    assert not [n for n in names if n.startswith("assets/")]  # no stray top-level package
    site = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)]
    subprocess.run(install, check=True, capture_output=True)
    probe = "import videogen.bundled as b; print(b.default_model_path())"
    found = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env={"PYTHONPATH": str(site)},
                           check=True, capture_output=True, text=True).stdout.strip()
    assert found == str(site / "videogen" / "assets" / "demo-model")


# ---------------------------------------------------------------------------------- the training tool

TINY = [
    "--set", "train.batch_size=2", "--set", "data.shapes_samples=2", "--set", "data.shapes_size=16",
    "--set", "data.frames=[5]", "--set", "train.log_every=1",
    "--set-vae", "model.vae_arch.base_dim=8", "--set-vae", "model.vae_arch.dim_mult=[1,1,1,1]",
    "--set-vae", "data.crop=16",
    "--set-vae4", "model.vae_arch.base_dim=8", "--set-vae4", "model.vae_arch.dim_mult=[1,1,1]",
    "--set-vae4", "data.crop=16",
    "--set-dit", "model.dit.num_layers=1", "--set-dit", "model.dit.num_attention_heads=2",
    "--set-dit", "model.dit.attention_head_dim=12", "--set-dit", "model.dit.ffn_dim=32",
    "--set-dit", "model.text.d_model=16", "--set-dit", "model.text.num_layers=1",
    "--set-dit", "model.text.num_heads=2", "--set-dit", "model.text.d_kv=8", "--set-dit", "model.text.d_ff=32",
    "--set-dit", "model.max_text_length=16", "--set-dit", "validation.frames=5",
    "--set-dit", "validation.height=16", "--set-dit", "validation.width=16", "--set-dit", "validation.steps=2",
    "--max-mb", "0.3",  # the tiny model takes ~0.46 MB in float32: this exercises the float16 fallback
]


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    """train_demo on a tiny override: 1 step per stage (2 for dit-more, which continues dit's checkpoint), then
    again with the DiT to 2 steps and dit-more to 3 (resumes), and with --p2 (stages 5 and 6 of --vae4, then
    stage 7's six patch-2 DiT stages, stopped at steps 1, 2, 2, 1, 2 and 2: the mean of the last two shipped)."""
    root = tmp_path_factory.mktemp("demo")
    tool = _tool("train_demo")
    args = ["--runs", str(root / "runs"), "--assets", str(root / "demo-model"), *TINY]
    assert tool.main([*args, "--set", "train.max_steps=1", "--dit-more-steps", "2"]) == 0
    first = json.loads((root / "demo-model" / "training.json").read_text())
    assert json.loads((root / "demo-model" / "transformer" / "config.json").read_text())["patch_size"] == [1, 2, 2]
    vaes = ["--set-vae", "train.max_steps=1", "--set-vae4", "train.max_steps=1"]
    assert tool.main([*args, *vaes]) == 2  # the shipped folder is not replaced...
    assert tool.main([*args, *vaes, "--set-dit", "train.max_steps=2", "--dit-more-steps", "3", "--overwrite",
                      "--p2", "--dit4-more-steps", "3", "--vae4-decoder-more-steps", "2",
                      "--vae4-decoder-polish-steps", "3", "--p2-t2i-steps", "1", "--p2-if-steps", "2",
                      "--p2-pos-steps", "2", "--p2-pos2-steps", "1", "--p2-pos3-steps", "2",
                      "--p2-noise-steps", "2"]) == 0
    return root, first


@pytest.mark.slow
def test_train_demo_trains_resumes_and_assembles(tiny_demo):
    from safetensors import safe_open
    from safetensors.torch import load_file

    root, first = tiny_demo
    model = root / "demo-model"
    for part in ("transformer", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (model / part).is_dir()
    defaults = json.loads((model / "videogen.json").read_text())
    assert defaults == {"num_frames": 5, "height": 16, "width": 16, "fps": 8.0, "num_steps": 2, "guidance_scale": 5.0,
                        "shift": 3.0, "sampler": "unipc", "negative_prompt": "", "frame_conditioning": True,
                        "image_first": True, "guidance_interval": [0.85, 1.0],
                        "image_guidance_interval": [0.5, 1.0], "image_first_frames": 5}  # train_demo's P2_SAMPLING
    with safe_open(str(model / "transformer" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    record = json.loads((model / "training.json").read_text())
    assert record["weights_dtype"] == "float16" and record["total_mb"] <= 0.3 < record["float32_weight_mb"]
    assert list(first["stages"]) == ["vae-images", "vae", "dit", "dit-more"]  # without --vae4
    assert [first["stages"][s]["steps"] for s in ("vae", "dit", "dit-more")] == [1, 1, 2]
    vae, dit, more = record["stages"]["vae"], record["stages"]["dit"], record["stages"]["dit-more"]
    assert (vae["steps"], vae["invocations"], dit["steps"], dit["invocations"]) == (1, 1, 2, 2)  # skipped; resumed
    assert (more["steps"], more["invocations"]) == (3, 2)
    vae4_stages = ("vae4-images", "vae4", "vae4-decoder", "vae4-decoder-more", "vae4-decoder-polish", "dit4",
                   "dit4-more")
    assert [(record["stages"][s]["steps"], record["stages"][s]["invocations"]) for s in vae4_stages
            ] == [(1, 1), (1, 1), (1, 1), (2, 1), (3, 1), (2, 1), (3, 1)]
    polish_log = (root / "runs" / "demo-vae4-decoder-polish" / "log.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in polish_log[1:]] == ["1", "2", "3"]  # continued vae4-decoder-more's run
    p2_stages = ("dit4p2-t2i", "dit4p2-if", "dit4p2-pos", "dit4p2-pos2", "dit4p2-pos3", "dit4p2-noise")  # by stop_step
    assert [(record["stages"][s]["steps"], record["stages"][s]["invocations"]) for s in p2_stages
            ] == [(1, 1), (2, 1), (2, 1), (1, 1), (2, 1), (2, 1)]
    assert list(record["stages"]) == ["vae-images", "vae", "dit", "dit-more", *vae4_stages, *p2_stages]  # in order
    more_log = (root / "runs" / "demo-dit-more" / "log.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in more_log[1:]] == ["1", "2", "3"]  # dit's step 1, then its own
    assert dit["seconds"] > first["stages"]["dit"]["seconds"] and np.isfinite(dit["final_loss"])
    log = (root / "runs" / "demo-dit" / "log.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in log[1:]] == ["1", "2"]  # one log row per step: resumed, not restarted
    text = (model / "TRAINING.md").read_text()
    assert all(f"| {stage} |" in text for stage in ("vae", "dit", "dit-more", "vae4", "dit4", "dit4-more", *p2_stages))
    assert "float16" in text
    # the shipped DiT is the mean of dit4p2-pos3's and dit4p2-noise's (on patches of 2, with frame positions;
    # dit4p2-noise warm-started from dit4p2-pos3, it from dit4p2-pos2, it from dit4p2-pos, it from dit4p2-if and
    # that from dit4p2-t2i, on the 4x model's latents)
    shipped = load_file(str(model / "transformer" / "diffusion_pytorch_model.safetensors"))
    config = json.loads((model / "transformer" / "config.json").read_text())
    assert config["patch_size"] == [1, 2, 2] and config["frame_position_dim"] == 32
    assert "frame_position.proj.weight" in shipped
    assert json.loads((model / "vae" / "config.json").read_text())["dim_mult"] == [1, 1, 1]  # the 4x VAE
    def dit(stage):
        folder = root / "runs" / f"demo-{stage}" / "model" / "transformer"
        return load_file(str(folder / "diffusion_pytorch_model.safetensors"))

    pos3, noise = dit("dit4p2-pos3"), dit("dit4p2-noise")
    assert record["dit_mean_of"] == ["dit4p2-pos3", "dit4p2-noise"] and "DiT: the mean of" in text
    assert shipped.keys() == pos3.keys() and not all(torch.equal(pos3[k], noise[k]) for k in pos3)
    assert all(torch.equal(shipped[k], ((pos3[k].double() + noise[k].double()) / 2).float().half()) for k in pos3)
    earlier = ("dit4p2-pos2", "dit4p2-pos", "dit4p2-if", "dit4p2-t2i", "dit4-more", "dit-more")
    for trained in (pos3, noise, *map(dit, earlier)):  # the mean is none of the stages' DiTs
        assert not all(k in shipped and torch.equal(shipped[k], trained[k].half()) for k in trained)
    assert "_name_or_path" not in json.loads((model / "vae" / "config.json").read_text())
    # the shipped VAE is vae4-decoder-polish's: vae4's encoder (the latents the DiT learned), a decoder trained on
    shipped_vae = load_file(str(model / "vae" / "diffusion_pytorch_model.safetensors"))
    vaes = {stage: load_file(str(root / "runs" / f"demo-{stage}" / "model" / "vae" / "diffusion_pytorch_model.safetensors"))
            for stage in ("vae4", "vae4-decoder", "vae4-decoder-more", "vae4-decoder-polish")}
    assert all(torch.equal(shipped_vae[k], vaes["vae4-decoder-polish"][k].half()) for k in shipped_vae)
    encoder = [k for k in shipped_vae if k.startswith(("encoder.", "quant_conv."))]
    assert encoder and all(torch.equal(vaes["vae4"][k], vaes["vae4-decoder-polish"][k]) for k in encoder)
    for earlier in ("vae4", "vae4-decoder", "vae4-decoder-more"):
        assert not all(torch.equal(vaes[earlier][k], vaes["vae4-decoder-polish"][k]) for k in shipped_vae)
    # stage 7 learned with the 4x model as --vae4 alone ships it (RUNS/demo-model-4x): its frozen T5 is dit4-more's
    base = root / "runs" / "demo-model-4x"
    assert json.loads((base / "videogen.json").read_text())["frame_conditioning"] and not (base / "training.json").exists()
    t5 = {"shipped": model, "dit4-more": root / "runs" / "demo-dit4-more" / "model"}
    t5 = {k: load_file(str(v / "text_encoder" / "model.safetensors")) for k, v in t5.items()}
    assert all(torch.equal(t5["shipped"][k], t5["dit4-more"][k].half()) for k in t5["dit4-more"])
    dit_vae_config = root / "runs" / "demo-dit4-more" / "model" / "vae" / "config.json"
    assert json.loads((model / "vae" / "config.json").read_text())["_class_name"] == json.loads(
        dit_vae_config.read_text())["_class_name"]  # the config diffusers reads is the DiT run's, as saved for it
    # the text length the DiT trained with travels with the folder
    assert json.loads((model / "tokenizer" / "tokenizer_config.json").read_text())["model_max_length"] == 16


@pytest.mark.slow
def test_train_demo_refuses_a_vae_that_codes_other_latents(tiny_demo, tmp_path):
    """Assembly swaps in the decoder-trained VAE only when its encoder is the one the DiT learned on."""
    from safetensors.torch import load_file, save_file

    from videogen.errors import InputError

    root, _ = tiny_demo
    tool = _tool("train_demo")
    model = tmp_path / "model"
    shutil.copytree(root / "runs" / "demo-dit4-more" / "model", model)
    tool._swap_vae(model, root / "runs" / "demo-vae4-decoder" / "model" / "vae")  # the same encoder: accepted
    other = tmp_path / "other-encoder"
    shutil.copytree(root / "runs" / "demo-vae4-decoder" / "model" / "vae", other)
    weights = load_file(str(other / "diffusion_pytorch_model.safetensors"))
    weights["encoder.conv_in.weight"] = weights["encoder.conv_in.weight"] + 1e-3
    save_file(weights, str(other / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(InputError, match="its encoder differs"):
        tool._swap_vae(model, other)
    with pytest.raises(InputError, match="its configuration differs"):
        tool._swap_vae(model, root / "runs" / "demo-vae" / "model" / "vae")


def test_eval_scoring_reads_a_written_mp4_and_judges_it(tmp_path):
    from videogen.data.shapes import render, sample_spec
    from videogen.io import write_video

    from videogen.eval import adherence as tool

    spec = sample_spec(np.random.default_rng(3), "heldout", direction="up", background="white")
    path = write_video(tmp_path / "clip.mp4", render(spec, size=64, num_frames=17), 8.0)
    right = tool.judge(spec.caption, 0, path, "pipeline", 1.0)
    assert right.correct["all_correct"] and right.heldout
    assert right.predicted["largest_jump"] < 0.05  # steady motion, read back from the MP4
    assert right.predicted["start_fits"]  # it starts low, with room to move up
    wrong = tool.judge(spec.caption.replace("moving up", "moving down"), 0, path, "pipeline", 1.0)
    assert not wrong.correct["all_correct"] and wrong.correct["color"] and not wrong.correct["direction"]
    assert not wrong.predicted["start_fits"]  # ... and so no room to move down
    quick = tool.captions(quick=True)
    assert len(quick) == 6 and sum(map(tool.is_heldout, quick)) == 3
    full = tool.captions(quick=False)
    assert len(full) == 72 == len(set(full)) and sum(map(tool.is_heldout, full)) == 12


@pytest.mark.slow
def test_eval_shapes_runs_end_to_end_on_a_tiny_model(tiny_demo, tmp_path):
    from videogen.io import probe_video

    root, _ = tiny_demo
    tool = _tool("eval_shapes")
    out = tmp_path / "eval"
    argv = ["--model", str(root / "demo-model"), "--out", str(out), "--quick", "--timed", "1", "--psnr-clips", "1"]
    assert tool.main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["clips"] == 6 and [c["via"] for c in report["per_clip"]] == ["cli"] + ["pipeline"] * 5
    assert set(report["accuracy"]) == {"all", "seen", "heldout"}
    assert all(0 <= v <= 1 for v in report["accuracy"]["all"].values())
    for clip in report["per_clip"]:
        info = probe_video(clip["path"])
        assert (info.frames, info.height, info.width) == (5, 16, 16)
    assert report["timing"]["cli_seconds_per_clip"] > 0 and np.isfinite(report["vae"]["psnr_db"])
    assert "| heldout | 3 |" in (out / "report.md").read_text()
    jumps = [c["predicted"]["largest_jump"] for c in report["per_clip"]]
    continuity = report["continuity"]
    measured = [j for j in jumps if j is not None]  # None: the object is not in enough frames to track
    assert continuity["clips"] == len(measured) and all(np.isfinite(measured))
    if measured:
        assert continuity["largest_jump_median"] == np.median(measured)
    assert "Motion continuity" in (out / "report.md").read_text()
    fits = [c["predicted"]["start_fits"] for c in report["per_clip"]]
    assert report["placement"]["start_fits"] == np.mean(fits) and "Placement: " in (out / "report.md").read_text()
    # one caption, several seeds
    caption = "a cyan circle moving down on a white background"
    argv = ["--model", str(root / "demo-model"), "--out", str(tmp_path / "one"), "--caption", caption,
            "--repeat", "2", "--timed", "0", "--psnr-clips", "1"]
    assert tool.main(argv) == 0
    report = json.loads((tmp_path / "one" / "report.json").read_text())
    assert [(c["caption"], c["seed"]) for c in report["per_clip"]] == [(caption, 1000), (caption, 1001)]
    assert set(report["accuracy"]) == {"all", "heldout"}
    assert tool.main(argv[:4] + ["--caption", "a dog running"]) == 2


def test_corner_first_frames_fit_both_directions():
    """The direction-word probe's first frames: a path either way stays inside the canvas (ShapeClip checks),
    so the position alone cannot tell which of the two words was given."""
    from videogen.eval.parts import corner_spec
    rng = np.random.default_rng(0)
    for horizontal in ("left", "right"):
        for vertical in ("up", "down"):
            for _ in range(50):
                h, v = corner_spec(rng, horizontal, vertical)
                assert (h.direction, v.direction) == (horizontal, vertical)
                # one first frame; both clips were built, so ShapeClip found both paths inside the canvas
                assert (h.x, h.y, h.size, h.travel, h.color, h.shape) == (v.x, v.y, v.size, v.travel, v.color, v.shape)


@pytest.mark.slow
def test_eval_parts_scores_text_to_image_and_image_to_video_apart(tiny_demo, tmp_path):
    root, _ = tiny_demo
    tool = _tool("eval_parts")
    out = tmp_path / "parts"
    assert tool.main(["--model", str(root / "demo-model"), "--out", str(out), "--t2i", "2", "--i2v", "4",
                      "--word", "4", "--new-frames", "4", "--steps", "3"]) == 0
    report = json.loads((out / "report.json").read_text())
    folder = json.loads((root / "demo-model" / "videogen.json").read_text())
    # --steps overrides the folder's sampling settings; those not given stay the folder's
    assert report["settings"]["num_steps"] == 3
    assert report["settings"]["guidance_scale"] == folder["guidance_scale"]
    t2i, i2v = report["text_to_image"], report["image_to_video"]
    assert [r["caption"] for r in t2i] == adherence.captions(False)[:2]
    assert all(r["frames"] == 1 and "direction" not in r for r in t2i)  # one frame: no direction to judge
    # ... but a place, which the direction word sets (kept apart from all_correct)
    assert all(isinstance(r["placed"], bool) for r in t2i)
    assert report["accuracy"]["text_to_image"]["placed"] == np.mean([r["placed"] for r in t2i])
    assert [r["caption"].split()[4] for r in i2v] == ["left", "right", "up", "down"]  # directions in turn
    assert all(r["frames"] == 5 for r in i2v)  # the given frame and 4 new ones
    for part, rows in (("text_to_image", t2i), ("image_to_video", i2v)):
        parts = [k for k in rows[0] if k not in ("caption", "seed", "frames", "all_correct", "placed", "seen")]
        assert all(r["all_correct"] == all(r[k] for k in parts) for r in rows)
        assert report["accuracy"][part]["all_correct"] == np.mean([r["all_correct"] for r in rows])
        # what the analyser saw is recorded, and a right attribute is exactly one seen as captioned
        assert all(set(r["seen"]) == set(parts) for r in rows)
        assert all(r[k] == (r["seen"][k] == getattr(parse_caption(r["caption"]), k)) for r in rows for k in parts)
    # the direction-word probe: corners in turn, each first frame given the two directions that fit there
    word = report["direction_word"]
    assert [r["words"] for r in word] == [["left", "up"], ["right", "up"], ["left", "down"], ["right", "down"]]
    assert all(r["right"] == [s == w for s, w in zip(r["seen"], r["words"])] and r["both"] == all(r["right"])
               for r in word)
    assert report["accuracy"]["direction_word"]["followed"] == np.mean([r["right"] for r in word])
    text = (out / "report.md").read_text()
    assert "| image-to-video | 4 |" in text and "Direction word: 4 corner first frames" in text
    assert "Placement, text-to-image: the object has room to move as captioned in " in text
    assert "; 3 steps, guidance 5," in text
    # the shape table: one row per captioned shape, its counts adding up to that shape's clips
    table = [line for line in text.split("Shapes, image-to-video:")[1].splitlines() if line.startswith("| ")][1:]
    counts = {line.split("|")[1].strip(): sum(int(c) for c in line.split("|")[2:-1]) for line in table}
    assert counts == {s: sum(parse_caption(r["caption"]).shape == s for r in i2v) for s in SHAPES}

# -------------------------------------------------------------------------- the shipped model itself

SHIPPED = find_default_model()
needs_shipped = pytest.mark.skipif(
    SHIPPED is None, reason="assets/demo-model is not built yet (python tools/train_demo.py builds it)"
)
PROMPTS = [  # (caption, seed): two seen pairs, two held-out pairs
    ("a red circle moving left on a black background", 0),
    ("a blue triangle moving up on a white background", 1),
    ("a yellow triangle moving right on a gray background", 2),
    ("a cyan circle moving down on a white background", 3),
]


@needs_shipped
def test_shipped_model_loads_from_the_default_location_with_demo_defaults():
    from videogen import VideoPipeline

    pipe = VideoPipeline.from_pretrained(default_model_path(), device="cpu")
    d = pipe.defaults
    assert (d.num_frames, d.height, d.width, d.fps, d.frame_conditioning) == (17, 64, 64, 8.0, True)
    sizes = sum(p.stat().st_size for p in SHIPPED.rglob("*") if p.is_file())
    assert sizes <= 30e6


@pytest.fixture(scope="module")
def shipped_pipe():
    from videogen import VideoPipeline

    return VideoPipeline.from_pretrained(default_model_path(), device="cpu")


@pytest.fixture(scope="module")
def fixed_prompt_scores(shipped_pipe, tmp_path_factory) -> list[dict]:
    """The four fixed prompts generated once, read back from their MP4s and scored (shared by two tests)."""
    from videogen.eval.shapes import analyze, score
    from videogen.io import read_video

    folder = tmp_path_factory.mktemp("fixed-prompts")
    results = []
    for k, (caption, seed) in enumerate(PROMPTS):
        path = shipped_pipe.generate(caption, seed=seed, output=folder / f"{k}.mp4", progress=False)
        frames = read_video(path).frames
        assert frames.shape == (17, 64, 64, 3)
        results.append(score(analyze(frames), caption))
    return results


# The shipped model (assets/demo-model/TRAINING.md says how it was made) meets the adherence target by a little:
# 90% of 144 clips all right (docs/benchmarks.md; tools/eval_shapes.py measures the target, not these tests). On
# these fixed cases it gets 4 of 4 prompts right. The tests below hold it to what it measured here: floors that a
# broken, swapped or older model fails (earlier models got 0 of 4 prompts right, or did not continue an extension's
# motion).


@needs_shipped
def test_shipped_model_draws_the_prompted_background(fixed_prompt_scores):
    assert sum(r["background"] for r in fixed_prompt_scores) >= 3, fixed_prompt_scores  # measured: 4 of 4


@needs_shipped
def test_shipped_model_follows_colour_shape_direction_and_background_words(fixed_prompt_scores):
    # measured: colour, shape, direction and background 4 of 4 each; a model that ignored the prompt would
    # expect ~0.7 + 1.3 + 1 + 1.3, an early one got 3 + 2 + 0 + 3. Tolerance: one attribute.
    right = sum(r[name] for r in fixed_prompt_scores for name in ("color", "shape", "direction", "background"))
    assert right >= 15, fixed_prompt_scores


@needs_shipped
def test_shipped_model_follows_fixed_prompts(fixed_prompt_scores):
    # a handful of fixed prompts; measured: 4 of 4 right. Over 144 prompts: 90%.
    wrong = [(c, r) for (c, _), r in zip(PROMPTS, fixed_prompt_scores) if not r["all_correct"]]
    assert len(wrong) <= 1, wrong  # tolerance: one clip of four may miss an attribute


VAE_FLOOR_DB = 30.3  # the shipped VAE: 30.54 dB on this clip (earlier VAEs: 30.06, 28.7)
VAE_TARGET_DB = 30.0  # the target, on tools/eval_shapes.py's 8 held-out clips (30.23 dB, docs/benchmarks.md)


@pytest.fixture(scope="module")
def fixed_clip_psnr(tmp_path_factory):
    """eval_shapes' VAE measure on one held-out clip (its rng seeded 7): the VAE alone, in dB."""
    measured = adherence.vae_psnr(default_model_path(), tmp_path_factory.mktemp("vae-clip"), clips=1, seed=7,
                                  num_frames=17, size=64)
    return measured["psnr_db"]


@needs_shipped
def test_shipped_vae_round_trip_of_a_rendered_clip_stays_above_its_floor(fixed_clip_psnr):
    assert fixed_clip_psnr > VAE_FLOOR_DB  # catches a broken, swapped or older VAE


@needs_shipped
def test_shipped_vae_meets_the_target_as_eval_shapes_measures_it(tmp_path):
    # the target's own measure (8 clips, seed 1000), not one clip: an earlier VAE passed 30 dB on the fixed
    # clip while these 8 averaged 29.98
    measured = adherence.vae_psnr(default_model_path(), tmp_path, clips=8, seed=1000, num_frames=17, size=64)
    assert measured["psnr_db"] >= VAE_TARGET_DB, measured


def _clip(seed: int, num_frames: int, **attributes):
    from videogen.data.shapes import render, sample_spec

    spec = sample_spec(np.random.default_rng(seed), "train", **attributes)
    return spec, render(spec, size=64, num_frames=num_frames)


# each task runs once per module: (spec, input frames, output frames), shared by its floor and its target test


@pytest.fixture(scope="module")
def extended(shipped_pipe):
    spec, frames = _clip(21, 33, color="red", shape="circle", direction="left", background="black")
    frames = frames[:17]  # the first half of a 33-frame path: the object has room to go on
    return spec, frames, shipped_pipe.extend(frames, spec.caption, 16, seed=0, progress=False).frames


@pytest.fixture(scope="module")
def interpolated(shipped_pipe):
    spec, frames = _clip(22, 17, color="green", shape="square", direction="right", background="white")
    out = shipped_pipe.interpolate(frames[0], frames[-1], spec.caption, 17, seed=0, progress=False).frames
    return spec, frames, out


@pytest.fixture(scope="module")
def animated(shipped_pipe):
    spec, frames = _clip(23, 1, color="blue", shape="triangle", direction="down", background="gray")
    return spec, frames, shipped_pipe.extend(frames[0], spec.caption, 16, seed=0, progress=False).frames


@needs_shipped
def test_shipped_model_extends_a_clip_seamlessly_keeping_colour_and_shape(extended):
    from videogen.eval import tasks as measures
    spec, frames, out = extended
    assert out.shape == (33, 64, 64, 3) and np.array_equal(out[:17], frames)  # the input, as it was
    kept = measures.attributes_kept(out[17:], spec)
    assert kept["color"] and kept["shape"], kept  # measured; the direction: below
    assert measures.seam_jump(out, 17) < 3.0  # the first new frame is about one frame's motion on (measured 2.4)


@needs_shipped
def test_shipped_model_interpolates_from_one_frame_to_the_other(interpolated):
    from videogen.eval.shapes import analyze

    spec, frames, out = interpolated
    assert out.shape == (17, 64, 64, 3)
    assert np.array_equal(out[0], frames[0]) and np.array_equal(out[-1], frames[-1])
    seen = analyze(out)
    assert (seen.color, seen.background) == (spec.color, spec.background)


@needs_shipped
def test_shipped_model_animates_an_image_in_its_colour(animated):
    from videogen.eval import tasks as measures
    spec, frames, out = animated
    assert out.shape == (17, 64, 64, 3) and np.array_equal(out[0], frames[0])
    assert measures.attributes_kept(out, spec)["color"]


@needs_shipped
def test_shipped_model_extends_a_clip_continuing_its_direction(extended):
    spec, _, out = extended
    # measured: kept (an earlier model did not keep it here, though it did on 4 of 4 eval_tasks cases)
    assert eval_tasks.attributes_kept(out[17:], spec)["direction"]


@needs_shipped
def test_shipped_model_interpolates_along_a_steady_path(interpolated):
    spec, _, out = interpolated
    mean_dev, max_dev = eval_tasks.path_deviation(out, spec)
    # fractions of the side; measured 0.017, 0.030 (earlier models: 0.031, 0.078 and 0.074, 0.191)
    assert mean_dev < 0.06 and max_dev < 0.15, (mean_dev, max_dev)


@needs_shipped
def test_shipped_model_animates_an_image_as_prompted(animated):
    # measured: colour, shape and direction kept (an early model: colour only). A rendered first frame starts
    # where its path fits, so the direction here is what the start position says as much as the word
    # (tools/eval_parts.py --word measures the word alone)
    spec, _, out = animated
    kept = eval_tasks.attributes_kept(out, spec)
    assert all(kept.values()), kept
