"""The text encoder (videogen.models.text) against diffusers' WanPipeline prompt encoding."""

import shutil

import pytest
import torch

from videogen.errors import ModelError
from videogen.models.text import MAX_SEQUENCE_LENGTH, TextEncoder, clean_prompt, save_byte_tokenizer

PROMPTS = ["a red circle moving left on a black background", "  a  &amp;amp; b\n\tc ", "x"]


@pytest.fixture(scope="module")
def encoder(tiny_wan_folder):
    return TextEncoder.from_pretrained(tiny_wan_folder / "tokenizer", tiny_wan_folder / "text_encoder")


@pytest.fixture(scope="module")
def reference(tiny_wan_folder):
    from diffusers import WanPipeline

    return WanPipeline.from_pretrained(tiny_wan_folder)


def test_states_equal_diffusers(encoder, reference):
    ours = encoder.encode(PROMPTS)
    theirs = reference._get_t5_prompt_embeds(PROMPTS, max_sequence_length=MAX_SEQUENCE_LENGTH, device="cpu")
    assert ours.shape == theirs.shape == (3, MAX_SEQUENCE_LENGTH, encoder.dim)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    assert ours.abs().amax(dim=-1)[0, :10].min() > 0  # real states, not zeros


def test_states_zero_beyond_the_prompt(encoder):
    states = encoder.encode("abc")[0]  # 3 bytes + end-of-sequence token
    assert states[:4].abs().amax(dim=-1).min() > 0
    assert torch.count_nonzero(states[4:]) == 0


def test_long_prompts_are_cut_to_max_length(encoder):
    states = encoder.encode("z" * 2000)[0]
    assert states.shape[0] == MAX_SEQUENCE_LENGTH
    assert states.abs().amax(dim=-1).min() > 0  # every position is a real token


def test_prompt_cleaning_as_wan():
    assert clean_prompt("  a  &amp;amp; b\n\tc ") == "a & b c"
    assert clean_prompt("plain") == "plain"


def test_repeated_prompts_are_encoded_once(encoder):
    calls = []
    hook = encoder.encoder.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    try:
        encoder.clear_cache()
        first = encoder.encode(["p1", "p2", "p1"])
        assert calls == [2]  # two distinct prompts, one batch
        again = encoder.encode("p2")
        assert calls == [2]  # cached
        torch.testing.assert_close(again[0], first[1])
    finally:
        hook.remove()


def test_cache_is_bounded(encoder, monkeypatch):
    monkeypatch.setattr("videogen.models.text.CACHE_SIZE", 2)
    encoder.clear_cache()
    encoder.encode(["a", "b", "c"])
    assert list(encoder._cache) == ["b", "c"]
    encoder.encode("b")
    encoder.encode("d")
    assert list(encoder._cache) == ["b", "d"]  # least recently used ("c") left first


def test_missing_or_broken_folders_are_model_errors(tmp_path, tiny_wan_folder):
    with pytest.raises(ModelError, match="tokenizer"):
        TextEncoder.from_pretrained(tmp_path / "nope", tiny_wan_folder / "text_encoder")
    broken = tmp_path / "text_encoder"
    shutil.copytree(tiny_wan_folder / "text_encoder", broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match="text encoder weights"):
        TextEncoder.from_pretrained(tiny_wan_folder / "tokenizer", broken)


def test_byte_tokenizer_folder_round_trip(tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(save_byte_tokenizer(tmp_path / "tok"))
    ids = tokenizer("hé").input_ids
    assert ids == [ord("h") + 3, 0xC3 + 3, 0xA9 + 3, tokenizer.eos_token_id]  # UTF-8 bytes, offset by 3 specials


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_offload_moves_the_encoder_to_cpu(tiny_wan_folder):
    encoder = TextEncoder.from_pretrained(tiny_wan_folder / "tokenizer", tiny_wan_folder / "text_encoder", device="cuda")
    assert next(encoder.encoder.parameters()).is_cuda
    states = encoder.encode("hello")
    encoder.offload()
    assert not next(encoder.encoder.parameters()).is_cuda
    torch.testing.assert_close(encoder.encode("hello"), states)
