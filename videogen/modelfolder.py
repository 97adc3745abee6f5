"""The model folder: one on-disk format, diffusers' pipeline layout, read and written here only.

::

    FOLDER/model_index.json        what diffusers' WanPipeline reads: the class of each component
    FOLDER/videogen.json           optional: this folder's generation defaults (`videogen.settings.Settings` fields)
    FOLDER/transformer/            config.json + diffusion_pytorch_model.safetensors (WanTransformer3DModel keys)
    FOLDER/vae/                    config.json + diffusion_pytorch_model.safetensors (AutoencoderKLWan keys)
    FOLDER/text_encoder/           transformers' T5 / UMT5 encoder
    FOLDER/tokenizer/              its tokenizer (with the text length, ``model_max_length``)
    FOLDER/scheduler/              scheduler_config.json

A Wan2.1-T2V diffusers checkpoint loads as is; the folders videogen writes (`write_model_folder`: the pipeline's
save, a training run's export, the demo recipe) are labelled with diffusers' class names, so diffusers loads
them too. Generation defaults come from ``videogen.json`` over a ``videogen`` section of model_index.json over
Wan2.1's. `read_geometry` reads what sizes the model takes from the configs alone, so a bad size is refused
before any weights load. Weights are safetensors only.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from videogen.atomic import staged_folder
from videogen.errors import ModelError
from videogen.settings import Geometry, Settings

COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")
DEFAULTS_FILE = "videogen.json"
KNOWN_ENTRIES = ("videogen",)  # model_index.json entries that are no component: our generation defaults
# Any other entry that is set (not null, false or [null, null]) is a part or a mode we do not run -- Wan2.2's
# second expert (transformer_2, boundary_ratio), per-token timesteps (expand_timesteps), Wan2.1 I2V's image
# encoder -- and the folder is refused rather than run without it.
# the class names diffusers' WanPipeline expects in model_index.json and in each config.json
DIFFUSERS_NAMES = {"transformer": "WanTransformer3DModel", "vae": "AutoencoderKLWan"}


# ------------------------------------------------------------------------------------------- reading


def read_json(path: Path) -> dict:
    """A JSON object from ``path``; a missing or broken file is a `ModelError` naming it."""
    try:
        value = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ModelError(f"{path} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise ModelError(f"{path} must hold a JSON object")
    return value


def check_folder(folder: Path) -> dict:
    """The folder's model_index.json, once every component folder is known to be there."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(f"model folder {folder} does not exist")
    if not (folder / "model_index.json").is_file():
        raise ModelError(f"{folder} is not a diffusers model folder: model_index.json is missing")
    index = read_json(folder / "model_index.json")
    missing = [f"{name}/" for name in COMPONENTS if not (folder / name).is_dir()]
    if missing:
        raise ModelError(f"model folder {folder} is incomplete: {', '.join(missing)} missing")
    extra = [name for name, value in index.items() if not name.startswith("_") and name not in COMPONENTS
             and name not in KNOWN_ENTRIES and value not in (None, False, [None, None])]
    if extra:  # a part the pipeline would leave out: never run a model half as published
        raise ModelError(f"{folder}: videogen cannot run this model as published: its {', '.join(extra)} "
                         f"{'is' if len(extra) == 1 else 'are'} not supported (it runs {', '.join(COMPONENTS)})")
    return index


def component_folder(folder: str | Path, name: str) -> Path:
    """``folder/name`` for a model folder, or ``folder`` itself when it is that component's folder."""
    folder = Path(folder)
    if (folder / name / "config.json").is_file():
        return folder / name
    if (folder / "config.json").is_file():
        return folder
    raise ModelError(f"{folder}: no {name}/ model here (expected {folder / name / 'config.json'})")


def read_defaults(folder: Path, index: dict | None = None) -> Settings:
    """Generation defaults: ``videogen.json`` over the ``videogen`` section of model_index.json over Wan's."""
    folder = Path(folder)
    index = read_json(folder / "model_index.json") if index is None else index
    values = dict(index.get("videogen") or {})
    if (folder / DEFAULTS_FILE).is_file():
        values.update(read_json(folder / DEFAULTS_FILE))
    return Settings.from_dict(values, str(folder / DEFAULTS_FILE))


