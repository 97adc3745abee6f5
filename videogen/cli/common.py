"""What the commands share: the parser class, the model and settings options, checks before loading, providers.

The sampling options are made from `videogen.settings.Settings` by one loop (`add_settings_options`), so a
new setting is a new field there and nothing here. Commands get their pipeline from a provider: `Loader`
loads the folder the options name (in this process); `videogen serve` passes its own, which hands every
request the model it holds.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import time
from pathlib import Path

from videogen.errors import EXIT_USER_ERROR, InputError, ResourceError
from videogen.settings import Settings

DTYPES = ("float32", "bfloat16", "float16")


class Parser(argparse.ArgumentParser):
    """argparse, with usage errors in the same one-line form as every other user error."""

    def error(self, message):
        self.exit(EXIT_USER_ERROR, f"error: {message} (see '{self.prog} --help')\n")


def examples(*lines: str) -> str:
    return "example:\n" + "\n".join(f"  {line}" for line in lines)


def command_parser(subparsers, name: str, *, help: str, description: str, epilog: str):
    return subparsers.add_parser(name, help=help, description=description, epilog=epilog,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)


def elapsed(start: float) -> str:
    """A wall time as the CLI prints it: ``3.2 s`` or ``4 min 12 s``."""
    seconds = time.perf_counter() - start
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{int(seconds // 60)} min {int(seconds % 60)} s"


def note(message: str) -> None:
    print(f"note: {message}", flush=True)


# ------------------------------------------------------------------------------------------ options


def add_model_options(p) -> None:
    """The options that say which model folder runs where: shared by every command that samples."""
    p.add_argument("--model", help="model folder: model_index.json with transformer/, vae/, text_encoder/, "
                   "tokenizer/, scheduler/ (a Wan2.1/2.2 diffusers checkpoint -- T2V, I2V, FLF2V, TI2V-5B, "
                   "A14B -- or one saved by videogen); default: the bundled demo model")
    p.add_argument("--device", help="cuda, cuda:1, cpu... (default: cuda if available)")
    p.add_argument("--dtype", choices=list(DTYPES), default="float32",
                   help="transformer and text encoder precision (the VAE stays float32); bfloat16 on GPUs")
    p.add_argument("--attention", help="attention backend: xformers, sdpa, chunked or math (default: automatic)")
    p.add_argument("--offload", action="store_true", help="keep each model on the CPU except while it works")


def add_settings_options(p, *, skip: tuple[str, ...] = (), flags: dict[str, tuple[str, str]] | None = None) -> None:
    """One flag per `Settings` field that has one (dest: the field's name); defaults: the model folder's.

    skip: fields this command does not take; flags: field -> (flag, help) where this command names it otherwise.
    """
    for f in dataclasses.fields(Settings):
        flag, help_text = (flags or {}).get(f.name, (f.metadata["flag"], f.metadata["help"]))
        if flag is None or f.name in skip:
            continue
        cli = dict(f.metadata["cli"])
        if cli.pop("action", None) == "bool":
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
            continue
        kind = cli.pop("type", None) or type(f.default)
        if "choices" not in cli:
            cli.setdefault("metavar", flag.lstrip("-").upper().replace("-", "_"))
        p.add_argument(flag, dest=f.name, type=kind, help=help_text, **cli)
    p.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    p.add_argument("--lora", action="append", default=[], metavar="FILE[@high|@low][:SCALE]",
                   help="merge a LoRA (lora.safetensors from videogen train, or another diffusers-format "
                        "Wan LoRA) at SCALE (default 1) into the expert its file names (a two-expert model's "
                        "lora_2.safetensors: the low-noise one), or the one @high/@low says; repeatable")
    p.add_argument("--no-server", action="store_true",
                   help="run in this process even when 'videogen serve' is running")


def settings_overrides(args) -> dict:
    """The `Settings` fields the command line gives (the options left out are not here)."""
    names = set(Settings.names())
    return {k: tuple(v) if isinstance(v, list) else v  # nargs options (the intervals) parse as lists
            for k, v in vars(args).items() if k in names and v is not None}


def default_output_path(prompt: str, folder: Path = Path(".")) -> Path:
    """``videogen-<first words of the prompt>-<n>.mp4`` with the first n not taken: never overwrites."""
    slug = "-".join(re.findall(r"[a-z0-9]+", prompt.lower()))[:40].strip("-") or "video"
    n = 1
    while (folder / f"videogen-{slug}-{n}.mp4").exists():
        n += 1
    return folder / f"videogen-{slug}-{n}.mp4"


# ------------------------------------------------------------------------------ before the model loads


def check_before_loading(args, overrides: dict, *, from_text: bool = False) -> Settings:
    """Refuse a missing or broken folder, settings it cannot take and missing LoRA files, before the (slow) load.

    The settings are checked against the folder's own geometry and layout, read from its configs; from_text:
    the task draws from text alone, which an image-to-video model cannot. No ``--model`` means the bundled
    demo model (``args.model`` is set to it).
    """
    from videogen import modelfolder
    from videogen.bundled import default_model_path

    if args.model is None:
        args.model = str(default_model_path())
    folder = Path(args.model)
    index = modelfolder.check_folder(folder)
    settings = modelfolder.read_defaults(folder, index).override(**overrides)
    resolved = settings.resolve(modelfolder.read_geometry(folder))
    layout = modelfolder.read_layout(folder, index)
    if from_text and not layout.text_to_video:
        raise InputError(f"{folder} is a {layout.name} model, which draws from a first frame: use "
                         "`videogen extend IMAGE` (or interpolate) with it")
    if resolved.guidance_scale_2 is not None and layout.experts == 1:
        raise InputError("--guidance-2 is the low-noise expert's guidance: this model has one expert")
    for lora, _ in loras(args):
        if not lora.is_file():
            raise InputError(f"{lora}: no such LoRA file")
    return resolved


def loras(args) -> list[tuple[Path, float]]:
    """``--lora``'s files and scales (``FILE[@EXPERT][:SCALE]``, the expert left out)."""
    from videogen.models.lora import parse_lora_arg

    return [parse_lora_arg(text) for text in args.lora]


def parse_device(name: str | None):
    import torch

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"unknown device {name!r} (cpu, cuda, cuda:1...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ResourceError(f"device {name!r} asked for, but CUDA is not available on this machine")
    return device


# ------------------------------------------------------------------------------------------ providers


class Loader:
    """The pipeline provider of a command run in this process: the folder the model options name, loaded."""

    def pipeline(self, args):
        import torch

        from videogen import VideoPipeline

        pipe = VideoPipeline.from_pretrained(args.model, device=parse_device(args.device),
                                             dtype=getattr(torch, args.dtype), offload=args.offload)
        from videogen.models.lora import parse_lora_spec

        for spec in map(parse_lora_spec, args.lora):  # each into its expert: FILE@EXPERT, or the file's own
            pipe.load_lora(spec.path, spec.scale, expert=spec.expert)
        return pipe
