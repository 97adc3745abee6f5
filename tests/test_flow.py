"""Flow matching (videogen.diffusion.flow) and the sampler (videogen.diffusion.sampling)."""

import math

import pytest
import torch

from videogen.diffusion import flow
from videogen.diffusion.sampling import SAMPLERS, guided, make_scheduler, sample
from videogen.errors import InputError

WAN_SCHEDULER = {  # the scheduler config Wan2.1-T2V-1.3B-Diffusers ships (keys that matter here)
    "_class_name": "UniPCMultistepScheduler",
    "flow_shift": 3.0,
    "num_train_timesteps": 1000,
    "prediction_type": "flow_prediction",
    "use_flow_sigmas": True,
    "solver_order": 2,
    "solver_type": "bh2",
}


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------ forward process


def test_interpolation_endpoints_and_velocity():
    x0, noise = _randn(2, 4, 3, 2, 2, seed=1), _randn(2, 4, 3, 2, 2, seed=2)
    assert torch.equal(flow.interpolate(x0, noise, torch.zeros(2)), x0)
    assert torch.equal(flow.interpolate(x0, noise, torch.ones(2)), noise)
    # the target is the derivative of the path along s
    s, h = torch.tensor([0.3, 0.7]), 1e-3
    slope = (flow.interpolate(x0, noise, s + h) - flow.interpolate(x0, noise, s)) / h
    torch.testing.assert_close(slope, flow.velocity_target(x0, noise), atol=1e-2, rtol=1e-2)
    # and x0 is recovered from the noisy point and the true velocity
    x_t = flow.interpolate(x0, noise, s)
    torch.testing.assert_close(flow.predict_x0(x_t, flow.velocity_target(x0, noise), s), x0)


def test_interpolation_per_frame_levels():
    x0, noise = _randn(1, 2, 3, 2, 2, seed=1), _randn(1, 2, 3, 2, 2, seed=2)
    x_t = flow.interpolate(x0, noise, torch.tensor([[0.0, 0.5, 1.0]]))
    assert torch.equal(x_t[:, :, 0], x0[:, :, 0])
    torch.testing.assert_close(x_t[:, :, 1], (x0[:, :, 1] + noise[:, :, 1]) / 2)
    assert torch.equal(x_t[:, :, 2], noise[:, :, 2])


def test_loss_ignores_known_frames():
    x0, noise = _randn(2, 4, 3, 2, 2, seed=1), _randn(2, 4, 3, 2, 2, seed=2)
    v = flow.velocity_target(x0, noise) + 0.1
    v_bad = v.clone()
    v_bad[:, :, 0] += 100.0  # a wild prediction on the known first frame
    known = torch.tensor([True, False, False])
    assert flow.flow_loss(v, x0, noise, known=known).item() == pytest.approx(0.01, rel=1e-4)
    assert flow.flow_loss(v_bad, x0, noise, known=known).item() == pytest.approx(0.01, rel=1e-4)
    assert flow.flow_loss(v_bad, x0, noise).item() > 100


# ------------------------------------------------------------------------------------------- shift


def test_shift_formula_and_fixed_points():
    s = torch.linspace(0, 1, 11)
    assert torch.equal(flow.shift_sigmas(s, 1.0), s)
    shifted = flow.shift_sigmas(s, 3.0)
    assert shifted[0] == 0 and shifted[-1] == 1
    assert torch.all(shifted[1:-1] > s[1:-1])
    assert shifted[5].item() == pytest.approx(3 * 0.5 / (1 + 2 * 0.5))
    with pytest.raises(ValueError, match="shift"):
        flow.shift_sigmas(s, float("nan"))


