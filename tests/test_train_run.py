"""Whole runs on tiny models: the loss goes down, an interrupted + resumed run is bit-exact, the CLI."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from train_helpers import footage_folder, tiny_config
from videogen.cli import main
from videogen.io import probe_video
from videogen.train.data import collate, collate_cached
from videogen.train.trainer import Trainer, TrainingInterrupted


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return footage_folder(tmp_path_factory.mktemp("footage") / "clips", count=3, frames=9)


def fixed_loss(trainer: Trainer, draws: int = 6) -> float:
    """The objective on all clips with fixed noise and timesteps: comparable before and after training."""
    dataset = trainer.stream.dataset
    batch = (collate_cached if "mean" in dataset[0] else collate)([dataset[i] for i in range(len(dataset))])
    saved = trainer.generator.get_state()
    trainer.generator.manual_seed(1234)
    with torch.no_grad():
        loss = sum(trainer._loss(batch)[0].item() for _ in range(draws)) / draws
    trainer.generator.set_state(saved)
    return loss


def test_dit_loss_goes_down(tiny_wan_folder, data, tmp_path):
    cfg = tiny_config(model={"pretrained": str(tiny_wan_folder)}, data={"path": str(data)},
                      objective={"caption_dropout": 0.0, "p_first": 0.3},
                      optim={"lr": 3e-3, "warmup_steps": 2}, train={"max_steps": 16, "batch_size": 3})
    trainer = Trainer(cfg, tmp_path / "run", show_progress=False)
    before = fixed_loss(trainer)
    result = trainer.run()
    after = fixed_loss(trainer)
    assert after < 0.9 * before, (before, after)  # fixed draws: any drop is learning, not noise
    assert (tmp_path / "run" / "model" / "transformer" / "config.json").is_file()
    rows = list(csv.DictReader(open(tmp_path / "run" / "log.csv")))
    assert len(rows) == 16 and result.step == 16 and float(rows[-1]["samples_per_s"]) > 0
    # the folder declares what the objective trained: the Wan folder declared nothing, now known frames
    from videogen import VideoPipeline

    defaults = VideoPipeline.from_pretrained(tmp_path / "run" / "model", device="cpu").defaults
    assert defaults.frame_conditioning and not defaults.image_first


@pytest.mark.parametrize("objective, expected", [
    ({}, {}),
    ({"p_first_last": 0.1}, {"frame_conditioning": True}),
    ({"p_image": 0.3}, {}),  # images alone give the second pass nothing to start from
    ({"p_image": 0.3, "p_first": 0.6}, {"frame_conditioning": True, "image_first": True}),
])
def test_exported_folders_declare_the_sampling_the_objective_trained(objective, expected):
    from videogen.train.export import trained_sampling

    assert trained_sampling(tiny_config(task="dit", objective=objective)) == expected
    assert trained_sampling(tiny_config(task="vae", objective=objective)) == {}


def test_vae_loss_goes_down(data, tmp_path):
    cfg = tiny_config(task="vae", data={"path": str(data), "frames": [5], "resolutions": ["16x16"]},
                      optim={"lr": 1e-2}, train={"max_steps": 8, "batch_size": 3})
    cfg.model.vae_arch.base_dim, cfg.model.vae_arch.dim_mult = 8, [1, 1, 1, 1]
    trainer = Trainer(cfg, tmp_path / "run", show_progress=False)
    before = fixed_loss(trainer, draws=1)
    trainer.run()
    assert fixed_loss(trainer, draws=1) < 0.8 * before
    assert (tmp_path / "run" / "model" / "vae" / "config.json").is_file()
    info = probe_video(tmp_path / "run" / "validation" / "step-0000008.mp4")  # input | reconstruction
    assert (info.frames, info.height, info.width) == (5, 16, 32)


def test_vae_run_with_mean_posterior_on_shapes_crops(tmp_path):
    # the demo recipe's regime: decode the posterior mean, random crops of the shapes canvas
    cfg = tiny_config(task="vae", data={"kind": "shapes", "shapes_samples": 6, "shapes_size": 32, "crop": 16,
                                        "frames": [5]},
                      objective={"sample_posterior": False}, optim={"lr": 1e-2, "betas": [0.9, 0.95]},
                      train={"max_steps": 12, "batch_size": 3})
    cfg.model.vae_arch.base_dim, cfg.model.vae_arch.dim_mult = 8, [1, 1, 1, 1]
    cfg.model.latent_stats = "measure"
    trainer = Trainer(cfg, tmp_path / "run", show_progress=False)
    clip = trainer.stream.dataset[0]["video"]
    assert clip.shape == (3, 5, 16, 16)
    assert torch.equal(clip, trainer.stream.dataset[0]["video"])  # the crop is a function of (seed, index)
    before = fixed_loss(trainer, draws=1)
    trainer.run()
    assert fixed_loss(trainer, draws=1) < 0.95 * before  # no noise anywhere (the mean is decoded): a real drop
    from videogen.models.vae import CausalVideoVAE

    vae = CausalVideoVAE.from_pretrained(tmp_path / "run" / "model" / "vae")
    posterior = vae.encode(clip[None])
    assert posterior.std.max() < 1e-6  # the log-variance outputs stayed at the floor: a deterministic encoder
    assert posterior.mean.abs().mean() > 1e-3
    # the saved VAE carries its own latent statistics: its normalized latents are ~N(0, 1) per channel
    with torch.no_grad():
        z = torch.cat([vae.encode(trainer.stream.dataset[i]["video"][None]).mean for i in range(6)])
    normalized = vae.normalize(z).transpose(0, 1).flatten(1)  # (C, N)
    assert torch.allclose(normalized.mean(dim=1), torch.zeros(16), atol=1e-3)
    assert torch.allclose(normalized.std(dim=1, unbiased=False), torch.ones(16), atol=1e-3)


def test_vae_run_with_a_frozen_encoder_trains_the_decoder_only(tmp_path):
    from safetensors.torch import load_file as load

    from videogen.errors import ConfigError
    from videogen.train.config import validate

    def cfg(**model):
        c = tiny_config(task="vae", data={"kind": "shapes", "shapes_samples": 4, "shapes_size": 16, "frames": [5]},
                        objective={"sample_posterior": False}, optim={"lr": 1e-2}, train={"max_steps": 3, "batch_size": 2})
        c.model.vae_arch.base_dim, c.model.vae_arch.dim_mult = 8, [1, 1, 1, 1]
        for key, value in model.items():
            setattr(c.model, key, value)
        return c

    Trainer(cfg(), tmp_path / "a", show_progress=False).run()
    base = tmp_path / "a" / "model"
    Trainer(cfg(vae=str(base), freeze_encoder=True), tmp_path / "b", show_progress=False).run()
    before = load(str(base / "vae" / "diffusion_pytorch_model.safetensors"))
    after = load(str(tmp_path / "b" / "model" / "vae" / "diffusion_pytorch_model.safetensors"))
    frozen = [k for k in before if k.startswith(("encoder.", "quant_conv."))]
    trained = [k for k in before if k.startswith(("decoder.", "post_quant_conv."))]
    assert frozen and trained
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in trained)
    with pytest.raises(ConfigError, match="freeze_encoder"):
        validate(cfg(freeze_encoder=True, latent_stats="measure"))


def test_crop_is_refused_outside_vae_shapes_runs():
    from videogen.errors import ConfigError
    from videogen.train.config import validate

    with pytest.raises(ConfigError, match="data.crop"):
        validate(tiny_config(data={"kind": "shapes", "crop": 32}))  # a DiT run


def test_image_batches_keep_at_least_one_latent_frame():
    from videogen.errors import ConfigError
    from videogen.train.config import validate

    with pytest.raises(ConfigError, match="objective.image_latent_frames: 0 must be at least 1"):
        validate(tiny_config(objective={"p_image": 0.5, "image_latent_frames": 0}))


def _resume_config(wan, data):
    return tiny_config(model={"pretrained": str(wan)}, data={"path": str(data)},
                       objective={"p_first": 0.3, "p_first_last": 0.3, "caption_dropout": 0.3},
                       optim={"ema_decay": 0.9, "warmup_steps": 2},
                       train={"max_steps": 6, "grad_accum": 2, "checkpoint_every": 2, "keep_checkpoints": 2})


def test_interrupted_and_resumed_run_is_bit_exact(tiny_wan_folder, data, tmp_path):
    # 3 clips, batch 1, 2 micro-batches per step: 6 steps cross 4 epochs of data
    straight = Trainer(_resume_config(tiny_wan_folder, data), tmp_path / "a", show_progress=False).run()

    def stop_at_3(trainer, step, stats):
        if step == 3:
            trainer.request_stop()  # what the SIGINT/SIGTERM handler does

    with pytest.raises(TrainingInterrupted, match="stopped at step 3"):
        Trainer(_resume_config(tiny_wan_folder, data), tmp_path / "b", show_progress=False, callback=stop_at_3).run()
    assert [p.name for p in sorted((tmp_path / "b" / "checkpoints").iterdir())] == ["step-0000002", "step-0000003"]
    resumed = Trainer(_resume_config(tiny_wan_folder, data), tmp_path / "b", resume=True, show_progress=False).run()

    assert resumed.step == straight.step == 6 and resumed.loss == straight.loss
    a, b = tmp_path / "a" / "checkpoints" / "step-0000006", tmp_path / "b" / "checkpoints" / "step-0000006"
    for name in ("trainable.safetensors", "ema.safetensors"):
        wa, wb = load_file(str(a / name)), load_file(str(b / name))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), name
    oa, ob = torch.load(a / "optimizer.pt"), torch.load(b / "optimizer.pt")
    assert all(torch.equal(oa["state"][i]["exp_avg_sq"], ob["state"][i]["exp_avg_sq"]) for i in oa["state"])
    la = list(csv.DictReader(open(tmp_path / "a" / "log.csv")))
    lb = list(csv.DictReader(open(tmp_path / "b" / "log.csv")))
    assert [r["loss"] for r in la] == [r["loss"] for r in lb] and len(la) == 6
    # both runs (and the earlier tests) shared one cache: one shard each of latents and text states
    cache = data / ".videogen-cache"
    latents, texts = list(cache.glob("latents-*")), list(cache.glob("text-*"))
    assert len(latents) == len(texts) == 1
    assert len(json.loads((latents[0] / "index.json").read_text())) == 3
    assert len(list(latents[0].glob("*.safetensors"))) == 1
    assert len(json.loads((texts[0] / "index.json").read_text())) == 4  # 3 captions and ""
    # the exported transformer is the EMA's, and it differs from the base model
    ours = load_file(str(tmp_path / "a" / "model" / "transformer" / "diffusion_pytorch_model.safetensors"))
    base = load_file(str(tiny_wan_folder / "transformer" / "diffusion_pytorch_model.safetensors"))
    assert any(not torch.equal(ours[k], base[k]) for k in base)


def test_run_folder_and_config_errors(data, tmp_path, capsys):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("task: dit\nmode: lora\n")
    assert main(["train", str(cfg), "--data", str(data), "--output", str(tmp_path / "busy")]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["train", str(cfg), "--data", str(data), "--output", str(tmp_path / "new"), "--resume"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["train", str(cfg), "--output", str(tmp_path / "r"), "--set", "optim.nope=1"]) == 2
    assert "optim.nope" in capsys.readouterr().err
    assert main(["train", str(cfg), "--output", str(tmp_path / "r"), "--set", "data.frames=[8]"]) == 2
    assert "4k+1" in capsys.readouterr().err
    assert main(["train", str(cfg), "--data", str(tmp_path / "none"), "--output", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no such folder" in err and err.count("\n") == 1


def _lora_yaml(folder, wan, max_steps: int):
    """A LoRA run's config file on the tiny Wan folder, checkpointing only at its end."""
    cfg = folder / "lora.yaml"
    cfg.write_text(
        f"task: dit\nmode: lora\nmodel: {{pretrained: {wan}, max_text_length: 16}}\n"
        "data: {frames: [9], resolutions: [32x32]}\nlora: {rank: 4, alpha: 4}\n"
        f"train: {{max_steps: {max_steps}, checkpoint_every: 100000}}\n"
    )
    return cfg


