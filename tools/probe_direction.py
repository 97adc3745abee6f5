"""When does a DiT learn the direction word? A from-scratch probe on direction-only clips (issue 7).

Figures: docs/benchmarks.md, "when does a DiT start to use the direction word?" (session 11).

The demo model learns colour and background but not direction. This tool isolates direction: every clip
shows the same object on the same background (by default a red circle on black), so the caption's direction
word is the only thing the text says. It then trains a new DiT of the model folder's architecture (fewer
layers or another patch size if asked) from scratch on those clips, on the folder's VAE latents and frozen
T5 states, with the demo's objective (rectified flow, logit-normal noise levels, some first-frame
conditioning, caption dropout), and measures as it goes how much the DiT uses the direction word:

- **reversed / right**: the flow loss on held-out clips with the caption's direction word reversed, over
  the loss with the right caption, at the same noise. 1.0 means the word is ignored; a DiT that follows it
  pays for a reversed one. Measured at two noise levels, for text-to-video (no frame given) and for
  image-to-video (the first latent frame given clean).

At the end it writes a model folder (the source folder with the new transformer) that
`tools/eval_shapes.py --model OUT/model --caption ... --repeat N` can sample and judge, and `probe.jsonl`
with one line per measurement.

Usage (from the repository root)::

    python tools/probe_direction.py --out runs/probe-direction                  # 4 layers, 24 min
    python tools/probe_direction.py --out runs/probe-direction-p1 --p-first 1 --minutes 10
    python tools/probe_direction.py --out runs/probe-direction-gpu --device cuda --layers 8 --batch 64   # not yet run on a GPU
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from videogen.data.shapes import CAPTION_TEMPLATE, DIRECTIONS, opposite  # noqa: E402

DIRECTION_NAMES = tuple(DIRECTIONS)  # a clip's direction is stored as its index here
SIGMAS = (0.95, 0.7)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="folder for the latent cache, probe.jsonl and model/")
    p.add_argument("--model", type=Path, default=None, help="model folder whose VAE, T5 and DiT config are used "
                                                              "(default: the bundled demo model)")
    p.add_argument("--object", default="red circle black",
                   help="colour, shape and background of every clip (default: 'red circle black')")
    p.add_argument("--clips", type=int, default=2304, help="rendered clips; the last eighth are held out")
    p.add_argument("--frames", type=int, default=17)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--layers", type=int, default=4, help="DiT blocks (the folder's width and heads are kept)")
    p.add_argument("--patch", type=int, default=None, help="spatial patch (default: the folder's)")
    p.add_argument("--p-first", type=float, default=0.2, help="share of samples given their first latent frame")
    p.add_argument("--shift", type=float, default=2.0, help="noise-level shift of the training distribution")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--minutes", type=float, default=24.0, help="training wall-time budget")
    p.add_argument("--steps", type=int, default=None, help="stop after this many steps (whichever comes first)")
    p.add_argument("--every", type=int, default=150, help="steps between measurements")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    return p.parse_args(argv)


def render_latents(pipe, specs, frames: int, size: int, device):
    """Normalised VAE latents (posterior means) of the rendered clips: (N, C, T', H', W') on the CPU."""
    import torch
    from tqdm import tqdm

    from videogen.data.shapes import render, to_tensor

    out = []
    with torch.no_grad():
        for i in tqdm(range(0, len(specs), 32), desc="encoding clips", unit="batch"):
            video = torch.stack([to_tensor(render(s, size=size, num_frames=frames)) for s in specs[i:i + 32]])
            out.append(pipe.vae.normalize(pipe.vae.encode(video.to(device)).mean).cpu())
    return torch.cat(out)


class Probe:
    """The reversed/right loss ratios of a DiT on fixed held-out latents and noise."""

    def __init__(self, latents, directions, states, patch, device, seed: int):
        import torch

        self.latents, self.device = latents.to(device), device
        self.right = states[directions].to(device)
        reverse = torch.tensor([DIRECTION_NAMES.index(opposite(DIRECTION_NAMES[int(d)])) for d in directions])
        self.reversed = states[reverse].to(device)
        self.noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(seed)).to(device)
        self.tokens_per_frame = (latents.shape[3] // patch[1]) * (latents.shape[4] // patch[2])

    def __call__(self, dit) -> dict:
        import torch

        from videogen.diffusion import flow

        z, (b, t) = self.latents, self.latents.shape[:3:2]
        result = {}
        was_training = dit.training
        dit.eval()
        with torch.no_grad():
            for mode in ("t2v", "i2v"):
                known = torch.zeros(b, t, dtype=torch.bool, device=self.device)
                known[:, 0] = mode == "i2v"
                for sigma in SIGMAS:
                    s = torch.full((b,), sigma, device=self.device)
                    x_t = flow.hold_known(flow.interpolate(z, self.noise, s), z, known)
                    timesteps = flow.to_timesteps(s)
                    if mode == "i2v":
                        timesteps = flow.token_timesteps(flow.frame_timesteps(timesteps, known, b),
                                                         self.tokens_per_frame)
                    right, rev = (flow.flow_loss(dit(x_t, timesteps, text), z, self.noise, known=known).item()
                                  for text in (self.right, self.reversed))
                    result[f"{mode}@{sigma}"] = {"loss": round(right, 4), "reversed/right": round(rev / right, 4)}
        dit.train(was_training)
        return result


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from videogen.bundled import default_model_path
    from videogen.data.shapes import sample_spec
    from videogen.errors import VideogenError
    from videogen.models.dit import VideoDiT
    from videogen.pipeline import VideoPipeline
    from videogen.train.config import ObjectiveConfig
    from videogen.train.objectives import dit_loss

    try:
        color, shape, background = args.object.split()
        folder = args.model or default_model_path()
        device = torch.device(args.device)
        pipe = VideoPipeline.from_pretrained(folder, dtype=torch.float32, device=device)
        args.out.mkdir(parents=True, exist_ok=True)

        cache = args.out / "latents.pt"
        key = [str(folder), args.object, args.clips, args.frames, args.size]
        stored = torch.load(cache) if cache.is_file() else None
        if stored is None or stored["key"] != key:
            rng = np.random.default_rng(args.seed)
            specs = [sample_spec(rng, color=color, shape=shape, background=background,
                                 direction=DIRECTION_NAMES[i % 4]) for i in range(args.clips)]
            stored = {"key": key, "latents": render_latents(pipe, specs, args.frames, args.size, device),
                      "directions": torch.tensor([i % 4 for i in range(args.clips)])}
            torch.save(stored, cache)
        latents, directions = stored["latents"], stored["directions"]
        n_train = args.clips - args.clips // 8
        # the four captions, then the empty one that caption dropout trains (classifier-free guidance)
        captions = [CAPTION_TEMPLATE.format(color=color, shape=shape, direction=d, background=background)
                    for d in DIRECTION_NAMES]
        states = pipe.text_encoder.encode(captions + [""])
        states = states.float()

        config = {k: v for k, v in pipe.transformer.config.items() if not k.startswith("_")}
        patch = [1, args.patch, args.patch] if args.patch else list(config["patch_size"])
        config.update(num_layers=args.layers, patch_size=patch)
        torch.manual_seed(args.seed)
        dit = VideoDiT(**config)
        dit.initialize_weights()
        dit.to(device).train()
        del pipe.transformer
    except (VideogenError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    probe = Probe(latents[n_train:][:64], directions[n_train:][:64], states, patch, device, args.seed + 1)
    optimizer = torch.optim.AdamW(dit.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.01)
    objective = ObjectiveConfig(timestep_sampling="logit_normal", shift=args.shift, p_first=args.p_first,
                                caption_dropout=0.1)
    generator = torch.Generator().manual_seed(args.seed)
    log = (args.out / "probe.jsonl").open("w")
    start, step, losses = time.monotonic(), 0, []

    def done() -> bool:
        return time.monotonic() - start >= args.minutes * 60 or (args.steps is not None and step >= args.steps)

    while not done():
        batch = torch.randint(0, n_train, (args.batch,), generator=generator)
        text = directions[batch].clone()
        text[torch.rand(args.batch, generator=generator) < objective.caption_dropout] = len(DIRECTION_NAMES)
        for group in optimizer.param_groups:
            group["lr"] = args.lr * min(1.0, (step + 1) / 100)  # linear warm-up over 100 steps
        loss, _ = dit_loss(dit, latents[batch].to(device), {"text_states": states[text].to(device)}, objective,
                           generator, patch_size=tuple(patch))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(dit.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        step += 1
        if step % args.every == 0 or done():
            row = {"step": step, "samples": step * args.batch, "minutes": round((time.monotonic() - start) / 60, 2),
                   "train_loss": round(float(np.mean(losses[-args.every:])), 4), **probe(dit)}
            log.write(json.dumps(row) + "\n")
            log.flush()
            ratios = "  ".join(f"{k} {v['reversed/right']:.3f}" for k, v in row.items() if isinstance(v, dict))
            print(f"step {step} ({row['minutes']} min) loss {row['train_loss']:.4f}  reversed/right: {ratios}",
                  flush=True)
    log.close()

    model = args.out / "model"
    if model.exists():
        shutil.rmtree(model)
    shutil.copytree(folder, model, ignore=shutil.ignore_patterns("transformer", "TRAINING.md", "training.json"))
    dit.to("cpu").save_pretrained(model / "transformer")
    print(f"wrote {args.out / 'probe.jsonl'} and {model} ({step} steps)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
