"""Training throughput: videogen's trainer beside a plain diffusers training loop, in one run.

Both train the same random Wan2.1-layout model (the proposed demo-model sizes unless --size says
otherwise) on the same 64x64x17 clips, batch for batch:

- **diffusers loop**: what a script built on diffusers' classes does each step -- AutoencoderKLWan encode,
  UMT5 encode, WanTransformer3DModel forward + backward, AdamW;
- **videogen**: `videogen.train.Trainer` (latents and text states cached once, sampled per step), full and
  LoRA (rank 16).

It also times VAE training steps (parallel path, L1 + SSIM + KL) at the demo VAE's size, on 9- and
17-frame clips. Prints a markdown table of samples/s (higher is better) and ratios videogen / diffusers
(above 1: videogen trains faster) for docs/benchmarks.md.

    python tools/bench_train.py                      # demo sizes, batch 4, ~10 min on a shared 2-core CPU
    python tools/bench_train.py --repeats 1 --steps 1  # quicker, noisier
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # measure this checkout, not an installed copy

SIZES = {  # proposed demo-model sizes (configs/demo-*.yaml), and a tiny smoke-test size
    "demo": dict(text_dim=256, text_layers=4, text_heads=4, dit_heads=4, dit_head_dim=64, dit_layers=8,
                 dit_ffn_dim=1024, vae_base_dim=16, vae_dim_mult=[1, 2, 2, 2]),
    "tiny": dict(),
}


def build_folder(folder: Path, sizes: dict) -> Path:
    """A random Wan2.1-T2V folder of the given sizes (videogen.testing's builder, via diffusers' WanPipeline)."""
    from videogen.testing import TinyWanConfig, build_tiny_wan_folder

    return build_tiny_wan_folder(folder, TinyWanConfig(**sizes))


def make_clips(folder: Path, count: int) -> Path:
    from videogen.io import write_video

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        frames = np.repeat(rng.integers(0, 255, (1, 64, 64, 3), dtype=np.uint8), 17, axis=0)
        write_video(folder / f"c{i}.mp4", frames, 8)
        (folder / f"c{i}.txt").write_text(f"a clip number {i} of random colours")
    return folder


def diffusers_loop(model: Path, clips: Path, batch: int):
    """A plain diffusers training step (everything recomputed every step), as a closure."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import AutoTokenizer, UMT5EncoderModel

    from videogen.io import read_video

    vae = AutoencoderKLWan.from_pretrained(model / "vae").requires_grad_(False)
    text = UMT5EncoderModel.from_pretrained(model / "text_encoder").requires_grad_(False)
    tok = AutoTokenizer.from_pretrained(model / "tokenizer")
    dit = WanTransformer3DModel.from_pretrained(model / "transformer")
    opt = torch.optim.AdamW(dit.parameters(), lr=1e-4)
    files = sorted(clips.glob("*.mp4"))[:batch]
    captions = [f.with_suffix(".txt").read_text() for f in files]
    g = torch.Generator().manual_seed(0)

    def step():
        video = torch.stack([torch.from_numpy(read_video(f).frames).permute(3, 0, 1, 2) for f in files]) / 127.5 - 1
        with torch.no_grad():
            z = vae.encode(video).latent_dist.sample(generator=g)
            ids = tok(captions, padding="max_length", max_length=64, truncation=True, return_tensors="pt")
            states = text(ids.input_ids, ids.attention_mask).last_hidden_state
        sigma = torch.rand(batch, generator=g).view(-1, 1, 1, 1, 1)
        noise = torch.randn(z.shape, generator=g)
        pred = dit(((1 - sigma) * z + sigma * noise), sigma.flatten() * 1000, states, return_dict=False)[0]
        loss = (pred - (noise - z)).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()

    return step


def trainer_step(cfg, run: Path):
    """One of videogen's trainer steps, as a closure (the cache is filled here, before any clock starts)."""
    from videogen.train.trainer import Trainer

    trainer = Trainer(cfg, run, show_progress=False)
    batches = iter(trainer.stream)
    trainer.model.train()
    return lambda: trainer._step(batches)


def dit_config(model: Path, clips: Path, mode: str, batch: int):
    from videogen.train.config import TrainConfig

    cfg = TrainConfig(mode=mode)
    cfg.model.pretrained, cfg.data.path = str(model), str(clips)
    cfg.data.resolutions, cfg.data.frames = ["64x64"], [17]
    cfg.train.batch_size, cfg.optim.lr = batch, 1e-4
    return cfg


def vae_config(s: dict, clips: Path, batch: int, frames: int):
    from videogen.testing import TinyWanConfig
    from videogen.train.config import TrainConfig

    cfg = TrainConfig(task="vae")
    cfg.data.path, cfg.data.resolutions, cfg.data.frames = str(clips), ["64x64"], [frames]
    arch = TinyWanConfig(**s)
    cfg.model.vae_arch.base_dim, cfg.model.vae_arch.dim_mult = arch.vae_base_dim, list(arch.vae_dim_mult)
    cfg.train.batch_size = batch
    return cfg


def measure(steps: dict, batch: int, repeats: int, per_round: int) -> dict:
    """Best-of-``repeats`` wall and CPU seconds per step of each closure, the closures taking turns.

    Taking turns spreads the other jobs on this shared machine over all of them; best-of keeps the least
    disturbed round; CPU time (this process's, all threads) is less sensitive to the contention still.
    """
    for step in steps.values():
        step()  # warm-up
    best = {name: (float("inf"), float("inf")) for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(per_round):
                step()
            wall, cpu = (time.perf_counter() - wall) / per_round, (time.process_time() - cpu) / per_round
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="demo")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3, help="rounds; the best round counts")
    parser.add_argument("--steps", type=int, default=2, help="steps per round")
    args = parser.parse_args(argv)
    s = SIZES[args.size]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = build_folder(tmp / "model", s)
        clips = make_clips(tmp / "clips", args.batch)
        dit = {
            "diffusers loop: DiT full (VAE + T5 every step)": diffusers_loop(model, clips, args.batch),
            "videogen: DiT full (cached latents + text)": trainer_step(dit_config(model, clips, "full", args.batch),
                                                                        tmp / "full"),
            "videogen: DiT LoRA r16 (cached)": trainer_step(dit_config(model, clips, "lora", args.batch), tmp / "lora"),
        }
        vae = {f"videogen: VAE, {n} frames": trainer_step(vae_config(s, clips, args.batch, n), tmp / f"vae{n}")
               for n in (9, 17)}
        results = measure({**dit, **vae}, args.batch, args.repeats, args.steps)
    base_wall, base_cpu = results[next(iter(dit))]
    print(f"\nsizes: {args.size} {s}; batch {args.batch} clips of 64x64 (17 frames for the DiT); best of "
          f"{args.repeats} rounds of {args.steps} steps; {torch.get_num_threads()} threads; load average "
          f"{os.getloadavg()[0]:.1f}\n")
    print("| run | samples/s (wall) | samples/s (CPU time) | ratio vs diffusers loop (wall / CPU) |")
    print("|---|---|---|---|")
    for name, (wall, cpu) in results.items():
        ratio = f"{base_wall / wall:.2f} / {base_cpu / cpu:.2f}" if name in dit else "-"
        print(f"| {name} | {args.batch / wall:.2f} | {args.batch / cpu:.2f} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