def test_cli_lora_run_sigint_saves_checkpoint_then_resume(tiny_wan_folder, data, tmp_path, capsys):
    cfg = _lora_yaml(tmp_path, tiny_wan_folder, max_steps=100000)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "videogen", "train", str(cfg), "--data", str(data), "--output", str(run)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run / "log.csv").is_file() or len((run / "log.csv").read_text().splitlines()) < 3:
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted: stopped at step" in err and "Traceback" not in err
    assert len(list((run / "checkpoints").glob("step-*"))) == 1
    saved = int(next((run / "checkpoints").glob("step-*")).name.split("-")[1])
    assert main(cmd[3:] + ["--resume", "--max-steps", str(saved + 2)]) == 0
    out, err = capsys.readouterr()
    assert f"trained {saved + 2} steps" in out and str(run / "lora.safetensors") in out
    assert "training" in err  # the progress bar
    assert os.path.getsize(run / "lora.safetensors") > 0


def test_time_budget_ends_the_run_with_an_export_and_resume_goes_on(tiny_wan_folder, data, tmp_path, capsys):
    cfg = _lora_yaml(tmp_path, tiny_wan_folder, max_steps=5)
    run = tmp_path / "run"
    args = ["train", str(cfg), "--data", str(data), "--output", str(run)]
    assert main(args + ["--set", "train.max_minutes=1e-6"]) == 0  # spent after the first step
    out, err = capsys.readouterr()
    assert "trained 1 steps" in out and "train.max_minutes reached before step 5" in out
    assert "train.max_minutes (1e-06) reached at step 1 of 5" in err
    assert (run / "lora.safetensors").is_file() and [p.name for p in (run / "checkpoints").iterdir()] == ["step-0000001"]
    assert main(args + ["--resume"]) == 0
    out, _ = capsys.readouterr()
    assert "trained 5 steps" in out and "max_minutes" not in out
    assert len(list(csv.DictReader(open(run / "log.csv")))) == 5
    assert main(args[:2] + ["--output", str(tmp_path / "r"), "--set", "train.max_minutes=-1"]) == 2
    assert "train.max_minutes" in capsys.readouterr().err