@pytest.mark.parametrize("sampler", list(SAMPLERS))
@pytest.mark.parametrize("shift", [1.0, 3.0, 5.0])
def test_scheduler_sigmas_follow_our_shift(sampler, shift):
    scheduler = make_scheduler(WAN_SCHEDULER, sampler=sampler, shift=shift)
    scheduler.set_timesteps(10)
    sigmas = scheduler.sigmas[:-1].double()
    # undo the shift with its inverse s = s' / (shift - (shift - 1) s'): the schedule before shifting is uniform
    base = sigmas / (shift - (shift - 1) * sigmas)
    steps = base[:-1] - base[1:]
    torch.testing.assert_close(steps, torch.full_like(steps, steps.mean().item()), atol=2e-3, rtol=0)
    torch.testing.assert_close(flow.shift_sigmas(base, shift), sigmas)
    assert sigmas[0] > 0.99


def test_make_scheduler_keeps_the_folder_settings_and_refuses_unknown():
    scheduler = make_scheduler(WAN_SCHEDULER)
    assert type(scheduler).__name__ == "UniPCMultistepScheduler"
    assert scheduler.config.flow_shift == 3.0 and scheduler.config.solver_type == "bh2"
    assert make_scheduler(WAN_SCHEDULER, shift=5.0).config.flow_shift == 5.0
    assert make_scheduler(WAN_SCHEDULER, sampler="euler").config.shift == 3.0
    with pytest.raises(InputError, match="unknown sampler 'ddim'"):
        make_scheduler(WAN_SCHEDULER, sampler="ddim")


# ------------------------------------------------------------------------------------ training levels


