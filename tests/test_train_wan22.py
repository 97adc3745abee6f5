"""Training Wan2.2 folders: A14B's two experts (each on its own timesteps, one LoRA file each, both exported in a
full fine-tune) and TI2V-5B (48-channel latents, image-conditioned clips with the first latent frame clean at
timestep 0), with the latent cache and resume as for Wan2.1; the LoRA files back through ``videogen generate``."""

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from train_helpers import footage_folder, tiny_config
from videogen.errors import ConfigError, InputError, ModelError
from videogen.testing import BOUNDARY_RATIO, build_tiny_wan_folder
from videogen.train.data import collate_cached
from videogen.train.trainer import Trainer, TrainingInterrupted

WEIGHTS = "diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def a14b(tmp_path_factory):
    return build_tiny_wan_folder(tmp_path_factory.mktemp("a14b") / "model", layout="t2v-a14b")


@pytest.fixture(scope="module")
def ti2v(tmp_path_factory):
    return build_tiny_wan_folder(tmp_path_factory.mktemp("ti2v") / "model", layout="ti2v")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return footage_folder(tmp_path_factory.mktemp("footage") / "clips", count=3, frames=9)


def _config(folder, clips, mode="lora", **sections):
    """A tiny run on ``folder`` and the footage ``clips``: a LoRA one unless ``mode`` says otherwise."""
    sections = {"mode": mode, "model": {"pretrained": str(folder)}, "data": {"path": str(clips)},
                "objective": {"caption_dropout": 0.0}, "lora": {"rank": 4, "alpha": 4},
                "train": {"max_steps": 4}, **sections}
    return tiny_config(**sections)


def _record_timesteps(trainer) -> tuple[list[list[torch.Tensor]], list]:
    """Every timestep tensor each expert's forward is given, in call order, and the hooks' handles."""
    seen = [[] for _ in trainer.parts.experts]
    handles = [expert.register_forward_pre_hook(lambda module, args, i=i: seen[i].append(args[1].detach().clone()))
               for i, expert in enumerate(trainer.parts.experts)]
    return seen, handles


def _fixed_loss(trainer, expert: int, draws: int = 4) -> float:
    """The objective of one expert on all clips with fixed noise and timesteps: comparable before and after."""
    dataset = trainer.stream.dataset
    batch = collate_cached([dataset[i] for i in range(len(dataset))])
    saved = trainer.generator.get_state()
    trainer.generator.manual_seed(1234)
    with torch.no_grad():
        loss = sum(trainer._loss(batch, expert)[0].item() for _ in range(draws)) / draws
    trainer.generator.set_state(saved)
    return loss