def test_stop_step_ends_early_on_the_full_schedule_and_resume_goes_on(tiny_wan_folder, data, tmp_path, capsys):
    """train.stop_step ends a run where a time budget would, reproducibly: the learning rate follows the schedule
    over max_steps (not one recomputed over the shorter run), and --resume with a later stop goes on from there."""
    cfg = _lora_yaml(tmp_path, tiny_wan_folder, max_steps=6)
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert main(["train", str(cfg), "--data", str(data), "--output", str(whole), "--set", "optim.warmup_steps=0"]) == 0
    args = ["train", str(cfg), "--data", str(data), "--output", str(parts), "--set", "optim.warmup_steps=0"]
    assert main(args + ["--set", "train.stop_step=2"]) == 0
    out, _ = capsys.readouterr()
    assert "trained 2 steps" in out and (parts / "lora.safetensors").is_file()
    assert [p.name for p in (parts / "checkpoints").iterdir()] == ["step-0000002"]
    assert main(args + ["--resume", "--set", "train.stop_step=4"]) == 0
    assert main(args + ["--resume"]) == 0  # no stop: on to max_steps
    out, _ = capsys.readouterr()
    assert "trained 6 steps" in out
    rows = {name: list(csv.DictReader(open(tmp_path / name / "log.csv"))) for name in ("whole", "parts")}
    assert [r["step"] for r in rows["parts"]] == [str(i) for i in range(1, 7)]
    lrs = [float(r["lr"]) for r in rows["whole"]]
    assert [float(r["lr"]) for r in rows["parts"]] == lrs and lrs[0] > lrs[1] > lrs[3] > lrs[5]  # one cosine, 6 steps
    # the same run: two LoRA runs through the CLI agree to about 1e-5 here, not bit for bit
    assert [float(r["loss"]) for r in rows["parts"]] == pytest.approx([float(r["loss"]) for r in rows["whole"]], rel=1e-3)
    assert main(args[:2] + ["--output", str(tmp_path / "r"), "--set", "train.stop_step=-1"]) == 2
    assert "train.stop_step" in capsys.readouterr().err