def test_sample_sigmas_seeded_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a = flow.sample_sigmas(4096, generator=torch.Generator().manual_seed(3))
    b = flow.sample_sigmas(4096, generator=torch.Generator().manual_seed(3))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a, b)
    assert 0 < a.min() and a.max() < 1
    assert a.median().item() == pytest.approx(0.5, abs=0.03)  # logit-normal(0, 1) is symmetric about 1/2
    u = flow.sample_sigmas(4096, distribution="uniform", generator=torch.Generator().manual_seed(3))
    assert u.mean().item() == pytest.approx(0.5, abs=0.03)
    shifted = flow.sample_sigmas(4096, shift=3.0, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(shifted, flow.shift_sigmas(a, 3.0))
    with pytest.raises(ValueError, match="unknown timestep distribution"):
        flow.sample_sigmas(2, distribution="beta")


# ------------------------------------------------------------------------------------- known frames


def test_frame_and_token_timesteps():
    known = torch.tensor([True, False, False, True])
    t = flow.frame_timesteps(torch.tensor([500.0, 250.0]), known, 2)
    assert t.tolist() == [[0, 500, 500, 0], [0, 250, 250, 0]]
    tokens = flow.token_timesteps(t, 3)
    assert tokens.shape == (2, 12)
    assert tokens[0].tolist() == [0, 0, 0, 500, 500, 500, 500, 500, 500, 0, 0, 0]
    per_sample = flow.frame_mask(torch.tensor([[True, False], [False, False]]), 2, "cpu")
    assert per_sample.tolist() == [[True, False], [False, False]]
    with pytest.raises(ValueError, match="known-frame mask"):
        flow.frame_mask(torch.ones(3, 2, dtype=torch.bool), 2, "cpu")


# ------------------------------------------------------------------------------------------ sampler


def _exact_velocity(target):
    """The true velocity field when all data is one point: v(x_s) = (x_s - x0) / s."""

    def velocity(x, t):
        s = flow._per_sample(t.float() / flow.NUM_TRAIN_TIMESTEPS, x).clamp_min(1e-6)
        return (x - target) / s

    return velocity


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_samplers_reach_the_data_point(sampler):
    target, noise = _randn(1, 4, 3, 4, 4, seed=5), _randn(1, 4, 3, 4, 4, seed=6)
    out = sample(_exact_velocity(target), noise, make_scheduler(WAN_SCHEDULER, sampler=sampler), 8)
    # UniPC and DPM++ round timesteps to integers (as Wan feeds them), so s = t / 1000 is off by < 1e-3
    torch.testing.assert_close(out, target, atol=1e-2, rtol=0)
    assert not torch.allclose(noise, target, atol=0.1)


def test_known_frames_are_held_and_fed_at_timestep_zero():
    target, noise = _randn(1, 4, 3, 4, 4, seed=5), _randn(1, 4, 3, 4, 4, seed=6)
    clean = _randn(1, 4, 3, 4, 4, seed=7)
    known = torch.tensor([True, False, False])
    seen, after = [], []

    def velocity(x, t):
        seen.append(t.clone())
        assert torch.equal(x[:, :, 0], clean[:, :, 0])
        return torch.zeros_like(x)

    scheduler = make_scheduler(WAN_SCHEDULER, sampler="euler")
    out = sample(velocity, noise, scheduler, 4, known=known, clean=clean, callback=lambda i, t, x: after.append(x))
    assert len(seen) == 4 and all(t.shape == (1, 3) for t in seen)
    assert all(t[0, 0] == 0 and t[0, 1] > 0 for t in seen)
    assert all(torch.equal(x[:, :, 0], clean[:, :, 0]) for x in after)
    assert torch.equal(out[:, :, 0], clean[:, :, 0])
    assert torch.equal(out[:, :, 1:], noise[:, :, 1:])  # zero velocity leaves unknown frames where they were
    with pytest.raises(ValueError, match="need both"):
        sample(velocity, noise, scheduler, 4, known=known)


def test_guidance_runs_one_batch_and_combines():
    calls = []

    def model(x, t, text):
        calls.append(x.shape[0])
        return x * text.mean(dim=(1, 2)).view(-1, 1, 1, 1, 1) + t.view(-1, 1, 1, 1, 1) / 1000

    x, t = _randn(1, 2, 1, 2, 2), torch.tensor([400.0])
    cond, uncond = torch.full((1, 3, 4), 2.0), torch.full((1, 3, 4), -1.0)
    v = guided(model, cond, uncond, 5.0)(x, t)
    assert calls == [2]
    v_c, v_u = model(x, t, cond), model(x, t, uncond)
    torch.testing.assert_close(v, v_u + 5.0 * (v_c - v_u))
    calls.clear()
    torch.testing.assert_close(guided(model, cond, uncond, 1.0)(x, t), v_c)  # scale <= 1: no guidance
    assert calls == [1]
    assert math.isfinite(v.abs().max().item())


def test_guidance_interval_guides_only_at_its_noise_levels():
    calls = []

    def model(x, t, text):
        calls.append(x.shape[0])
        return x * text.mean(dim=(1, 2)).view(-1, 1, 1, 1, 1) + t.amax(dim=-1).view(-1, 1, 1, 1, 1) / 1000

    x = _randn(1, 2, 3, 2, 2)
    cond, uncond = torch.full((1, 3, 4), 2.0), torch.full((1, 3, 4), -1.0)
    velocity = guided(model, cond, uncond, 5.0, (0.5, 0.9))
    for level, inside in ((0.95, False), (0.9, True), (0.7, True), (0.5, True), (0.3, False), (0.0, False)):
        calls.clear()
        t = torch.tensor([[0.0, 1000 * level, 1000 * level]])  # (B, T'): a known frame at 0, the rest sampled
        v_c, v_u = model(x, t, cond), model(x, t, uncond)
        expected = v_u + 5.0 * (v_c - v_u) if inside else v_c
        calls.clear()
        torch.testing.assert_close(velocity(x, t), expected)
        assert calls == ([2] if inside else [1])  # outside the interval the unconditional branch is not run
    from videogen.settings import check_interval

    assert check_interval([0.25, 1]) == (0.25, 1.0)
    for bad in ([0.5], [0.6, 0.4], [-0.1, 1.0], [0.0, 1.5], "ab", None):
        with pytest.raises(InputError, match="guidance interval"):
            check_interval(bad)
