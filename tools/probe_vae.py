"""VAE reconstruction PSNR per frame, of a model folder's VAE and of VAE training checkpoints (issue 7).

The clips are the ones `tools/eval_shapes.py` measures the VAE on: rendered held-out shapes clips (seed
``--seed``, 17 frames, 64x64), coded as whole clips and decoded from the posterior mean, on the CPU. It prints
the mean clip PSNR (as eval_shapes reports it), the lowest clip's, and the PSNR of each frame index over all
clips. That last one shows where a causal VAE loses: the first frame is coded alone, then every latent frame
decodes 4.

A checkpoint (``RUN/checkpoints/step-N``) is measured with its EMA weights put into the model folder's VAE.
A decoder-only run saves only the decoder's, and the encoder stays the folder's.

Usage (from the repository root)::

    python tools/probe_vae.py                                   # the bundled demo model's VAE
    python tools/probe_vae.py runs/demo-vae4-decoder/checkpoints/step-0002250 --clips 8
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def measure(vae, *, clips: int, seed: int, num_frames: int, size: int) -> tuple[float, float, list[float]]:
    """Mean and lowest clip PSNR (dB), and PSNR per frame index over all clips."""
    from videogen.data.shapes import render, sample_spec, to_tensor
    from videogen.pipeline import to_uint8
    from videogen.reconstruct import psnr_from_mse, round_trip

    rng = np.random.default_rng(seed)
    clip_psnr, frame_mse = [], []
    for _ in range(clips):
        frames = render(sample_spec(rng, "heldout"), size=size, num_frames=num_frames)  # (T, H, W, 3)
        decoded = to_uint8(round_trip(vae, to_tensor(frames)))  # (T, H, W, 3)
        error = (frames.astype(np.float64) - decoded) ** 2
        clip_psnr.append(psnr_from_mse(error.mean()))
        frame_mse.append(error.mean(axis=(1, 2, 3)))
    per_frame = [psnr_from_mse(mse) for mse in np.mean(frame_mse, axis=0)]
    return float(np.mean(clip_psnr)), float(np.min(clip_psnr)), per_frame


def load_checkpoint(vae, checkpoint: Path, base: dict) -> None:
    """Put the checkpoint's EMA VAE weights over ``base`` (the folder's) into ``vae``."""
    from safetensors.torch import load_file

    from videogen.errors import InputError

    path = checkpoint / "ema.safetensors"
    if not path.is_file():
        raise InputError(f"{checkpoint}: no ema.safetensors (not a training checkpoint)")
    ema = {k.removeprefix("vae."): v for k, v in load_file(str(path)).items() if k.startswith("vae.")}
    unknown = set(ema) - set(base)
    if not ema or unknown:
        raise InputError(f"{checkpoint}: its EMA weights do not fit this VAE ({len(ema)} VAE tensors, "
                         f"{len(unknown)} unknown)")
    vae.load_state_dict({**base, **ema})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="*", type=Path, help="VAE training checkpoints (RUN/checkpoints/step-N)")
    p.add_argument("--model", type=Path, help="model or VAE folder (default: the bundled demo model)")
    p.add_argument("--clips", type=int, default=8, help="held-out clips (eval_shapes: 8)")
    p.add_argument("--seed", type=int, default=1000, help="seed of the clips (eval_shapes: its --seed, 1000)")
    p.add_argument("--frames", type=int, default=17)
    p.add_argument("--size", type=int, default=64)
    args = p.parse_args(argv)

    from videogen.bundled import default_model_path
    from videogen.errors import VideogenError
    from videogen.models.vae import CausalVideoVAE

    try:
        vae = CausalVideoVAE.from_folder(args.model or default_model_path()).eval()
        base = {k: v.clone() for k, v in vae.state_dict().items()}
        for name in [None, *args.checkpoints]:
            if name is not None:
                load_checkpoint(vae, name, base)
            mean, lowest, per_frame = measure(vae, clips=args.clips, seed=args.seed, num_frames=args.frames,
                                              size=args.size)
            print(f"{name or 'model folder'}: {mean:.2f} dB (lowest clip {lowest:.2f}); per frame "
                  + " ".join(f"{x:.1f}" for x in per_frame), flush=True)
    except VideogenError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