def test_text_encoder_trains_with_the_dit_under_gradient_checkpointing(tiny_wan_folder, data, tmp_path):
    cfg = tiny_config(model={"pretrained": str(tiny_wan_folder), "train_text_encoder": True}, data={"path": str(data)},
                      train={"max_steps": 2, "gradient_checkpointing": True}, objective={"caption_dropout": 0.0})
    trainer = Trainer(cfg, tmp_path / "run", show_progress=False)
    assert trainer.text_cache is None and any(n.startswith("text_encoder.") for n in trainer.trainable)
    trainer.run()
    for part, file in (("text_encoder", "model.safetensors"), ("transformer", "diffusion_pytorch_model.safetensors")):
        ours = load_file(str(tmp_path / "run" / "model" / part / file))
        base = load_file(str(tiny_wan_folder / part / file))
        assert any(not torch.equal(ours[k], base[k]) for k in base), part


@pytest.mark.slow  # inductor compiles the forward and backward graphs: about a minute on 2 cores
def test_compiled_run_trains_like_the_eager_one(tiny_wan_folder, data, tmp_path):
    """train.compile: torch.compile in place, so names, checkpoints and the export stay as they were."""
    weights = {}
    for compiled in (False, True):
        cfg = tiny_config(model={"pretrained": str(tiny_wan_folder)}, data={"path": str(data)},
                          objective={"caption_dropout": 0.0, "p_first": 0.5}, optim={"lr": 3e-3},
                          train={"max_steps": 2, "batch_size": 3, "compile": compiled})
        trainer = Trainer(cfg, tmp_path / f"run-{compiled}", show_progress=False)
        assert (trainer.module._compiled_call_impl is not None) == compiled
        trainer.run()
        weights[compiled] = load_file(str(tmp_path / f"run-{compiled}" / "model" / "transformer" /
                                          "diffusion_pytorch_model.safetensors"))
    base = load_file(str(tiny_wan_folder / "transformer" / "diffusion_pytorch_model.safetensors"))
    assert weights[True].keys() == weights[False].keys() == base.keys()
    assert any(not torch.equal(weights[True][k], base[k]) for k in base)  # it trained
    for k in base:
        torch.testing.assert_close(weights[True][k], weights[False][k], rtol=1e-3, atol=1e-5, msg=k)


