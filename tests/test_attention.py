"""The attention entry point: every backend agrees with `math`, the choice order, and the errors."""

import pytest
import torch

from videogen.errors import InputError, ResourceError, VideogenError
from videogen.models import attention as attn
from videogen.models.attention import attention, available_backends, backend, chunk_rows, resolve_backend

CPU_BACKENDS = ["math", "sdpa", "chunked"]


def _qkv(b=2, lq=37, lk=23, heads=3, dim=16, dtype=torch.float32, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    make = lambda n: torch.randn(b, n, heads, dim, generator=g).to(device=device, dtype=dtype)  # noqa: E731
    return make(lq), make(lk), make(lk)


def _key_mask(b, lk, seed=1, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(b, lk, generator=g) > 0.4
    mask[:, 0] = True  # every row keeps a key
    mask[0, lk // 2 :] = False  # one sample with a padded tail, as a T5 prompt has
    return mask.to(device)


@pytest.fixture(autouse=True)
def _no_env_backend(monkeypatch):
    monkeypatch.delenv(attn.ENV_VAR, raising=False)


# ------------------------------------------------------------------------------------------ agreement


@pytest.mark.parametrize("name", CPU_BACKENDS)
@pytest.mark.parametrize("masked", [False, True])
def test_backend_matches_math(name, masked):
    q, k, v = _qkv()
    mask = _key_mask(2, 23) if masked else None
    expected = attention(q, k, v, mask=mask, backend="math")
    # A tiny budget forces the chunked backend through many query blocks, including a ragged last one.
    got = attention(q, k, v, mask=mask, backend=name, chunk_bytes=4 * 3 * 2 * 3 * 23 * 5)
    assert got.shape == q.shape and got.dtype == q.dtype
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_math_is_softmax_attention_written_out():
    q, k, v = _qkv(b=1, lq=5, lk=4, heads=2, dim=8)
    mask = torch.tensor([[True, False, True, True]])
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / 8**0.5
    scores[..., 1] = float("-inf")
    expected = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v)
    torch.testing.assert_close(attention(q, k, v, mask=mask, backend="math"), expected)


def test_masked_keys_get_no_attention():
    q, k, v = _qkv(b=1, lq=6, lk=5)
    mask = torch.tensor([[True, True, True, False, False]])
    k2, v2 = k.clone(), v.clone()
    k2[:, 3:], v2[:, 3:] = 100.0, -100.0  # whatever sits under the mask must not matter
    for name in CPU_BACKENDS:
        torch.testing.assert_close(
            attention(q, k2, v2, mask=mask, backend=name), attention(q, k[:, :3], v[:, :3], backend="math")
        )


@pytest.mark.parametrize("name", ["sdpa", "chunked"])
def test_bf16_close_to_math(name):
    q, k, v = _qkv(dtype=torch.bfloat16)
    got = attention(q, k, v, backend=name)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), attention(q, k, v, backend="math").float(), rtol=2e-2, atol=2e-2)


def test_chunked_gradients_match_math():
    q, k, v = (t.requires_grad_() for t in _qkv(lq=19, lk=11))
    mask = _key_mask(2, 11)
    grads = {}
    for name in ("math", "chunked"):
        out = attention(q, k, v, mask=mask, backend=name, chunk_bytes=4 * 3 * 2 * 3 * 11 * 4)
        grads[name] = torch.autograd.grad((out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum(), (q, k, v))
    for a, b in zip(grads["math"], grads["chunked"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_chunk_rows_respects_budget():
    rows = chunk_rows(batch=1, heads=2, keys=16384, chunk_bytes=64 * 2**20)
    assert rows >= 1
    assert 3 * 2 * rows * 16384 * 4 <= 64 * 2**20 < 3 * 2 * (rows + 1) * 16384 * 4
    assert chunk_rows(batch=64, heads=64, keys=10**6, chunk_bytes=1) == 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["xformers", "sdpa", "chunked"])
@pytest.mark.parametrize("masked", [False, True])
def test_gpu_backend_matches_math(name, masked):
    if name == "xformers" and attn.why_unavailable("xformers", torch.empty(1, device="cuda", dtype=torch.float16)):
        pytest.skip("xformers is not installed")
    q, k, v = _qkv(dtype=torch.float16, device="cuda")
    mask = _key_mask(2, 23, device="cuda") if masked else None
    got = attention(q, k, v, mask=mask, backend=name)
    torch.testing.assert_close(got.float(), attention(q, k, v, mask=mask, backend="math").float(), rtol=1e-2, atol=1e-2)


# ---------------------------------------------------------------------------------------- the choice


def test_automatic_choice_on_cpu_is_sdpa():
    q, _, _ = _qkv()
    assert resolve_backend(q) == "sdpa"
    assert resolve_backend(q, "auto") == "sdpa"


def test_argument_beats_context_beats_env(monkeypatch):
    q, _, _ = _qkv()
    monkeypatch.setenv(attn.ENV_VAR, "math")
    assert resolve_backend(q) == "math"
    with backend("chunked"):
        assert resolve_backend(q) == "chunked"
        assert resolve_backend(q, "SDPA") == "sdpa"
        with backend(None):
            assert resolve_backend(q) == "math"
        with backend("auto"):
            assert resolve_backend(q) == "sdpa"
    assert resolve_backend(q) == "math"


def test_every_backend_reports_availability_readably():
    q, _, _ = _qkv()
    report = available_backends(q)
    assert set(report) == {"xformers", "sdpa", "chunked", "math"}
    assert report["math"] is None and report["chunked"] is None and report["sdpa"] is None
    assert "CUDA" in report["xformers"]


def test_unknown_backend_name_is_a_clear_error(monkeypatch):
    q, k, v = _qkv()
    with pytest.raises(InputError, match="unknown attention backend 'flash3'.*math"):
        attention(q, k, v, backend="flash3")
    with pytest.raises(InputError, match="'flash3'"):
        with backend("flash3"):
            pass
    monkeypatch.setenv(attn.ENV_VAR, "fast")
    with pytest.raises(InputError, match="VIDEOGEN_ATTENTION value 'fast'"):
        attention(q, k, v)


def test_unavailable_backend_is_an_error_not_a_fallback(monkeypatch):
    q, k, v = _qkv()
    with pytest.raises(ResourceError, match="'xformers' cannot run here: xformers needs CUDA"):
        attention(q, k, v, backend="xformers")
    monkeypatch.setenv(attn.ENV_VAR, "xformers")
    with pytest.raises(VideogenError, match="xformers"):
        attention(q, k, v)


def test_bad_shapes_and_masks_are_clear_errors():
    q, k, v = _qkv()
    with pytest.raises(InputError, match="disagree"):
        attention(q, k[..., :8], v)
    with pytest.raises(InputError, match="mask must be bool"):
        attention(q, k, v, mask=torch.ones(2, 23))
    with pytest.raises(InputError, match="mask must be bool"):
        attention(q, k, v, mask=torch.ones(2, 22, dtype=torch.bool))
