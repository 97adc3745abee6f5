"""Sampling: a plain loop over a velocity function, with the step rule taken from a diffusers scheduler.

The sampler knows nothing of networks or prompts (as k-diffusion's samplers): it is
given ``velocity_fn(x, t) -> v`` and initial noise, and integrates the flow from noise level 1 to 0 with a
diffusers scheduler's ``step``. The pipeline builds ``velocity_fn`` from the DiT and the text states, with
classifier-free guidance as a small closure (`guided`) that runs the conditional and unconditional
branches as one batch.

Schedulers come from the model folder's ``scheduler/`` config: Wan2.1 ships ``UniPCMultistepScheduler``
with ``use_flow_sigmas`` and ``prediction_type="flow_prediction"``; ``euler`` (FlowMatchEulerDiscrete) and
``dpm++`` (DPMSolverMultistep in flow mode) can be chosen instead. The timestep shift is set on the
scheduler (``flow_shift`` / ``shift``), exactly as diffusers' Wan pipeline does it, so that our sigmas
and timesteps are theirs.

Frame conditioning: ``known`` (bool over latent frames) and ``clean`` latents hold some latent frames
clean, in one of two ways (``hold``). ``"timestep"``, for models trained with frame conditioning: the velocity
function gets per-frame timesteps ``(B, T')`` with 0 at known frames, and the known frames are reset to their
clean values after every step (`videogen.diffusion.flow.hold_known`). ``"replace"``, training-free, for models
that never saw a timestep-0 frame (Wan2.1-T2V as published): every frame is fed at the current level, the
known frames replaced by their clean latents noised to that level with the run's own initial noise
(`videogen.diffusion.flow.interpolate`; the "replacement" method of Ho et al. 2022, "Video Diffusion
Models", section 3.1).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from videogen.diffusion.flow import NUM_TRAIN_TIMESTEPS, frame_timesteps, hold_known, interpolate
from videogen.errors import InputError

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``(x (B, C, T', H', W'), t (B,) or (B, T') on the 0..1000 scale) -> velocity (B, C, T', H', W')``."""

StepCallback = Callable[[int, torch.Tensor, torch.Tensor], None]
"""``(step index, timestep, latents after the step)``."""

HOLD_METHODS = ("timestep", "replace")  # how known latent frames are held clean (module docstring)

# sampler name -> (diffusers scheduler class name, the config key that holds its timestep shift)
SAMPLERS: dict[str, tuple[str, str]] = {
    "unipc": ("UniPCMultistepScheduler", "flow_shift"),
    "euler": ("FlowMatchEulerDiscreteScheduler", "shift"),
    "dpm++": ("DPMSolverMultistepScheduler", "flow_shift"),
}

# What each sampler needs on top of a folder's config so that it integrates a flow (the velocity
# "flow_prediction" of x_s = (1 - s) x0 + s noise) rather than a DDPM noise prediction.
_FLOW_SETTINGS: dict[str, dict[str, Any]] = {
    "unipc": {"prediction_type": "flow_prediction", "use_flow_sigmas": True},
    "euler": {},
    "dpm++": {
        "prediction_type": "flow_prediction",
        "use_flow_sigmas": True,
        "algorithm_type": "dpmsolver++",
        "solver_order": 2,
    },
}


# --------------------------------------------------------------------------------------- schedulers


def sampler_of(config: dict) -> str:
    """The sampler name of a folder's scheduler config (``unipc`` where it is not one we know)."""
    for name, (class_name, _) in SAMPLERS.items():
        if config.get("_class_name") == class_name:
            return name
    return "unipc"


def config_shift(config: dict) -> float:
    """The timestep shift a scheduler config carries (Wan2.1-T2V ships ``flow_shift`` 3.0)."""
    for key in ("flow_shift", "shift"):
        if config.get(key) is not None:
            return float(config[key])
    return 1.0


def make_scheduler(config: dict, *, sampler: str | None = None, shift: float | None = None):
    """A fresh diffusers scheduler for one sampling run.

    config: the model folder's ``scheduler_config.json``; its settings are kept when ``sampler`` names
    the same scheduler class, and the flow-mode defaults are used otherwise. shift: overrides the
    config's timestep shift.
    """
    import diffusers

    sampler = sampler or sampler_of(config)
    if sampler not in SAMPLERS:
        raise InputError(f"unknown sampler {sampler!r}: choose one of {', '.join(SAMPLERS)}")
    class_name, shift_key = SAMPLERS[sampler]
    base = {k: v for k, v in config.items() if not k.startswith("_")} if sampler_of(config) == sampler else {}
    shift = config_shift(config) if shift is None else shift
    overrides = {**_FLOW_SETTINGS[sampler], shift_key: float(shift)}
    if "num_train_timesteps" in config:
        overrides["num_train_timesteps"] = config["num_train_timesteps"]
    return getattr(diffusers, class_name).from_config({**base, **overrides})