def test_demo_recipe_from_scratch_on_shapes_gives_a_loadable_model(tiny_wan_folder, tmp_path):
    from videogen import VideoPipeline

    cfg = tiny_config(model={"vae": str(tiny_wan_folder), "train_text_encoder": True},
                      data={"kind": "shapes", "shapes_samples": 4, "shapes_size": 32},
                      train={"max_steps": 2, "batch_size": 2},
                      validation={"prompts": ["a red circle moving right on a black background"], "frames": 9,
                                  "height": 32, "width": 32, "steps": 2})
    run = tmp_path / "run"
    Trainer(cfg, run, show_progress=False).run()
    assert probe_video(run / "validation" / "step-0000002-0.mp4").frames == 9
    pipe = VideoPipeline.from_pretrained(run / "model")
    video = pipe.generate("a blue square moving up on a white background", num_frames=5, height=32, width=32,
                          num_steps=2, seed=0, progress=False)
    assert video.frames.shape == (5, 32, 32, 3)


def test_a_4x_vae_and_a_4x4_patch_dit_from_scratch_make_a_working_model(tmp_path):
    # the demo recipe's shapes: a VAE with two downsampling stages (64x64 -> 16x16 latents) and a DiT whose
    # tokens are 4x4 latent pixels, so a token still covers 16x16 pixels, as with Wan2.1's 8x and 2x2
    from videogen import VideoPipeline
    from videogen.errors import InputError
    from videogen.models.vae import CausalVideoVAE

    vae_cfg = tiny_config(task="vae", data={"kind": "shapes", "shapes_samples": 2, "shapes_size": 32, "frames": [5]},
                          objective={"sample_posterior": False}, train={"max_steps": 1, "batch_size": 2})
    vae_cfg.model.vae_arch.base_dim, vae_cfg.model.vae_arch.dim_mult = 8, [1, 2, 2]
    vae_cfg.model.vae_arch.temperal_downsample = [True, True]
    Trainer(vae_cfg, tmp_path / "vae", show_progress=False).run()
    vae = CausalVideoVAE.from_pretrained(tmp_path / "vae" / "model" / "vae")
    assert (vae.spatial_compression, vae.temporal_compression) == (4, 4)
    assert (vae.config.scale_factor_spatial, vae.config.scale_factor_temporal) == (4, 4)  # what pipelines read
    assert vae.encode(torch.zeros(1, 3, 5, 32, 32)).mean.shape == (1, 16, 2, 8, 8)

    dit_cfg = tiny_config(model={"vae": str(tmp_path / "vae" / "model"), "train_text_encoder": True},
                          data={"kind": "shapes", "shapes_samples": 2, "shapes_size": 32},
                          train={"max_steps": 1, "batch_size": 2}, validation={"prompts": []})
    dit_cfg.model.dit.patch_size = [1, 4, 4]
    Trainer(dit_cfg, tmp_path / "dit", show_progress=False).run()
    pipe = VideoPipeline.from_pretrained(tmp_path / "dit" / "model")
    assert tuple(pipe.transformer.config.patch_size) == (1, 4, 4) and pipe.geometry.pixel_multiple == 16
    video = pipe.generate("a blue square moving up on a white background", num_frames=5, height=32, width=48,
                          num_steps=2, seed=0, progress=False)
    assert video.frames.shape == (5, 32, 48, 3)
    with pytest.raises(InputError, match="multiple of 16"):
        pipe.settings(height=40)


