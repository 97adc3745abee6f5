"""VideoDiT against diffusers' WanTransformer3DModel on the same random weights, and its own contracts."""

import json

import pytest
import torch
from diffusers import WanTransformer3DModel

from videogen.errors import InputError, ModelError, ResourceError
from videogen.models.dit import VideoDiT

CONFIG = dict(
    num_attention_heads=2,
    attention_head_dim=16,
    in_channels=4,
    out_channels=4,
    text_dim=24,
    freq_dim=32,
    ffn_dim=48,
    num_layers=2,
    rope_max_seq_len=32,
)
TEXT_LEN = 7


def _relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return ((got.float() - expected.float()).abs().max() / expected.float().abs().max()).item()


@pytest.fixture(scope="module")
def reference():
    """diffusers' model with its own random init (every weight non-zero), seeded."""
    torch.manual_seed(0)
    return WanTransformer3DModel(**CONFIG).eval()


@pytest.fixture(scope="module")
def ours(reference):
    model = VideoDiT(**CONFIG).eval()
    model.load_state_dict(reference.state_dict(), strict=True)
    return model


def _inputs(shape=(2, 4, 3, 6, 4), seed=0):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(*shape, generator=g)
    timestep = torch.tensor([37.0, 901.0])[: shape[0]]
    text = torch.randn(shape[0], TEXT_LEN, CONFIG["text_dim"], generator=g)
    return latents, timestep, text


