"""Train the bundled demo model from nothing and assemble the shipped folder (issue 7). Each stage trains a config
of configs/ into ``RUNS/demo-NAME``, resuming from a checkpoint or skipped when done: after a stop, run it again.

    python tools/train_demo.py --p2       # the shipped model: ~18.5 h on a 2-core CPU (TRAINING.md has each stage's)
    python tools/train_demo.py --vae4     # stages 1-3 (8x VAE, DiT and T5; a 4x VAE and the DiT on it), ~9.5 h
    python tools/train_demo.py            # stages 1-2, ~3 h
"""

import argparse
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's videogen

from videogen.atomic import staged_folder, write_atomic  # noqa: E402
from videogen.bundled import config_path  # noqa: E402
from videogen.errors import InputError, ResourceError, VideogenError  # noqa: E402
from videogen.modelfolder import average_component, to_float16  # noqa: E402
from videogen.train.state import latest  # noqa: E402
from videogen.train.trainer import final_losses  # noqa: E402

STAGES = ("vae-images", "vae", "dit", "dit-more")
VAE4_STAGES = ("vae4-images", "vae4", "vae4-decoder", "vae4-decoder-more", "vae4-decoder-polish", "dit4",
               "dit4-more")  # with --vae4
P2_STAGES = ("dit4p2-t2i", "dit4p2-if", "dit4p2-pos", "dit4p2-pos2", "dit4p2-pos3", "dit4p2-noise")  # with --p2
P2_CONFIGS = ("demo-dit4-t2i-p2.yaml", "demo-dit4-p2-imagefirst.yaml") + ("demo-dit4-p2-position.yaml",) * 4
DIT_MORE = ["objective.shift=2.0"]  # the text decides a clip at high noise, where stage dit was weakest
# the p2 stages' end steps: where the runs they reproduce stopped (t2i to pos2), the end of pos3's decay, noise's 600
P2_STEPS = {"t2i": 3887, "if": 3550, "pos": 2486, "pos2": 3773, "pos3": 3000, "noise": 600}
P2_POS3 = ["train.max_steps=3000"]
P2_NOISE = ["train.max_steps=600", "optim.lr=2.0e-4", "data.shapes_samples=12000", "objective.shift=3.0"]
P2_MEAN = ("dit4p2-pos3", "dit4p2-noise")  # the stages whose DiT weights are averaged into the shipped one
# Guidance only at high noise (at low noise it rounds squares); the first frame drawn with the next four
P2_SAMPLING = {"guidance_interval": [0.85, 1.0], "image_guidance_interval": [0.5, 1.0], "image_first_frames": 5}
RECORD_FILE = "train_demo.json"
WEIGHTS = "*.safetensors"


@dataclass
class StageRecord:
    """What one stage took and reached over its invocations (1 + resumes); the losses as `videogen.train.trainer.final_losses` reads them."""

    config: str  # the YAML file
    overrides: list[str]
    run: str  # the run folder
    seconds: float = 0.0  # wall time
    invocations: int = 0
    steps: int = 0
    final_loss: float | None = None
    final_loss_mean: float | None = None
    final_terms: dict[str, float] = field(default_factory=dict)
    samples_per_second: float | None = None  # of the last invocation


@dataclass
class Recipe:
    """The command line and the record, which every stage needs."""

    args: argparse.Namespace
    runs: Path
    record: dict[str, StageRecord]

    def overrides(self, group: str, *extra: str) -> list[str]:
        """seed, then ``extra`` (the wiring), then --set and the group's --set-GROUP values."""
        return [f"seed={self.args.seed}", *extra, *self.args.set, *getattr(self.args, f"set_{group}")]

    def model(self, stage: str) -> Path:
        return self.runs / f"demo-{stage}" / "model"


def checkpoint_step(run: Path) -> int | None:
    newest = latest(run)
    return None if newest is None else json.loads((newest / "state.json").read_text())["step"]


def prepare_run(run: Path) -> bool:
    """Whether to resume ``run``; a run folder stopped before its first checkpoint is started afresh."""
    if latest(run) is not None:
        return True
    if run.is_dir() and any(run.iterdir()):
        if not (run / "config.yaml").is_file():
            raise InputError(f"{run}: exists, is not empty and is not a run folder; move it away or pick --runs")
        print(f"note: {run} has no checkpoint yet (stopped early): starting it again", flush=True)
        shutil.rmtree(run)
    return False


def seed_continuation(source: Path, run: Path) -> None:
    """Start ``run`` as a copy of ``source``'s newest checkpoint and log, so that it resumes from there."""
    if latest(run) is not None:
        return
    if (newest := latest(source)) is None:
        raise InputError(f"{source}: no checkpoint to continue from")
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(newest, run / "checkpoints" / newest.name)
    for name in ("config.yaml", "log.csv"):
        if (source / name).is_file():
            shutil.copy2(source / name, run / name)


