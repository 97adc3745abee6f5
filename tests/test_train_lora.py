"""LoRA: save in diffusers' format, load into diffusers' WanPipeline, merge into our DiT, round trips, errors."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from videogen.errors import InputError, ModelError
from videogen.models.dit import VideoDiT
from videogen.train.config import LoRAConfig
from videogen.models.lora import merge_lora, parse_lora_arg
from videogen.train.lora import add_lora, save_lora


def _inputs(folder):
    config = VideoDiT.load_config(folder / "transformer")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, config["in_channels"], 2, 4, 4, generator=g)  # (B, C, T', H', W')
    text = torch.randn(1, 7, config["text_dim"], generator=g)  # (B, N, D)
    return x, torch.tensor([500.0]), text


def _trained_lora(folder, cfg):
    """A DiT with adapters whose B matrices are random, as after some training."""
    dit = VideoDiT.from_pretrained(folder / "transformer")
    names = add_lora(dit, cfg)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in dit.named_parameters():
            if ".lora_B." in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return dit, names


@pytest.fixture(scope="module")
def lora_file(tiny_wan_folder, tmp_path_factory):
    cfg = LoRAConfig(rank=4, alpha=2.0)
    dit, names = _trained_lora(tiny_wan_folder, cfg)
    x, t, text = _inputs(tiny_wan_folder)
    with torch.no_grad():
        expected = dit(x, t, text)
    path = save_lora(dit, cfg, tmp_path_factory.mktemp("lora") / "lora.safetensors")
    return path, expected, names


def test_adapters_cover_attention_and_ffn_and_only_they_train(tiny_wan_folder):
    dit, names = _trained_lora(tiny_wan_folder, LoRAConfig(rank=2))
    assert "blocks.0.attn1.to_q" in names and "blocks.1.attn2.to_out.0" in names
    assert "blocks.0.ffn.net.0.proj" in names and "blocks.0.ffn.net.2" in names
    assert len(names) == 2 * (2 * 4 + 2)  # 2 blocks x (2 attentions x q,k,v,out + 2 ffn linears)
    trainable = [n for n, p in dit.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in n for n in trainable)
    with pytest.raises(ModelError, match="lora.targets"):
        add_lora(VideoDiT.from_pretrained(tiny_wan_folder / "transformer"), LoRAConfig(targets=["nope"]))


def test_file_has_diffusers_keys(lora_file):
    path, _, names = lora_file
    keys = set(load_file(str(path)))
    assert f"transformer.{names[0]}.lora_A.weight" in keys
    assert all(k.startswith("transformer.blocks.") for k in keys) and len(keys) == 2 * len(names)


def test_diffusers_wan_pipeline_loads_it_with_the_same_outputs(tiny_wan_folder, lora_file):
    from diffusers import WanPipeline

    path, expected, _ = lora_file
    pipe = WanPipeline.from_pretrained(tiny_wan_folder)
    x, t, text = _inputs(tiny_wan_folder)
    with torch.no_grad():
        base = pipe.transformer(x, t, text, return_dict=False)[0]
        pipe.load_lora_weights(str(path))
        theirs = pipe.transformer(x, t, text, return_dict=False)[0]
    assert (base - expected).abs().max() > 1e-3  # the LoRA changes the output
    torch.testing.assert_close(theirs, expected, atol=1e-5, rtol=1e-4)  # alpha / r honoured


def test_merge_lora_merges_with_scale(tiny_wan_folder, lora_file):
    path, expected, names = lora_file
    x, t, text = _inputs(tiny_wan_folder)
    dit = VideoDiT.from_pretrained(tiny_wan_folder / "transformer")
    with torch.no_grad():
        base = dit(x, t, text)
        assert merge_lora(dit, path, scale=1.0) == len(names)
        torch.testing.assert_close(dit(x, t, text), expected, atol=1e-5, rtol=1e-4)
        merge_lora(dit, path, scale=-0.5)  # half of it back out: halfway between base and full
        half = dit(x, t, text)
    full_delta, half_delta = (expected - base).abs().mean(), (half - base).abs().mean()
    assert 0.4 < (half_delta / full_delta).item() < 0.6


def test_lora_arg_and_bad_files(tiny_wan_folder, lora_file, tmp_path):
    assert parse_lora_arg("style.safetensors:0.7") == (tmp_path.__class__("style.safetensors"), 0.7)
    assert parse_lora_arg("style.safetensors")[1] == 1.0
    dit = VideoDiT.from_pretrained(tiny_wan_folder / "transformer")
    with pytest.raises(InputError, match="no such LoRA file"):
        merge_lora(dit, tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(InputError, match="not a safetensors"):
        merge_lora(dit, tmp_path / "junk.safetensors")
    save_file({"blocks.0.attn1.to_q.weight": torch.zeros(16, 16)}, str(tmp_path / "full.safetensors"))
    with pytest.raises(ModelError, match="not a diffusers/PEFT LoRA"):
        merge_lora(dit, tmp_path / "full.safetensors")
    weights = load_file(str(lora_file[0]))
    key = next(k for k in weights if k.endswith("lora_A.weight"))
    weights[key] = torch.zeros(4, 99)
    save_file(weights, str(tmp_path / "other.safetensors"))
    with pytest.raises(ModelError, match="another model size"):
        merge_lora(dit, tmp_path / "other.safetensors")


def test_merge_lora_into_a_pipeline(tiny_wan_folder, lora_file):
    from videogen import VideoPipeline

    path, expected, names = lora_file
    pipe = VideoPipeline.from_pretrained(tiny_wan_folder, device="cpu")
    assert merge_lora(pipe, path, 1.0) == len(names)
    x, t, text = _inputs(tiny_wan_folder)
    with torch.no_grad():
        torch.testing.assert_close(pipe.transformer(x, t, text), expected, atol=1e-5, rtol=1e-4)


def test_generate_cli_applies_lora(tiny_wan_folder, lora_file, tmp_path, capsys):
    from videogen.cli import main
    from videogen.io import read_video

    path = lora_file[0]
    args = ["generate", "a red circle", "--model", str(tiny_wan_folder), "--frames", "5", "--height", "32", "--width",
            "32", "--steps", "2", "--seed", "0"]
    assert main(args + ["-o", str(tmp_path / "base.mp4")]) == 0
    assert main(args + ["-o", str(tmp_path / "lora.mp4"), "--lora", f"{path}:1.5"]) == 0
    base, lora = read_video(tmp_path / "base.mp4").frames, read_video(tmp_path / "lora.mp4").frames
    assert base.shape == lora.shape == (5, 32, 32, 3) and not np.array_equal(base, lora)
    capsys.readouterr()
    assert main(args + ["-o", str(tmp_path / "x.mp4"), "--lora", str(tmp_path / "missing.safetensors:0.5")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing.safetensors: no such LoRA file" in err
    assert not (tmp_path / "x.mp4").exists()


def test_extend_and_interpolate_cli_apply_lora(tiny_wan_folder, lora_file, tmp_path):
    from videogen.cli import main
    from videogen.io import read_video, write_video

    g = np.random.default_rng(0)
    clip = write_video(tmp_path / "in.mp4", g.integers(0, 255, (5, 32, 32, 3), dtype=np.uint8), 8.0)
    common = ["-p", "a red circle", "--model", str(tiny_wan_folder), "--steps", "2", "--seed", "0", "--height", "32",
              "--width", "32"]
    jobs = {
        "extend": ["extend", str(clip), "--frames", "4", "--window", "5", "--context", "1"],
        "interpolate": ["interpolate", str(clip), str(clip), "--frames", "9"],  # 3 latent frames: the middle one sampled
    }
    for name, job in jobs.items():
        outputs = []
        for extra in ([], ["--lora", f"{lora_file[0]}:1.5"]):
            out = tmp_path / f"{name}-{len(extra)}.mp4"
            assert main(job + common + ["-o", str(out), *extra]) == 0
            outputs.append(read_video(out).frames)
        assert outputs[0].shape == outputs[1].shape and not np.array_equal(*outputs), name


def test_a_lora_run_without_a_model_adapts_the_bundled_one(tiny_wan_folder, tmp_path, monkeypatch):
    import shutil

    import videogen.bundled
    from train_helpers import tiny_config
    from videogen.train.components import load_components

    monkeypatch.setattr(videogen.bundled, "_package_folder", lambda: tmp_path / "videogen")
    with pytest.raises(ModelError, match="no bundled demo model"):
        load_components(tiny_config(mode="lora"))
    bundled = tmp_path / "assets" / "demo-model"
    shutil.copytree(tiny_wan_folder, bundled)
    cfg = tiny_config(mode="lora")
    parts = load_components(cfg)
    assert cfg.model.pretrained == str(bundled)  # the saved config names the folder it adapted
    base = VideoDiT.from_pretrained(tiny_wan_folder / "transformer").state_dict()
    assert all(torch.equal(v, base[k]) for k, v in parts.dit.state_dict().items())