def _header(path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


# ------------------------------------------------------------------------------------------- A14B: LoRA


@pytest.fixture(scope="module")
def a14b_lora(a14b, data, tmp_path_factory):
    """A LoRA run on both experts: (run folder, timesteps each expert saw, fixed losses before and after)."""
    run = tmp_path_factory.mktemp("a14b-lora") / "run"
    trainer = Trainer(_config(a14b, data, optim={"lr": 2e-2}, train={"max_steps": 6}), run, show_progress=False)
    before = [_fixed_loss(trainer, e) for e in (0, 1)]
    seen, handles = _record_timesteps(trainer)
    result = trainer.run()
    for handle in handles:
        handle.remove()
    return run, result, seen, before, [_fixed_loss(trainer, e) for e in (0, 1)]


def test_a14b_lora_trains_each_expert_on_its_own_timesteps(a14b_lora):
    run, result, seen, before, after = a14b_lora
    boundary = BOUNDARY_RATIO["t2v-a14b"] * 1000
    high, low = (torch.cat(s) for s in seen)
    assert len(seen[0]) == len(seen[1]) == 3  # the steps alternate: 6 steps, 3 each
    assert (high >= boundary).all() and (low < boundary).all() and (low > 0).all()
    assert result.outputs == (run / "lora.safetensors", run / "lora_2.safetensors")
    assert _header(run / "lora.safetensors")["expert"] == "transformer"
    assert _header(run / "lora_2.safetensors")["expert"] == "transformer_2"
    assert all(np.isfinite(before + after)) and after[0] < before[0] and after[1] < before[1], (before, after)
    experts = [json.loads(line.split(",")[5]) for line in (run / "log.csv").read_text().splitlines()[1:]]
    assert experts == [0, 1, 0, 1, 0, 1]  # log.csv says which expert each step trained


def test_expert_levels_are_the_distribution_restricted_to_each_side():
    from videogen.diffusion import flow
    from videogen.train.config import ObjectiveConfig
    from videogen.train.objectives import expert_range, expert_sigmas

    cfg = ObjectiveConfig(shift=3.0)
    whole = flow.sample_sigmas(200_000, shift=3.0, generator=torch.Generator().manual_seed(0))
    for expert, side in ((0, whole >= 0.9), (1, whole < 0.9)):
        levels = expert_sigmas(50_000, expert_range(0.9, expert), cfg, torch.Generator().manual_seed(1))
        timesteps = flow.to_timesteps(levels)  # what the DiT is given, in float32
        assert (timesteps >= 900).all() if expert == 0 else (timesteps < 900).all()
        quantiles = torch.tensor([0.1, 0.5, 0.9])
        torch.testing.assert_close(levels.quantile(quantiles), whole[side].quantile(quantiles), atol=3e-3, rtol=0)


def test_each_expert_lora_changes_only_its_expert(a14b, a14b_lora, tmp_path):
    from videogen import VideoPipeline
    from videogen.models.lora import parse_lora_spec

    run = a14b_lora[0]
    base = VideoPipeline.from_pretrained(a14b, device="cpu")
    weights = [{k: v.clone() for k, v in e.state_dict().items()} for e in base.experts]

    def changed(pipe):
        return [any(not torch.equal(v, w[k]) for k, v in e.state_dict().items()) for e, w in zip(pipe.experts, weights)]

    for name, expected in (("lora.safetensors", [True, False]), ("lora_2.safetensors", [False, True])):
        pipe = VideoPipeline.from_pretrained(a14b, device="cpu")
        assert pipe.load_lora(run / name) > 0 and changed(pipe) == expected, name
    bare = tmp_path / "bare.safetensors"  # a file that records no expert: transformer, unless @low says otherwise
    save_file(load_file(str(run / "lora_2.safetensors")), str(bare))
    for text, expected in ((str(bare), [True, False]), (f"{bare}@low:0.5", [False, True])):
        pipe = VideoPipeline.from_pretrained(a14b, device="cpu")
        spec = parse_lora_spec(text)
        pipe.load_lora(spec.path, spec.scale, expert=spec.expert)
        assert changed(pipe) == expected, text
    one = VideoPipeline.from_pretrained(build_tiny_wan_folder(tmp_path / "t2v"), device="cpu")
    with pytest.raises(InputError, match="one transformer"):
        one.load_lora(run / "lora_2.safetensors")


def test_diffusers_loads_the_low_noise_file_into_its_transformer_2(a14b, a14b_lora):
    from diffusers import WanPipeline

    from videogen import VideoPipeline

    run = a14b_lora[0]
    ours = VideoPipeline.from_pretrained(a14b, device="cpu")
    ours.load_lora(run / "lora_2.safetensors")
    theirs = WanPipeline.from_pretrained(a14b)
    theirs.load_lora_weights(str(run / "lora_2.safetensors"), load_into_transformer_2=True)
    g = torch.Generator().manual_seed(0)
    x, text = torch.randn(1, 16, 2, 4, 4, generator=g), torch.randn(1, 7, 32, generator=g)
    t = torch.tensor([300.0])
    with torch.no_grad():
        expected = theirs.transformer_2(x, t, text, return_dict=False)[0]
        torch.testing.assert_close(ours.transformer_2(x, t, text), expected, atol=1e-5, rtol=1e-4)


def test_generate_cli_merges_each_lora_into_its_expert(a14b, a14b_lora, tmp_path, capsys):
    from videogen.cli import main
    from videogen.io import read_video

    run = a14b_lora[0]
    args = ["generate", "a red circle", "--model", str(a14b), "--frames", "5", "--height", "32", "--width", "32",
            "--steps", "4", "--seed", "0"]
    outputs = {}
    for name, loras in {"base": [], "high": ["lora.safetensors"], "both": ["lora.safetensors", "lora_2.safetensors"]
                        }.items():
        extra = [arg for lora in loras for arg in ("--lora", f"{run / lora}:4")]
        assert main(args + ["-o", str(tmp_path / f"{name}.mp4"), *extra]) == 0
        outputs[name] = read_video(tmp_path / f"{name}.mp4").frames
    assert not np.array_equal(outputs["base"], outputs["high"])
    assert not np.array_equal(outputs["high"], outputs["both"])  # the low-noise file went into transformer_2
    capsys.readouterr()
    assert main(args + ["-o", str(tmp_path / "x.mp4"), "--lora", f"{tmp_path / 'missing.safetensors'}@low"]) == 2
    assert "missing.safetensors: no such LoRA file" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- resume, export


def _resume_config(folder, data, mode):
    return _config(folder, data, mode=mode, objective={"caption_dropout": 0.3},
                   optim={"ema_decay": 0.9, "warmup_steps": 1},
                   train={"max_steps": 4, "grad_accum": 2, "checkpoint_every": 1, "keep_checkpoints": 1})


@pytest.mark.parametrize("layout", ["t2v-a14b", "ti2v"])
def test_interrupted_and_resumed_lora_run_writes_the_same_files(layout, a14b, ti2v, data, tmp_path):
    folder = {"t2v-a14b": a14b, "ti2v": ti2v}[layout]
    torch.manual_seed(0)  # PEFT draws the adapters' A from the global RNG: the same for both runs, as in two processes
    straight = Trainer(_resume_config(folder, data, "lora"), tmp_path / "a", show_progress=False).run()

    def stop_at_2(trainer, step, stats):
        if step == 2:  # the low-noise expert's first step: the next one is the high-noise expert's
            trainer.request_stop()

    torch.manual_seed(0)
    with pytest.raises(TrainingInterrupted, match="stopped at step 2"):
        Trainer(_resume_config(folder, data, "lora"), tmp_path / "b", show_progress=False, callback=stop_at_2).run()
    resumed = Trainer(_resume_config(folder, data, "lora"), tmp_path / "b", resume=True, show_progress=False).run()
    assert resumed.loss == straight.loss and len(resumed.outputs) == len(straight.outputs) == (2 if "a14b" in layout
                                                                                                 else 1)
    for a, b in zip(straight.outputs, resumed.outputs):  # the same tensors and header (its order is the writer's)
        wa, wb = load_file(str(a)), load_file(str(b))
        assert a.name == b.name and _header(a) == _header(b), a.name
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), a.name