def _tokens(shape):
    return shape[2] * (shape[3] // 2) * (shape[4] // 2)


# ---------------------------------------------------------------------------------- reference equivalence


@pytest.mark.parametrize("shape", [(2, 4, 1, 4, 4), (2, 4, 3, 6, 4), (1, 4, 2, 2, 8)])
def test_matches_diffusers_one_timestep_per_sample(reference, ours, shape):
    latents, timestep, text = _inputs(shape)
    with torch.no_grad():
        expected = reference(latents, timestep, text, return_dict=False)[0]
        got = ours(latents, timestep, text)
    assert got.shape == latents.shape
    assert _relative_error(got, expected) < 1e-4


@pytest.mark.parametrize("shape", [(2, 4, 3, 6, 4), (1, 4, 1, 4, 6)])
def test_matches_diffusers_one_timestep_per_token(reference, ours, shape):
    latents, _, text = _inputs(shape)
    g = torch.Generator().manual_seed(3)
    timestep = torch.rand(shape[0], _tokens(shape), generator=g) * 1000
    timestep[:, : shape[3] * shape[4] // 4] = 0  # the first latent frame known, as extension holds it
    with torch.no_grad():
        expected = reference(latents, timestep, text, return_dict=False)[0]
        got = ours(latents, timestep, text)
    assert _relative_error(got, expected) < 1e-4


def test_timestep_matters_per_token(ours):
    """Equal per-token timesteps give the per-sample answer; changing one token's timestep changes the output."""
    latents, timestep, text = _inputs()
    per_token = timestep[:, None].expand(2, _tokens(latents.shape)).clone()
    with torch.no_grad():
        base = ours(latents, timestep, text)
        torch.testing.assert_close(ours(latents, per_token, text), base, rtol=1e-5, atol=1e-5)
        per_token[0, 5] = 500.0
        changed = ours(latents, per_token, text)
    assert (changed[1] - base[1]).abs().max() < 1e-5
    assert (changed[0] - base[0]).abs().max() > 1e-3


def test_text_mask_equals_dropping_the_padding(ours):
    latents, timestep, text = _inputs()
    mask = torch.ones(2, TEXT_LEN, dtype=torch.bool)
    mask[0, 4:] = False
    with torch.no_grad():
        masked = ours(latents, timestep, text, text_mask=mask)
        short = ours(latents[:1], timestep[:1], text[:1, :4])
        unmasked = ours(latents, timestep, text)
    torch.testing.assert_close(masked[:1], short, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(masked[1:], unmasked[1:], rtol=1e-5, atol=1e-5)
    assert (masked[0] - unmasked[0]).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["math", "chunked", "sdpa"])
def test_attention_backends_agree_inside_the_model(ours, name):
    latents, timestep, text = _inputs()
    mask = torch.ones(2, TEXT_LEN, dtype=torch.bool)
    mask[1, 2:] = False
    with torch.no_grad():
        ours.set_attention_backend("math")
        expected = ours(latents, timestep, text, text_mask=mask)
        ours.set_attention_backend(name)
        got = ours(latents, timestep, text, text_mask=mask)
        ours.set_attention_backend(None)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------ weights on disk


def test_diffusers_checkpoint_loads_into_ours(reference, tmp_path):
    reference.save_pretrained(tmp_path)
    loaded = VideoDiT.from_pretrained(tmp_path).eval()
    latents, timestep, text = _inputs()
    with torch.no_grad():
        assert _relative_error(loaded(latents, timestep, text), reference(latents, timestep, text)[0]) < 1e-4


def test_our_checkpoint_loads_into_diffusers(ours, tmp_path):
    ours.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert {k: v for k, v in config.items() if not k.startswith("_")}.keys() == WanTransformer3DModel(
        **CONFIG
    ).config.keys() - {"_use_default_values"}
    loaded = WanTransformer3DModel.from_pretrained(tmp_path).eval()
    latents, timestep, text = _inputs()
    with torch.no_grad():
        assert _relative_error(loaded(latents, timestep, text)[0], ours(latents, timestep, text)) < 1e-4


def test_sharded_checkpoint_loads(reference, tmp_path):
    reference.save_pretrained(tmp_path, max_shard_size="20KB")
    shards = sorted(p.name for p in tmp_path.glob("*.safetensors"))
    assert len(shards) > 2 and (tmp_path / "diffusion_pytorch_model.safetensors.index.json").exists()
    loaded = VideoDiT.from_pretrained(tmp_path).eval()
    for name, tensor in reference.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_bf16_load_keeps_norms_modulation_and_rope_fp32(reference, tmp_path):
    reference.save_pretrained(tmp_path)
    loaded = VideoDiT.from_pretrained(tmp_path, torch_dtype=torch.bfloat16)
    assert loaded.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
    assert loaded.blocks[0].scale_shift_table.dtype == torch.float32
    assert loaded.condition_embedder.time_embedder.linear_1.weight.dtype == torch.float32
    assert loaded.rope.cos.dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_forward_close_to_fp32(ours, dtype):
    half = VideoDiT(**CONFIG).eval()
    half.load_state_dict(ours.state_dict())
    half.to(dtype)
    assert half.rope.cos.dtype == torch.float32  # RoPE tables never drop to half precision
    torch.testing.assert_close(half.rope.sin, ours.rope.sin)
    latents, timestep, text = _inputs()
    with torch.no_grad():
        got = half(latents, timestep, text)
        expected = ours(latents, timestep, text)
    assert got.dtype == dtype and torch.isfinite(got).all()
    assert _relative_error(got, expected) < 5e-2


# --------------------------------------------------------------------------------------------- training


def test_gradient_checkpointing_gives_the_same_gradients(ours):
    latents, timestep, text = _inputs()
    latents.requires_grad_()

    def gradients(model):
        model.zero_grad()
        latents.grad = None
        out = model(latents, timestep, text)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        return [latents.grad.clone()] + [p.grad.clone() for p in model.parameters()]

    plain = gradients(ours)
    ours.enable_gradient_checkpointing()
    assert all(b.gradient_checkpointing for b in ours.blocks)
    full = gradients(ours)
    ours.set_gradient_checkpointing([1])
    assert [b.gradient_checkpointing for b in ours.blocks] == [False, True]
    partial = gradients(ours)
    ours.disable_gradient_checkpointing()
    assert not any(b.gradient_checkpointing for b in ours.blocks)
    assert all(g.abs().sum() > 0 for g in plain[:5])
    for a, b, c in zip(plain, full, partial):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(c, a, rtol=1e-5, atol=1e-6)


def test_fresh_model_starts_at_zero_velocity():
    model = VideoDiT(**CONFIG)
    latents, timestep, text = _inputs()
    with torch.no_grad():
        assert model(latents, timestep, text).abs().max() == 0  # adaLN-Zero style output head
    assert model.blocks[0].attn1.to_q.weight.abs().sum() > 0


# --------------------------------------------------------------------- frame position (not in Wan2.1)


def test_frame_position_starts_as_the_model_without_it_and_then_tells_places_apart(ours, tmp_path):
    from videogen.train.components import warm_start

    model = VideoDiT(**CONFIG, frame_position_dim=8).eval()
    assert warm_start(model, ours) == ["frame_position.proj.bias", "frame_position.proj.weight"]
    latents, timestep, text = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(model(latents, timestep, text), ours(latents, timestep, text), rtol=0, atol=0)

    # trained: the same patch gets another embedding at another place, at any resolution alike
    model.train()
    loss = model(latents, timestep, text).square().mean()
    loss.backward()
    assert model.frame_position.proj.weight.grad.abs().sum() > 0
    with torch.no_grad():
        model.frame_position.proj.weight.normal_()
        small, large = model.frame_position((1, 2, 2)), model.frame_position((3, 4, 4))
    assert small.shape == (4, 32) and large.shape == (48, 32)
    assert (small[0] - small[3]).abs().max() > 0.1  # top left vs bottom right
    torch.testing.assert_close(large[:16], large[32:])  # the same in every frame
    # the frame's centre is the same place at 1x1 and 3x3 tokens
    torch.testing.assert_close(model.frame_position((1, 1, 1))[0], model.frame_position((1, 3, 3))[4])

    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["frame_position_dim"] == 8
    again = VideoDiT.from_pretrained(tmp_path).eval()
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(again(latents, timestep, text), model(latents, timestep, text))


def test_frame_position_width_must_split_over_two_axes():
    with pytest.raises(ModelError, match="multiple of 4"):
        VideoDiT(**CONFIG, frame_position_dim=6)


# ------------------------------------------------------------------------------------------ bad input


def test_image_to_video_config_is_refused():
    with pytest.raises(ModelError, match="image-to-video"):
        VideoDiT(**CONFIG, image_dim=1280)
    with pytest.raises(ModelError, match="image-to-video"):
        VideoDiT(**CONFIG, added_kv_proj_dim=1536)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(latents=torch.zeros(2, 4, 3, 5, 4)), "not a multiple of the patch"),
        (dict(latents=torch.zeros(2, 3, 3, 6, 4)), r"must be \(B, 4, T', H', W'\)"),
        (dict(latents=torch.zeros(2, 4, 3, 128, 4)), "rope_max_seq_len"),
        (dict(timestep=torch.zeros(2, 5)), r"per token \(B, L\) = \(2, 18\)"),
        (dict(timestep=torch.zeros(3)), "timestep"),
        (dict(text=torch.zeros(2, 7, 25)), "text states"),
        (dict(text_mask=torch.zeros(2, 7, dtype=torch.bool)), "no text token"),
        (dict(text_mask=torch.ones(2, 6, dtype=torch.bool)), "text mask"),
    ],
)
def test_bad_inputs_are_clear_errors(ours, change, message):
    latents, timestep, text = _inputs()
    args = dict(latents=latents, timestep=timestep, text=text, text_mask=None) | change
    with pytest.raises(InputError, match=message):
        ours(args["latents"], args["timestep"], args["text"], text_mask=args["text_mask"])


def test_bad_backend_name_is_a_clear_error(ours):
    with pytest.raises(InputError, match="unknown attention backend 'flash'"):
        ours.set_attention_backend("flash")


def test_unavailable_backend_from_env_fails_the_forward_clearly(ours, monkeypatch):
    monkeypatch.setenv("VIDEOGEN_ATTENTION", "xformers")
    latents, timestep, text = _inputs()
    with pytest.raises(ResourceError, match="'xformers' cannot run here"):
        ours(latents, timestep, text)
