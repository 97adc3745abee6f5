"""``videogen train``: a YAML config (a file, or the name of one videogen ships) into a run folder."""

from __future__ import annotations

import sys
from pathlib import Path

from videogen.cli.common import command_parser, elapsed, examples


def add_train(subparsers, root) -> None:
    p = command_parser(
        subparsers, "train", help="train or fine-tune the DiT (full or LoRA) or the VAE",
        description="Train from a YAML config into a run folder: config, log.csv, checkpoints, and at the end "
        "lora.safetensors (LoRA runs) or model/ (full runs). Ctrl-C saves a checkpoint; --resume continues. "
        "CONFIG is a file, or the name of a config videogen ships (finetune-lora.yaml, finetune-full.yaml...).",
        epilog=examples(
            "videogen train finetune-lora.yaml --data clips/ --output runs/my-lora",
            "videogen train finetune-lora.yaml --data clips/ --output runs/my-lora --resume",
            "videogen train configs/demo-vae.yaml --data shapes --output runs/vae --set optim.lr=3e-4",
        ),
    )
    p.add_argument("config", metavar="CONFIG.yaml", help="the run's configuration: a file, or a shipped config's name")
    p.add_argument("--data", help="footage folder (videos/images with .txt captions or metadata.csv), or 'shapes'")
    p.add_argument("--output", "-o", required=True, metavar="RUN", help="run folder (new, or existing with --resume)")
    p.add_argument("--max-steps", type=int, help="optimizer steps (overrides train.max_steps)")
    p.add_argument("--resume", action="store_true", help="continue the run folder's latest checkpoint")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    p.set_defaults(run=run_train)


def config_file(name: str) -> Path:
    """A config file as given, else the shipped config of that name (`videogen.bundled.config_path`)."""
    from videogen.bundled import config_path

    path = Path(name)
    if path.exists() or path.name != name:
        return path
    return config_path(name)


def run_train(args, pipelines=None) -> int:
    from videogen.train.config import load_train_config, validate
    from videogen.train.trainer import TrainingInterrupted, train

    cfg = load_train_config(config_file(args.config), args.set)
    if args.data == "shapes":
        cfg.data.kind = "shapes"
    elif args.data is not None:
        cfg.data.kind, cfg.data.path = "footage", args.data
    if args.max_steps is not None:
        cfg.train.max_steps = args.max_steps
    try:
        result = train(validate(cfg), args.output, resume=args.resume)
    except TrainingInterrupted as e:
        print(f"interrupted: {e}", file=sys.stderr)
        return 130
    budget = f", train.max_minutes reached before step {cfg.train.max_steps}" if result.out_of_time else ""
    print(f"trained {result.step} steps (last loss {result.loss:.4f}, {result.samples_per_second:.2f} samples/s"
          f"{budget}); wrote {' and '.join(map(str, result.outputs or (result.output,)))} in {elapsed(args.started)}")
    return 0


COMMANDS = (add_train,)