def test_a14b_full_finetune_exports_both_experts(a14b, data, tmp_path):
    from videogen import VideoPipeline

    run = tmp_path / "run"
    result = Trainer(_config(a14b, data, mode="full", train={"max_steps": 2}), run, show_progress=False).run()
    assert result.output == run / "model"
    for part in ("transformer", "transformer_2"):
        ours, base = load_file(str(run / "model" / part / WEIGHTS)), load_file(str(a14b / part / WEIGHTS))
        assert any(not torch.equal(ours[k], base[k]) for k in base), part
        assert json.loads((run / "model" / part / "config.json").read_text())["_class_name"] == "WanTransformer3DModel"
    pipe = VideoPipeline.from_pretrained(run / "model", device="cpu")
    assert pipe.transformer_2 is not None and pipe.layout.boundary_ratio == BOUNDARY_RATIO["t2v-a14b"]
    video = pipe.generate("a red circle", num_frames=5, height=32, width=32, num_steps=2, seed=0, progress=False)
    assert video.frames.shape == (5, 32, 32, 3)


@pytest.mark.parametrize("experts, trained", [("high", ["transformer"]), ("low", ["transformer_2"])])
def test_one_expert_of_two_trains_alone(experts, trained, a14b, data, tmp_path):
    full = Trainer(_config(a14b, data, mode="full", model={"pretrained": str(a14b), "experts": experts},
                           train={"max_steps": 1}), tmp_path / "full", show_progress=False)
    seen, _ = _record_timesteps(full)
    full.run()
    assert [bool(s) for s in seen] == [experts == "high", experts == "low"]
    for part in ("transformer", "transformer_2"):
        ours = load_file(str(tmp_path / "full" / "model" / part / WEIGHTS))
        base = load_file(str(a14b / part / WEIGHTS))
        assert any(not torch.equal(ours[k], base[k]) for k in base) == (part in trained), part
    lora = Trainer(_config(a14b, data, model={"pretrained": str(a14b), "experts": experts}, train={"max_steps": 1}),
                   tmp_path / "lora", show_progress=False).run()
    assert [p.name for p in lora.outputs] == ["lora.safetensors" if experts == "high" else "lora_2.safetensors"]