def run_stage(r: Recipe, name: str, config: str, overrides: list[str], *, continues: str | None = None):
    """Train one stage to its end step, from ``continues``'s newest checkpoint if given; returns its config."""
    from videogen.train.config import load_train_config
    from videogen.train.trainer import train

    run, path = r.runs / f"demo-{name}", config_path(config)
    if continues is not None:
        seed_continuation(r.runs / f"demo-{continues}", run)
    cfg = load_train_config(path, overrides)
    cfg.data.kind = "shapes"  # the demo trains on the shapes world only
    rec = r.record.setdefault(name, StageRecord(str(path), overrides, str(run)))
    rec.config, rec.overrides = str(path), overrides
    if (checkpoint_step(run) or 0) >= cfg.train.end_step and (run / "model").is_dir():
        print(f"stage {name}: done already ({run}), skipped", flush=True)
        return cfg
    resume = prepare_run(run)
    print(f"stage {name}: {'resuming' if resume else 'training'} {run} to step {cfg.train.end_step}", flush=True)
    start = time.perf_counter()
    try:
        rec.samples_per_second = train(cfg, run, resume=resume).samples_per_second
    finally:  # an interrupted invocation's time and progress still count
        rec.seconds += time.perf_counter() - start
        rec.invocations += 1
        rec.steps = checkpoint_step(run) or rec.steps
        rec.final_loss, rec.final_loss_mean, rec.final_terms = final_losses(run / "log.csv")
        text = json.dumps({n: asdict(s) for n, s in r.record.items()}, indent=2)
        write_atomic(r.runs / RECORD_FILE, lambda tmp: tmp.write_text(text))
    return cfg


def first_recipe(r: Recipe):
    """Stages 1-2: the 8x VAE, then the DiT and T5 on its latents; returns dit-more's config."""
    run_stage(r, "vae-images", "demo-vae-images.yaml", r.overrides("vae"))
    run_stage(r, "vae", "demo-vae.yaml", r.overrides("vae", f"model.vae={r.model('vae-images')}"))
    wiring = [f"model.vae={r.model('vae')}", f"data.cache_dir={r.runs / 'cache'}"]
    run_stage(r, "dit", "demo-dit.yaml", r.overrides("dit", *wiring))
    more = r.overrides("dit", *wiring) + DIT_MORE + [f"train.max_steps={r.args.dit_more_steps}"]
    return run_stage(r, "dit-more", "demo-dit.yaml", more, continues="dit")


def vae4_recipe(r: Recipe):
    """Stage 3: the 4x VAE, its decoder trained on, and the DiT moved onto it; returns dit4-more's config."""
    a = r.args
    run_stage(r, "vae4-images", "demo-vae4-images.yaml", r.overrides("vae4"))
    run_stage(r, "vae4", "demo-vae4.yaml", r.overrides("vae4", f"model.vae={r.model('vae4-images')}"))
    clips = r.overrides("vae4", f"model.vae={r.model('vae4')}")
    run_stage(r, "vae4-decoder", "demo-vae4-decoder.yaml", clips)
    for name, before, steps in (("vae4-decoder-more", "vae4-decoder", a.vae4_decoder_more_steps),
                                ("vae4-decoder-polish", "vae4-decoder-more", a.vae4_decoder_polish_steps)):
        run_stage(r, name, "demo-vae4-decoder.yaml", clips + [f"train.max_steps={steps}"], continues=before)
    first = r.model("dit-more")
    wiring = r.overrides("dit", f"model.vae={r.model('vae4')}", f"data.cache_dir={r.runs / 'cache4'}",
                         f"model.dit_init={first}", f"model.text_encoder={first}")
    run_stage(r, "dit4", "demo-dit4.yaml", wiring)
    return run_stage(r, "dit4-more", "demo-dit4.yaml", wiring + [f"train.max_steps={a.dit4_more_steps}"],
                     continues="dit4")


def p2_recipe(r: Recipe, cfg):
    """Stage 4: six patch-2 DiT stages on the 4x model, each from the one before's DiT, the last two averaged into
    ``RUNS/demo-dit4p2-mean``; returns the last stage's config."""
    base = r.runs / "demo-model-4x"  # what --vae4 alone ships: the VAE and T5 the new DiT learns with
    assemble(r.model("dit4-more"), base, demo_defaults(cfg, r.model("dit4-more")), max_mb=r.args.max_mb,
             overwrite=True, vae=r.model("vae4-decoder-polish"))
    wiring = [f"seed={r.args.seed + 11}", f"model.vae={base}", f"model.text_encoder={base}",
              f"data.cache_dir={r.runs / 'cache4'}", "train.max_minutes=0"]
    extra = ([], [], [], [], P2_POS3, P2_NOISE)
    init = []  # each stage after the first starts from the DiT the one before it exported
    for name, config, more in zip(P2_STAGES, P2_CONFIGS, extra, strict=True):
        end = getattr(r.args, f"p2_{name.removeprefix('dit4p2-')}_steps")
        cfg = run_stage(r, name, config, wiring + init + more + r.args.set + r.args.set_dit
                        + [f"train.stop_step={end}"])
        init = [f"model.dit_init={r.model(name)}"]
    average_component([r.model(name) for name in P2_MEAN], r.model("dit4p2-mean"), "transformer")
    return cfg


