"""Training throughput on a random Wan2.1-layout model and 64x64x17 clips: a plain diffusers loop (VAE and T5 every
step) beside `videogen.train.trainer.train` runs (full, LoRA, the VAE), as the trainer's own samples/s.

    python tools/bench_train.py                      # demo sizes, batch 4, ~10 min on a shared 2-core CPU
    python tools/bench_train.py --repeats 1 --steps 2  # quicker, noisier
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's videogen

from videogen.eval.measure import timed  # noqa: E402

SIZES = {  # proposed demo-model sizes (configs/demo-*.yaml), and a tiny smoke-test size
    "demo": dict(text_dim=256, text_layers=4, text_heads=4, dit_heads=4, dit_head_dim=64, dit_layers=8,
                 dit_ffn_dim=1024, vae_base_dim=16, vae_dim_mult=[1, 2, 2, 2]),
    "tiny": dict(),
}


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


def videogen_rate(clips: Path, run: Path, a, *, model: Path | None = None, mode="full", vae_frames=0) -> float:
    """The trainer's samples/s over ``a.steps`` steps: ``model``'s DiT in ``mode``, or a VAE on ``vae_frames``."""
    from videogen.testing import TinyWanConfig
    from videogen.train.config import TrainConfig
    from videogen.train.trainer import train

    cfg = TrainConfig(task="vae") if vae_frames else TrainConfig(mode=mode)
    cfg.data.path, cfg.data.resolutions, cfg.data.frames = str(clips), ["64x64"], [vae_frames or 17]
    if vae_frames:
        arch = TinyWanConfig(**SIZES[a.size])
        cfg.model.vae_arch.base_dim, cfg.model.vae_arch.dim_mult = arch.vae_base_dim, list(arch.vae_dim_mult)
    else:
        cfg.model.pretrained, cfg.optim.lr = str(model), 1e-4
    cfg.train.batch_size, cfg.train.max_steps, cfg.train.log_every, cfg.train.validate_every = a.batch, a.steps, 1, 0
    return train(cfg, run).samples_per_second


def diffusers_rate(step, batch: int, repeats: int, steps: int) -> float:
    """samples/s of the diffusers loop: the best of ``repeats`` rounds of ``steps`` steps, after a warm-up."""
    step()
    best = min(timed(lambda: [step() for _ in range(steps)])[0] for _ in range(repeats))
    return batch * steps / best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="demo")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3, help="rounds of the diffusers loop; the best counts")
    parser.add_argument("--steps", type=int, default=6, help="steps per round, and of each videogen run")
    args = parser.parse_args(argv)
    s = SIZES[args.size]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        from videogen.testing import TinyWanConfig, build_tiny_wan_folder

        model, clips = build_tiny_wan_folder(tmp / "model", TinyWanConfig(**s)), make_clips(tmp / "clips", args.batch)
        reference = diffusers_rate(diffusers_loop(model, clips, args.batch), args.batch, args.repeats, args.steps)
        rates = {"diffusers loop: DiT full (VAE + T5 every step)": reference}
        for mode in ("full", "lora"):
            rates[f"videogen: DiT {mode} (cached latents + text)"] = videogen_rate(clips, tmp / mode, args,
                                                                                   model=model, mode=mode)
        for n in (9, 17):
            rates[f"videogen: VAE, {n} frames"] = videogen_rate(clips, tmp / f"vae{n}", args, vae_frames=n)
    print(f"\nsizes: {args.size} {s}; batch {args.batch} clips of 64x64 (17 frames for the DiT); {args.steps} steps; "
          f"{torch.get_num_threads()} threads; load average {os.getloadavg()[0]:.1f}\n")
    print("| run | samples/s | ratio vs diffusers loop |\n|---|---|---|")
    for name, rate in rates.items():
        print(f"| {name} | {rate:.2f} | {'-' if name.startswith('videogen: VAE') else f'{rate / reference:.2f}'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
