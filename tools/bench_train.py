"""Training throughput: videogen's trainer beside a plain diffusers training loop, in one run.

Both train the same random Wan2.1-layout model (the proposed demo-model sizes unless --size says
otherwise) on the same 64x64x17 clips, batch for batch:

- **diffusers loop**: what a script built on diffusers' classes does each step -- AutoencoderKLWan encode,
  UMT5 encode, WanTransformer3DModel forward + backward, AdamW;
- **videogen**: `videogen.train.Trainer` (latents and text states cached once, sampled per step), full and
  LoRA (rank 16).

It also times a VAE training step (parallel path, L1 + SSIM + KL) at the demo VAE's size. Prints a
markdown table of samples/s and ratios (videogen / diffusers) for docs/benchmarks.md.

    python tools/bench_train.py               # demo sizes, batch 4, ~5 min on a 2-core CPU
    python tools/bench_train.py --steps 3     # quicker, noisier
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # measure this checkout, not an installed copy

SIZES = {  # proposed demo-model sizes (configs/demo-*.yaml)
    "demo": dict(text_dim=256, text_layers=4, text_heads=4, dit_heads=4, dit_head_dim=64, dit_layers=8,
                 dit_ffn=1024, vae_base=32, vae_mult=[1, 2, 2, 2]),
    "tiny": dict(text_dim=32, text_layers=2, text_heads=2, dit_heads=2, dit_head_dim=16, dit_layers=2,
                 dit_ffn=64, vae_base=8, vae_mult=[1, 1, 1, 1]),
}


def build_folder(folder: Path, s: dict) -> Path:
    """A random Wan2.1-T2V folder of the given sizes, written by diffusers' WanPipeline."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import ByT5Tokenizer, UMT5Config, UMT5EncoderModel

    torch.manual_seed(0)
    tok = ByT5Tokenizer()
    text = UMT5EncoderModel(UMT5Config(vocab_size=len(tok), d_model=s["text_dim"], d_kv=s["text_dim"] // s["text_heads"],
                                       d_ff=4 * s["text_dim"], num_layers=s["text_layers"], num_heads=s["text_heads"],
                                       feed_forward_proj="gated-gelu", dropout_rate=0.0))
    vae = AutoencoderKLWan(base_dim=s["vae_base"], z_dim=16, dim_mult=s["vae_mult"], num_res_blocks=1, attn_scales=[],
                           temperal_downsample=[False, True, True])
    dit = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=s["dit_heads"],
                                attention_head_dim=s["dit_head_dim"], in_channels=16, out_channels=16,
                                text_dim=s["text_dim"], freq_dim=256, ffn_dim=s["dit_ffn"], num_layers=s["dit_layers"])
    sched = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    WanPipeline(tokenizer=tok, text_encoder=text, vae=vae, transformer=dit, scheduler=sched).save_pretrained(folder)
    return folder


def make_clips(folder: Path, count: int) -> Path:
    from videogen.io import write_video

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        frames = np.repeat(rng.integers(0, 255, (1, 64, 64, 3), dtype=np.uint8), 17, axis=0)
        write_video(folder / f"c{i}.mp4", frames, 8)
        (folder / f"c{i}.txt").write_text(f"a clip number {i} of random colours")
    return folder


def diffusers_loop(model: Path, clips: Path, batch: int, steps: int) -> float:
    """Samples/s of a plain diffusers training step (everything recomputed every step)."""
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

    return _rate(step, steps, batch)


def _rate(step, steps: int, batch: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - start)


def videogen_rate(cfg, run: Path, steps: int) -> float:
    """Samples/s of videogen's trainer steps (cache filled before the clock starts)."""
    from videogen.train.trainer import Trainer

    trainer = Trainer(cfg, run, show_progress=False)
    batches = iter(trainer.stream)
    trainer.model.train()
    return _rate(lambda: trainer._step(batches), steps, cfg.train.batch_size)


def vae_rate(s: dict, clips: Path, run: Path, batch: int, steps: int) -> float:
    from videogen.train.config import TrainConfig
    from videogen.train.trainer import Trainer

    cfg = TrainConfig(task="vae")
    cfg.data.path, cfg.data.resolutions, cfg.data.frames = str(clips), ["64x64"], [17]
    cfg.model.vae_arch.base_dim, cfg.model.vae_arch.dim_mult = s["vae_base"], list(s["vae_mult"])
    cfg.train.batch_size = batch
    trainer = Trainer(cfg, run, show_progress=False)
    batches = iter(trainer.stream)
    return _rate(lambda: trainer._step(batches), steps, batch)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="demo")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    from videogen.train.config import TrainConfig

    s = SIZES[args.size]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = build_folder(tmp / "model", s)
        clips = make_clips(tmp / "clips", args.batch)
        rows = {"diffusers loop (DiT full)": diffusers_loop(model, clips, args.batch, args.steps)}
        for mode in ("full", "lora"):
            cfg = TrainConfig(mode=mode)
            cfg.model.pretrained, cfg.data.path = str(model), str(clips)
            cfg.data.resolutions, cfg.data.frames = ["64x64"], [17]
            cfg.train.batch_size, cfg.optim.lr = args.batch, 1e-4
            rows[f"videogen DiT {mode}"] = videogen_rate(cfg, tmp / f"run-{mode}", args.steps)
        vae = vae_rate(s, clips, tmp / "run-vae", args.batch, max(2, args.steps // 2))
    base = rows["diffusers loop (DiT full)"]
    print(f"\nsizes: {args.size} {s}; batch {args.batch} x 64x64x17; {args.steps} timed steps; "
          f"{torch.get_num_threads()} threads\n")
    print("| run | samples/s | ratio vs diffusers loop |\n|---|---|---|")
    for name, rate in rows.items():
        print(f"| {name} | {rate:.2f} | {rate / base:.2f} |")
    print(f"| videogen VAE (L1+SSIM+KL) | {vae:.2f} | - |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
