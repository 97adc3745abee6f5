"""Does a frame-conditioned DiT carry the object from a given first latent frame into the others? (issue 7)

A loss probe on rendered shapes clips, no sampling. Each clip's first latent frame is given clean (timestep
0, as `extend` gives it), and the flow loss on the other latent frames is measured at a few noise levels
in three ways:

- **own**: with the clip's own first frame;
- **other**: with the first frame of another clip of the same caption, whose object is elsewhere;
- **swapped**: with its own first frame, but the caption's direction word reversed.

A DiT that moves the object on from where the first frame shows it pays for a wrong first frame, so
``other / own`` is well above 1. One that follows the direction word pays for a reversed one, so
``swapped / own`` is above 1.

Usage (from the repository root)::

    python tools/probe_frames.py assets/demo-model
    python tools/probe_frames.py runs/exp-patch2/model --clips 64 --sigmas 0.95 0.8 0.6
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

def clips(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``n`` clips, ``n`` others with the same captions elsewhere on the canvas, and the captions."""
    from videogen.data.shapes import render, sample_spec, to_tensor

    rng = np.random.default_rng(seed)
    own, other, captions = [], [], []
    for _ in range(n):
        spec = sample_spec(rng)
        twin = sample_spec(rng, color=spec.color, shape=spec.shape, direction=spec.direction,
                           background=spec.background)
        own.append(to_tensor(render(spec)))
        other.append(to_tensor(render(twin)))
        captions.append(spec.caption)
    return torch.stack(own), torch.stack(other), captions  # (N, 3, T, H, W) twice


def reverse_direction(caption: str) -> str:
    from videogen.data.shapes import opposite

    words = caption.split()
    words[4] = opposite(words[4])  # "a {color} {shape} moving {direction} on a ..."
    return " ".join(words)


@torch.no_grad()
def probe(model: Path, n: int, sigmas: list[float], seed: int) -> list[dict]:
    from videogen.diffusion import flow
    from videogen.pipeline import VideoPipeline

    pipe = VideoPipeline.from_pretrained(model, dtype=torch.float32, device="cpu")
    own, other, captions = clips(n, seed)
    own = pipe.vae.normalize(pipe.vae.encode(own).mean)  # (N, C, T', H', W')
    other = pipe.vae.normalize(pipe.vae.encode(other).mean)
    b, _, t, h, w = own.shape
    _, ph, pw = pipe.transformer.config.patch_size
    text = {"right": pipe.text_encoder.encode(captions),
            "reversed": pipe.text_encoder.encode([reverse_direction(c) for c in captions])}
    noise = torch.randn(own.shape, generator=torch.Generator().manual_seed(seed))
    known = torch.zeros(b, t, dtype=torch.bool)
    known[:, 0] = True
    rows = []
    for sigma in sigmas:
        s = torch.full((b,), sigma)
        timesteps = flow.token_timesteps(flow.frame_timesteps(flow.to_timesteps(s), known, b), (h // ph) * (w // pw))
        target = flow.velocity_target(own, noise)[:, :, 1:]  # the unknown frames
        loss = {}
        for name, first, states in (("own", own, text["right"]), ("other", other, text["right"]),
                                    ("swapped", own, text["reversed"])):
            x = flow.interpolate(own, noise, s)
            x[:, :, :1] = first[:, :, :1]  # the given frame, clean
            v = pipe.transformer(x, timesteps, states)
            loss[name] = (v[:, :, 1:] - target).pow(2).mean().item()
        rows.append({"sigma": sigma, **loss})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path, help="a model folder (frame-conditioned DiT)")
    p.add_argument("--clips", type=int, default=32)
    p.add_argument("--sigmas", type=float, nargs="+", default=[0.95, 0.8, 0.6])
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)
    print(f"{args.model}, {args.clips} clips\n\n| sigma | loss, own first frame | other / own | swapped / own |\n"
          "|---:|---:|---:|---:|")
    for row in probe(args.model, args.clips, args.sigmas, args.seed):
        print(f"| {row['sigma']} | {row['own']:.4f} | {row['other'] / row['own']:.3f} | "
              f"{row['swapped'] / row['own']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