def read_geometry(folder: Path) -> Geometry:
    """What sizes the folder's model takes, from its VAE and transformer configs (no weights are read)."""
    vae = read_json(Path(folder) / "vae" / "config.json")
    dit = read_json(Path(folder) / "transformer" / "config.json")
    try:
        return Geometry(
            temporal=2 ** sum(bool(t) for t in vae.get("temperal_downsample", (False, True, True))),
            spatial=2 ** (len(vae.get("dim_mult", (1, 2, 4, 4))) - 1),
            patch=tuple(int(p) for p in dit.get("patch_size", (1, 2, 2))),
            latent_channels=int(dit.get("in_channels", 16)),
        )
    except (TypeError, ValueError) as e:
        raise ModelError(f"{folder}: unreadable VAE or transformer config ({e})") from None


def read_scheduler_config(folder: Path) -> dict:
    """The folder's ``scheduler/scheduler_config.json``."""
    return read_json(Path(folder) / "scheduler" / "scheduler_config.json")


def default_scheduler_config(shift: float = 3.0) -> dict:
    """Wan2.1's scheduler (UniPC in flow mode), for a model trained from scratch."""
    return {"_class_name": "UniPCMultistepScheduler", "prediction_type": "flow_prediction",
            "use_flow_sigmas": True, "flow_shift": shift, "num_train_timesteps": 1000}


# ------------------------------------------------------------------------------------------- loading


def load_model(cls, folder: Path, dtype: torch.dtype | None):
    """A diffusers-style model class from its folder, in eval mode without gradients; `ModelError` if it fails."""
    try:
        return cls.from_pretrained(folder, torch_dtype=dtype).eval().requires_grad_(False)
    except Exception as e:  # diffusers raises OSError, ValueError, EnvironmentError or safetensors errors
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"{folder}: cannot load {cls.__name__} ({reason})") from None


def load_vae(folder: str | Path, dtype: torch.dtype | None = None):
    """The VAE of a model folder, or a VAE folder itself."""
    from videogen.models.vae import CausalVideoVAE

    folder = Path(folder)
    if not (folder / "vae" / "config.json").is_file() and not (folder / "config.json").is_file():
        raise ModelError(f"{folder}: not a VAE folder (no config.json here or in vae/)")
    return load_model(CausalVideoVAE, component_folder(folder, "vae"), dtype)


def load_text_encoder(folder: Path, dtype: torch.dtype | None = None):
    """The folder's text encoder and tokenizer as one `videogen.models.text.TextEncoder`."""
    from videogen.models.text import TextEncoder

    return TextEncoder.from_pretrained(Path(folder) / "tokenizer", Path(folder) / "text_encoder", dtype=dtype)


def load_components(folder: Path, dtype: torch.dtype | None = None) -> dict:
    """Everything a pipeline is made of, from a folder: ``text_encoder``, ``vae``, ``transformer``,
    ``scheduler_config`` and ``defaults``. dtype applies to the transformer and the text encoder; the VAE
    stays in fp32, as Wan recommends (its decoder is sensitive to bf16)."""
    from videogen.models.dit import VideoDiT
    from videogen.models.vae import CausalVideoVAE

    folder = Path(folder)
    index = check_folder(folder)
    return dict(
        defaults=read_defaults(folder, index),
        scheduler_config=read_scheduler_config(folder),
        text_encoder=load_text_encoder(folder, dtype),
        transformer=load_model(VideoDiT, folder / "transformer", dtype),
        vae=load_model(CausalVideoVAE, folder / "vae", torch.float32),
    )


# ------------------------------------------------------------------------------------------- writing