# ------------------------------------------------------------------------------------------------- TI2V


def test_ti2v_trains_on_48_channel_latents_with_its_first_frame_held_clean(ti2v, tmp_path):
    from videogen import VideoPipeline

    run, data = tmp_path / "run", footage_folder(tmp_path / "clips", count=2, frames=9, size=(64, 64))
    trainer = Trainer(_config(ti2v, data, mode="full", data={"path": str(data), "resolutions": ["64x64"]},
                              train={"max_steps": 6}), run, show_progress=False)
    assert trainer.cfg.objective.p_first == 0.5  # the model's own image conditioning, by default
    assert trainer.stream.dataset[0]["mean"].shape == (48, 3, 4, 4)  # (C, T', H', W') from the Wan2.2 VAE
    latents, inputs = [], []
    encode = trainer._latents
    trainer._latents = lambda batch: latents.append(encode(batch)) or latents[-1]
    trainer.parts.dit.register_forward_pre_hook(lambda module, args: inputs.append((args[0].clone(), args[1])))
    trainer.run()
    conditioned = [i for i, (_, t) in enumerate(inputs) if t.ndim == 2]
    assert 0 < len(conditioned) < 6  # text-only and image-conditioned clips both trained
    for i in conditioned:
        (x_t, t), z = inputs[i], latents[i]
        assert (t[:, :4] == 0).all() and (t[:, 4:] > 0).all()  # 1 x 2 x 2 tokens of the first frame at timestep 0
        assert torch.equal(x_t[:, :, 0], z[:, :, 0]) and not torch.allclose(x_t[:, :, 1:], z[:, :, 1:])
    assert "p_first: 0.5" in (run / "config.yaml").read_text()
    pipe = VideoPipeline.from_pretrained(run / "model", device="cpu")
    assert pipe.layout.expand_timesteps and pipe.frame_method() == "timestep"
    video = pipe.extend(np.zeros((1, 32, 32, 3), np.uint8), "a red circle", 4, window=5, height=32, width=32,
                        num_steps=2, seed=0, progress=False)
    assert video.frames.shape == (5, 32, 32, 3)


def test_ti2v_lora_changes_what_generate_draws(ti2v, data, tmp_path):
    from videogen.cli import main
    from videogen.io import read_video

    run = tmp_path / "run"
    Trainer(_config(ti2v, data, optim={"lr": 2e-2}, train={"max_steps": 2}), run, show_progress=False).run()
    assert "expert" not in _header(run / "lora.safetensors")  # one transformer: nothing to record
    args = ["generate", "a red circle", "--model", str(ti2v), "--frames", "5", "--height", "32", "--width", "32",
            "--steps", "2", "--seed", "0"]
    assert main(args + ["-o", str(tmp_path / "base.mp4")]) == 0
    assert main(args + ["-o", str(tmp_path / "lora.mp4"), "--lora", f"{run / 'lora.safetensors'}:4"]) == 0
    assert not np.array_equal(read_video(tmp_path / "base.mp4").frames, read_video(tmp_path / "lora.mp4").frames)


# ------------------------------------------------------------------------------------------------ refusals


def test_what_cannot_be_trained_is_refused_in_one_line(tiny_wan_folder, ti2v, data, tmp_path):
    i2v = build_tiny_wan_folder(tmp_path / "i2v", layout="i2v-a14b")
    with pytest.raises(ModelError, match="I2V-A14B model, conditioned on frames through its input channels"):
        Trainer(_config(i2v, data), tmp_path / "a", show_progress=False)
    with pytest.raises(ConfigError, match="model.experts: low: this model has one transformer"):
        Trainer(_config(tiny_wan_folder, data, model={"pretrained": str(tiny_wan_folder), "experts": "low"}),
                tmp_path / "b", show_progress=False)
    with pytest.raises(ConfigError, match="48x48.*multiples of 32"):
        Trainer(_config(ti2v, data, data={"path": str(data), "resolutions": ["48x48"]}), tmp_path / "c",
                show_progress=False)