def test_a_config_gives_a_new_dit_frame_positions():
    from videogen.train.components import build_dit

    cfg = tiny_config()
    cfg.model.dit.frame_position_dim = 8
    dit = build_dit(cfg, latent_channels=4, text_dim=16)
    assert dit.config.frame_position_dim == 8 and dit.frame_position.proj.in_features == 8
    assert dit.frame_position.proj.weight.abs().sum() == 0  # zero at the start
    assert build_dit(tiny_config(), latent_channels=4, text_dim=16).frame_position is None  # Wan2.1's layout by default


def test_warm_start_moves_a_dit_to_new_patches_keeping_its_blocks():
    from videogen.errors import ModelError
    from videogen.models.dit import VideoDiT
    from videogen.train.components import warm_start

    arch = dict(num_layers=2, num_attention_heads=2, attention_head_dim=8, ffn_dim=32, freq_dim=16, text_dim=16,
                in_channels=4, out_channels=4)
    torch.manual_seed(0)
    source = VideoDiT(**arch, patch_size=(1, 2, 2))
    torch.manual_seed(1)
    model = VideoDiT(**arch, patch_size=(1, 4, 4))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fresh = warm_start(model, source)
    assert set(fresh) == {"patch_embedding.weight", "proj_out.weight", "proj_out.bias"}
    for name, value in model.state_dict().items():
        expected = before[name] if name in fresh else source.state_dict()[name]
        assert torch.equal(value, expected), name
    with pytest.raises(ModelError, match="shares no block"):
        warm_start(model, VideoDiT(**{**arch, "attention_head_dim": 4}))
    with pytest.raises(Exception, match="dit_init starts a new DiT"):
        tiny_config(task="vae", model={"dit_init": "somewhere"})