def write_model_folder(folder: str | Path, *, text_encoder, vae, transformer, scheduler, defaults: Settings,
                       overwrite: bool = False) -> Path:
    """Write a complete model folder that both videogen and diffusers' ``WanPipeline`` load.

    The folder appears whole or not at all (`videogen.atomic.staged_folder`). text_encoder: a
    `videogen.models.text.TextEncoder`; scheduler: a diffusers scheduler; defaults: written as videogen.json.
    """
    with staged_folder(Path(folder), overwrite=overwrite) as staging:
        write_components(staging, text_encoder=text_encoder, vae=vae, transformer=transformer,
                         scheduler=scheduler, defaults=defaults)
    return Path(folder)


def write_components(folder: Path, *, text_encoder, vae, transformer, scheduler, defaults: Settings) -> None:
    """The component folders, model_index.json and videogen.json, written into an existing folder."""
    import diffusers

    transformer.save_pretrained(folder / "transformer", safe_serialization=True)
    vae.save_pretrained(folder / "vae", safe_serialization=True)
    label_diffusers_classes(folder)
    text_encoder.encoder.save_pretrained(folder / "text_encoder")
    text_encoder.save_tokenizer(folder / "tokenizer")  # with its text length
    scheduler.save_pretrained(folder / "scheduler")
    index = {
        "_class_name": "WanPipeline",
        "_diffusers_version": diffusers.__version__,
        "scheduler": ["diffusers", type(scheduler).__name__],
        "text_encoder": ["transformers", type(text_encoder.encoder).__name__],
        "tokenizer": ["transformers", type(text_encoder.tokenizer).__name__],
        "transformer": ["diffusers", DIFFUSERS_NAMES["transformer"]],
        "vae": ["diffusers", DIFFUSERS_NAMES["vae"]],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    values = {k: v for k, v in defaults.to_dict().items() if not (k == "seed" and v is None)}
    (folder / DEFAULTS_FILE).write_text(json.dumps(values, indent=2))


def label_diffusers_classes(folder: Path) -> None:
    """Name diffusers' classes in the transformer's and VAE's config.json: ours hold their configs and weights."""
    for name, class_name in DIFFUSERS_NAMES.items():
        config_path = Path(folder) / name / "config.json"
        if config_path.is_file():
            config_path.write_text(json.dumps({**read_json(config_path), "_class_name": class_name}, indent=2))


# ------------------------------------------------------------------------------------ whole folders


WEIGHTS = "*.safetensors"


def weights_file(folder: Path, component: str) -> Path:
    """The safetensors file of one component (``transformer/diffusion_pytorch_model.safetensors``...)."""
    files = sorted((Path(folder) / component).glob(WEIGHTS))
    if len(files) != 1:
        raise ModelError(f"{Path(folder) / component}: expected one safetensors file, found {len(files)}")
    return files[0]


def to_float16(folder: Path) -> None:
    """Rewrite every safetensors file's float32 tensors in ``folder`` as float16, in place: half the size on disk.

    The pipeline loads them back into its own dtype (the VAE in float32), so only storage precision changes.
    """
    from safetensors.torch import load_file, save_file

    for path in sorted(Path(folder).rglob(WEIGHTS)):
        half = {k: v.half() if v.dtype == torch.float32 else v for k, v in load_file(str(path)).items()}
        save_file(half, str(path), metadata={"format": "pt"})


def average_component(sources: list[Path], target: Path, component: str = "transformer") -> Path:
    """``sources[0]``'s folder written at ``target`` (staged), its ``component`` the mean of the sources' weights,
    summed in float64: models fine-tuned from one start average into a working model ("model soups",
    Wortsman et al. 2022). Sources whose weights differ in names are a `ModelError`."""
    from safetensors.torch import load_file, save_file

    weights = [load_file(str(weights_file(source, component))) for source in sources]
    if any(w.keys() != weights[0].keys() for w in weights):
        raise ModelError(f"{', '.join(map(str, sources))}: their {component} weights do not match to average")
    mean = {k: (sum(w[k].double() for w in weights) / len(weights)).float().contiguous() for k in weights[0]}
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    with staged_folder(Path(target), overwrite=True) as staging:
        shutil.copytree(sources[0], staging, dirs_exist_ok=True)
        save_file(mean, str(weights_file(staging, component)), metadata={"format": "pt"})
    return Path(target)