# --------------------------------------------------------------------------------------- guidance


def guided(
    model_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    cond: torch.Tensor,
    uncond: torch.Tensor | None,
    scale: float,
    interval: tuple[float, float] = (0.0, 1.0),
) -> VelocityFn:
    """Classifier-free guidance as a velocity function (Ho & Salimans 2022, eq. 6, in velocity form).

    ``v = v_uncond + scale * (v_cond - v_uncond)``, with both branches in ONE batch of 2B so the network
    runs once per step. model_fn(x, t, text_states) -> velocity; cond, uncond: text states (B, N, D).
    As in diffusers' pipelines, guidance is off (conditional branch only) when ``scale <= 1``.

    interval: the noise levels ``(low, high)`` in [0, 1] at which guidance applies; at the others the
    conditional branch runs alone, at half the cost (Kynkaanniemi et al. 2024, "Applying guidance in a
    limited interval"). A step's level is its highest timestep / 1000 -- the sampled frames', where
    known frames sit at 0 -- which for flow schedulers is the step's (shifted) sigma.
    """
    if uncond is None or scale <= 1.0:
        return lambda x, t: model_fn(x, t, cond)
    low, high = interval
    text = torch.cat([cond, uncond])  # (2B, N, D)

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if not low <= float(t.max()) / NUM_TRAIN_TIMESTEPS <= high:
            return model_fn(x, t, cond)
        v_cond, v_uncond = model_fn(torch.cat([x, x]), torch.cat([t, t]), text).chunk(2)
        return v_uncond + scale * (v_cond - v_uncond)

    return velocity


# ----------------------------------------------------------------------------------------- sampler


def _step_kwargs(scheduler, generator: torch.Generator | None) -> dict:
    """Pass the caller's generator to schedulers whose step draws noise (never the global RNG)."""
    accepts = inspect.signature(scheduler.step).parameters
    return {"generator": generator} if "generator" in accepts else {}


def _noise_level(scheduler, step: int, t: torch.Tensor) -> torch.Tensor:
    """The noise level ``s`` in [0, 1] of step ``step``: the scheduler's sigma (timesteps may be rounded)."""
    sigmas = getattr(scheduler, "sigmas", None)
    if sigmas is not None and len(sigmas) > step:
        return sigmas[step].float()
    return t.float() / NUM_TRAIN_TIMESTEPS


def _model_input(x, t, scheduler, step, noise, known, clean, hold) -> tuple[torch.Tensor, torch.Tensor]:
    """What the velocity function sees at one step: latents (B, C, T', H', W') and timesteps (B,) or (B, T')."""
    batch = x.shape[0]
    if known is None:
        return x, t.expand(batch)
    if hold == "timestep":
        return x, frame_timesteps(t.expand(batch), known, batch)  # (B, T'), 0 at known frames
    noised = interpolate(clean.float(), noise.float(), _noise_level(scheduler, step, t))  # (B, C, T', H', W')
    return hold_known(x, noised, known), t.expand(batch)


def sample(
    velocity_fn: VelocityFn,
    noise: torch.Tensor,
    scheduler,
    num_steps: int,
    *,
    known: torch.Tensor | None = None,
    clean: torch.Tensor | None = None,
    hold: str = "timestep",
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Integrate the flow from ``noise`` (level 1) to clean latents with ``scheduler``'s step rule.

    noise: (B, C, T', H', W') initial latents. known: None, (T',) or (B, T') bool mask of latent frames held
    at ``clean`` (B, C, T', H', W'); hold: how (``"timestep"``: fed at timestep 0 and reset after every step;
    ``"replace"``: replaced by ``clean`` noised to each step's level; see the module docstring). Either way
    the known frames of the result are exactly ``clean``'s. Returns the final latents (B, C, T', H', W') in fp32.
    """
    if (known is None) != (clean is None):
        raise ValueError("known frames need both `known` and `clean`")
    if hold not in HOLD_METHODS:
        raise InputError(f"unknown frame-conditioning method {hold!r}: choose one of {', '.join(HOLD_METHODS)}")
    scheduler.set_timesteps(num_steps, device=noise.device)
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(0)
    step_kwargs = _step_kwargs(scheduler, generator)
    x = noise.float() if known is None or hold == "replace" else hold_known(noise.float(), clean, known)
    for i, t in enumerate(tqdm(scheduler.timesteps, desc="denoising", unit="step", disable=not progress)):
        x_in, t_in = _model_input(x, t, scheduler, i, noise, known, clean, hold)
        v = velocity_fn(x_in, t_in).float()  # (B, C, T', H', W')
        x = scheduler.step(v, t, x_in, return_dict=False, **step_kwargs)[0]
        if known is not None and hold == "timestep":
            x = hold_known(x, clean, known)
        if callback is not None:
            callback(i, t, x)
    return x if known is None else hold_known(x, clean, known)
