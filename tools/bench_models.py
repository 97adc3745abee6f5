"""`VideoDiT` and `CausalVideoVAE` against diffusers' on the same random weights and inputs (ratios ours /
diffusers), and each attention backend's memory; measured as `videogen.eval.measure` says.

    python tools/bench_models.py dit --threads 1          # mid-size DiT, ~7 min on 2 shared cores
    python tools/bench_models.py vae attention
    python tools/bench_models.py dit --preset wan2.1-t2v-1.3b --latent 21x60x104 --device cuda --dtype bf16
"""

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's videogen

from videogen.eval.measure import best_of, in_fresh_process, peak_growth  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
MID_DIT = dict(num_attention_heads=8, attention_head_dim=64, ffn_dim=2048, num_layers=4, text_dim=4096, freq_dim=256)
MID_VAE = dict(base_dim=32, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, temperal_downsample=[False, True, True])


def rows(label: str, result: dict, reference: str = "diffusers") -> list[str]:
    ref = result[reference]
    return [f"| {label}, {name} | {w:.3f} | {c:.3f} | {w / ref[0]:.3f} | {c / ref[1]:.3f} |"
            for name, (w, c) in result.items() if name != reference]


def bench_dit(a) -> list[str]:
    from diffusers import WanTransformer3DModel

    from videogen.models.dit import PRESETS, VideoDiT

    config = {"text_dim": 4096, "freq_dim": 256, **(PRESETS[a.preset] if a.preset else MID_DIT)}
    device, dtype = torch.device(a.device), DTYPES[a.dtype]
    torch.manual_seed(0)
    reference = WanTransformer3DModel(**config)
    ours = VideoDiT(**config)
    ours.load_state_dict(reference.state_dict(), strict=True)
    if dtype != torch.float32:  # fp32 modules (norms, modulation) are cast too: a speed check, not a parity one
        ours, reference = ours.to(dtype), reference.to(dtype)
    ours, reference = ours.to(device), reference.to(device)
    g, (t, h, w) = torch.Generator().manual_seed(1), (int(s) for s in a.latent.split("x"))
    x = torch.randn(1, config.get("in_channels", 16), t, h, w, generator=g).to(device, dtype)
    text, step = torch.randn(1, a.text_len, config["text_dim"], generator=g).to(device, dtype), torch.tensor([500.0])
    fwd = {"ours": lambda: ours(x, step.to(device), text),
           "diffusers": lambda: reference(x, step.to(device), text, return_dict=False)[0]}

    def backward(name, model):
        model.zero_grad(set_to_none=True)
        fwd[name]().float().square().mean().backward()

    with torch.no_grad():
        diff = ((fwd["ours"]().float() - fwd["diffusers"]().float()).abs().max() / fwd["diffusers"]().abs().max())
    both = {"ours": lambda: backward("ours", ours), "diffusers": lambda: backward("diffusers", reference)}
    return [f"DiT {config}, latents {a.latent}, text {a.text_len}; outputs differ by {diff.item():.1e} (relative)",
            *rows("forward", best_of(fwd, a.repeats, device)),
            *rows("forward + backward", best_of(both, a.repeats, device, grad=True))]


def vae_pair():
    from diffusers import AutoencoderKLWan

    from videogen.models.vae import CausalVideoVAE

    torch.manual_seed(0)
    ref, ours = AutoencoderKLWan(**MID_VAE).eval(), CausalVideoVAE(**MID_VAE).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours, ref


def bench_vae(a) -> list[str]:
    ours, ref = vae_pair()
    x = torch.rand(1, 3, 17, a.size, a.size, generator=torch.Generator().manual_seed(1)) * 2 - 1
    infer = {"ours, parallel": lambda: ours.decode(ours.encode(x).mode()),
             "ours, streaming": lambda: ours.decode(ours.encode(x, streaming=True).mode(), streaming=True),
             "diffusers": lambda: ref.decode(ref.encode(x).latent_dist.mode())}

    def train(model, fn):
        model.zero_grad()
        (fn() - x).pow(2).mean().backward()

    steps = {"ours": lambda: train(ours, lambda: ours(x)[0]),
             "diffusers": lambda: train(ref, lambda: ref.decode(ref.encode(x).latent_dist.mode()).sample)}
    cpu = torch.device("cpu")
    lines = [f"VAE {MID_VAE}, input 1 x 3 x 17 x {a.size} x {a.size}",
             *rows("encode + decode", best_of(infer, a.repeats, cpu)),
             *rows("training step", best_of(steps, a.repeats, cpu, grad=True)), "",
             f"| streaming decode at {a.memory_size}px, frames | ours (MiB) | diffusers (MiB) | ratio |",
             "|---|---|---|---|"]
    for frames in (17, 33, 81):
        peak = {which: worker(["--decode", which, str(frames), f"--size={a.memory_size}"], True)["peak_mib"]
                for which in ("ours", "diffusers")}
        lines.append(f"| {frames} | {peak['ours']:.0f} | {peak['diffusers']:.0f} | "
                     f"{peak['ours'] / peak['diffusers']:.2f} |")
    return lines