def demo_defaults(cfg, exported: Path) -> dict:
    """videogen.json of the shipped model: its DiT stage's validation settings and the sampling that stage's
    exported folder declares."""
    v, declared = cfg.validation, json.loads((exported / "videogen.json").read_text())
    return {"num_frames": v.frames, "height": v.height, "width": v.width, "fps": cfg.data.fps or 8.0,
            "num_steps": v.steps, "guidance_scale": v.guidance, "shift": v.shift, "sampler": "unipc",
            "negative_prompt": "", "frame_conditioning": False,
            **{k: True for k in ("frame_conditioning", "image_first") if declared.get(k)}}


def folder_bytes(folder: Path, pattern: str = "*") -> int:
    return sum(p.stat().st_size for p in folder.rglob(pattern) if p.is_file())


def assemble(source: Path, target: Path, defaults: dict, *, max_mb: float, overwrite: bool,
             vae: Path | None = None) -> dict:
    """Copy the model folder ``source`` to ``target`` (whole or not at all) with demo defaults and, if given,
    ``vae``'s VAE; in float16 if float32 is over ``max_mb``. Returns the facts of the record."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with staged_folder(target, overwrite=overwrite) as model:
        shutil.copytree(source, model, dirs_exist_ok=True)
        if vae is not None:
            _swap_vae(model, vae / "vae")
        for path in model.glob("*/config.json"):  # diffusers' _name_or_path: a path on the training machine
            config = json.loads(path.read_text())
            if config.pop("_name_or_path", None) is not None:
                path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        (model / "videogen.json").write_text(json.dumps(defaults, indent=2) + "\n")
        float32_bytes, dtype = folder_bytes(model, WEIGHTS), "float32"
        if folder_bytes(model) > max_mb * 1e6:
            to_float16(model)
            dtype = "float16"
        total = folder_bytes(model)
        if total > max_mb * 1e6:
            raise ResourceError(f"the model folder takes {total / 1e6:.1f} MB even in float16, over --max-mb {max_mb}")
    return {"weights_dtype": dtype, "float32_weight_mb": round(float32_bytes / 1e6, 2),
            "total_mb": round(total / 1e6, 2)}


def _swap_vae(model: Path, vae: Path) -> None:
    """Put ``vae``'s weights in place of ``model/vae``'s, unless it would code other latents than the DiT learned."""
    import torch
    from safetensors.torch import load_file

    def config(folder):
        return {k: v for k, v in json.loads((folder / "config.json").read_text()).items() if not k.startswith("_")}

    def encoder(folder):
        weights = load_file(str(next(folder.glob(WEIGHTS))))
        return {k: v for k, v in weights.items() if not k.startswith(("decoder.", "post_quant_conv."))}

    old = model / "vae"
    if config(old) != config(vae):
        raise InputError(f"{vae}: its configuration differs from {old}'s, so its latents would too")
    mine, theirs = encoder(old), encoder(vae)
    if mine.keys() != theirs.keys() or any(not torch.equal(mine[k], theirs[k]) for k in mine):
        raise InputError(f"{vae}: its encoder differs from {old}'s, so its latents would too")
    for weights in old.glob(WEIGHTS):  # the weights only: the config (class name, as the DiT's run saved it) stays
        weights.unlink()
    for weights in vae.glob(WEIGHTS):
        shutil.copy2(weights, old)


def write_training_record(target: Path, record: dict[str, StageRecord], facts: dict, argv: list[str]) -> None:
    """TRAINING.md (for people) and training.json (for tools) inside the shipped folder."""
    import torch

    machine = (f"{torch.cuda.get_device_name()} (CUDA), {os.cpu_count()} CPU cores" if torch.cuda.is_available()
               else f"{platform.machine()} CPU, {os.cpu_count()} cores visible "
                    f"({platform.processor() or 'unknown model'})")
    summary = {"command": " ".join(["python", "tools/train_demo.py", *argv]), "machine": machine,
               "torch": torch.__version__, "stages": {n: asdict(r) for n, r in record.items()}, **facts}
    (target / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = ["# How this model was trained", "",
             f"Command: `{summary['command']}` (resumed runs add invocations, not steps).",
             f"Machine: {machine}; torch {torch.__version__}.",
             f"Weights: {facts['weights_dtype']} safetensors, {facts['total_mb']} MB in all "
             f"(float32 weights: {facts['float32_weight_mb']} MB).",
             *([f"DiT: the mean of the weights of stages {', '.join(facts['dit_mean_of'])}."]
               if "dit_mean_of" in facts else []), "",
             "| stage | config | steps | wall time | invocations | final loss | mean loss, last 10% "
             "| other logged terms |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for name, r in record.items():
        terms = ", ".join(f"{k} {v:.4g}" for k, v in sorted(r.final_terms.items())) or "-"
        losses = " | ".join("-" if v is None else f"{v:.4f}" for v in (r.final_loss, r.final_loss_mean))
        lines.append(f"| {name} | `{Path(r.config).name}` {' '.join(r.overrides)} | {r.steps} | "
                     f"{r.seconds / 60:.1f} min | {r.invocations} | {losses} | {terms} |")
    (target / "TRAINING.md").write_text("\n".join(lines) + "\n")


def parse_args(argv: list[str]):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=Path, default=Path("runs"), help="where the stage run folders live (default runs/)")
    p.add_argument("--assets", type=Path, default=ROOT / "assets" / "demo-model", help="the shipped model folder")
    for name, default in (("dit-more", 7000), ("dit4-more", 6000), ("vae4-decoder-more", 8000),
                          ("vae4-decoder-polish", 12000), *((f"p2-{k}", v) for k, v in P2_STEPS.items())):
        p.add_argument(f"--{name}-steps", type=int, default=default, help=f"the step stage {name} ends at")
    p.add_argument("--seed", type=int, default=0, help="seed of every stage (weights, data order, noise)")
    for suffix, what in (("", "every stage"), ("-vae", "the 8x VAE's stages"), ("-vae4", "the 4x VAE's stages"),
                         ("-dit", "every DiT stage")):
        p.add_argument(f"--set{suffix}", action="append", default=[], metavar="KEY=VALUE", help=f"override in {what}")
    p.add_argument("--vae4", action="store_true", help="also train stage 3 (the 4x VAE, the DiT on it), and ship that")
    p.add_argument("--p2", action="store_true", help="also train stage 4 (the patch-2 DiT), and ship that")
    p.add_argument("--max-mb", type=float, default=30.0, help="size limit of the shipped folder (MB)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --assets folder")
    return p.parse_args(argv)


def build(r: Recipe) -> tuple[dict, dict[str, StageRecord]]:
    """Every stage the flags ask for, then the shipped folder; returns the assembly's facts."""
    a = r.args
    if a.assets.exists() and not a.overwrite:  # refuse before hours of training, not after
        raise InputError(f"{a.assets} already exists (pass --overwrite to replace it)")
    a.vae4 = a.vae4 or a.p2
    cfg = first_recipe(r)
    cfg = vae4_recipe(r) if a.vae4 else cfg
    cfg = p2_recipe(r, cfg) if a.p2 else cfg
    shipped = "dit4p2-mean" if a.p2 else "dit4-more" if a.vae4 else "dit-more"
    trained = "dit4p2-noise" if a.p2 else shipped  # the stage whose export declares the trained sampling
    ran = STAGES + (VAE4_STAGES if a.vae4 else ()) + (P2_STAGES if a.p2 else ())  # in the order they run
    record = {name: r.record[name] for name in ran if name in r.record}
    defaults = {**demo_defaults(cfg, r.model(trained)), **(P2_SAMPLING if a.p2 else {})}
    vae = r.model("vae4-decoder-polish") if a.vae4 and not a.p2 else None  # p2's folder holds it already
    facts = assemble(r.model(shipped), a.assets, defaults, max_mb=a.max_mb, overwrite=a.overwrite, vae=vae)
    if a.p2:
        facts["dit_mean_of"] = list(P2_MEAN)
    return facts, record


def main(argv: list[str] | None = None) -> int:
    from videogen.train.trainer import TrainingInterrupted

    argv = sys.argv[1:] if argv is None else argv
    args, start = parse_args(argv), time.perf_counter()
    runs = args.runs.resolve()
    runs.mkdir(parents=True, exist_ok=True)
    saved = json.loads((runs / RECORD_FILE).read_text()) if (runs / RECORD_FILE).is_file() else {}
    record = {n: StageRecord(**v) for n, v in saved.items()}
    try:
        facts, shipped_record = build(Recipe(args, runs, record))
        write_training_record(args.assets, shipped_record, facts, argv)
    except TrainingInterrupted as e:
        print(f"interrupted: {e}; run this command again to continue", file=sys.stderr)
        return 130
    except VideogenError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.assets} ({facts['total_mb']} MB, {facts['weights_dtype']} weights) in "
          f"{(time.perf_counter() - start) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