def worker(args: list[str], release_freed: bool = False) -> dict:
    try:
        return in_fresh_process([__file__, "--worker", *args], release_freed=release_freed)
    except RuntimeError as e:
        return {"skipped": str(e).splitlines()[-1]}


def run_worker(a) -> None:
    """In a fresh process: one streaming decode (``--decode WHICH FRAMES``) or one attention call."""
    from videogen.models.attention import attention

    device = torch.device(a.device)
    if a.decode:
        ours, ref = vae_pair()
        z = torch.randn(1, 16, 1 + (int(a.decode[1]) - 1) // 4, a.size // 8, a.size // 8)
        with torch.no_grad():
            decode = (lambda: [c.sum() for c in ours.decode_frames(z)]) if a.decode[0] == "ours" else \
                (lambda: ref.decode(z).sample.sum())
            decode()  # warm-up: allocator pools and kernels in place before the mark is reset
            _, seconds, peak = peak_growth(decode, device)
    else:
        shape = (1, a.attn_tokens, a.attn_heads, a.attn_dim)
        q, k, v = (torch.randn(*shape).to(device, DTYPES[a.dtype]).requires_grad_(a.backward) for _ in range(3))
        out = lambda: attention(q, k, v, backend=a.backend)  # noqa: E731
        call = (lambda: out().float().square().sum().backward()) if a.backward else out
        _, seconds, peak = peak_growth(call, device)
    print(json.dumps({"peak_mib": peak / 2**20, "seconds": seconds}))


def bench_attention(a) -> list[str]:
    from videogen.models.attention import available_backends

    lines = [f"attention over {a.attn_tokens} tokens, {a.attn_heads} heads x {a.attn_dim}, {a.device} {a.dtype}",
             "| backend | forward (MiB) | forward (s) | forward + backward (MiB) | forward + backward (s) |",
             "|---|---|---|---|---|"]
    shape = ("device", "dtype", "attn_tokens", "attn_heads", "attn_dim")
    flags = [f"--{k.replace('_', '-')}={getattr(a, k)}" for k in shape]
    for name, problem in available_backends(torch.empty(1, device=a.device)).items():
        cells = []
        for backward in (False, True):
            big = backward and name == "math" and a.attn_tokens > 8192  # O(L^2) saved activations: spare the machine
            skip = problem or ("O(L^2) saved activations" if big else None)
            c = {"skipped": skip} if skip else worker([*flags, "--backend", name, *(["--backward"] * backward)])
            cells.append(f"not run: {c['skipped']} | -" if skip or "skipped" in c else
                         f"{c['peak_mib']:.0f} | {c['seconds']:.2f}")
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return lines


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("parts", nargs="*", default=["dit", "vae", "attention"], help="dit, vae, attention")
    p.add_argument("--preset", help="a VideoDiT preset instead of the mid-size DiT")
    p.add_argument("--latent", default="5x32x32", help="DiT latent T'xH'xW' (default: 17 frames, 256x256)")
    p.add_argument("--text-len", type=int, default=512, help="text tokens (Wan pads prompts to 512)")
    p.add_argument("--size", type=int, default=64, help="VAE frame side of the timed runs")
    p.add_argument("--memory-size", type=int, default=128, help="VAE frame side of the streaming-decode runs")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, help="torch CPU threads (1 is steadiest on a shared machine)")
    for name, default in (("tokens", 16384), ("heads", 2), ("dim", 64)):
        p.add_argument(f"--attn-{name}", type=int, default=default, help="attention: the call's shape")
    for hidden, kind in (("--backend", {}), ("--decode", {"nargs": 2}), *((f, {"action": "store_true"}) for f in (
            "--worker", "--backward"))):  # the worker processes' arguments
        p.add_argument(hidden, help=argparse.SUPPRESS, **kind)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.worker:
        return run_worker(a)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, best of {a.repeats}")
    print("| measure | wall (s) | cpu (s) | ratio, wall | ratio, cpu |\n|---|---|---|---|---|")
    for part in a.parts:
        print("\n".join({"dit": bench_dit, "vae": bench_vae, "attention": bench_attention}[part](a)) + "\n")


if __name__ == "__main__":
    main()
