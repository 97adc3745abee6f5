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
from dataclasses import dataclass
from pathlib import Path

import torch

from videogen.atomic import staged_folder
from videogen.errors import ModelError
from videogen.settings import Geometry, Settings

COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")  # in every folder
# Parts and modes a folder may declare in model_index.json: Wan2.2 A14B's second expert and where it takes
# over, Wan2.2 TI2V's per-token timesteps, Wan2.1 I2V's CLIP image encoder. Any other entry that is set (not
# null, false or [null, null]) is a part or a mode we do not run, and the folder is refused rather than run
# without it.
OPTIONAL = ("transformer_2", "image_encoder", "image_processor")
MODES = ("boundary_ratio", "expand_timesteps")
KNOWN_ENTRIES = ("videogen",)  # model_index.json entries that are no component: our generation defaults
PIPELINES = ("WanPipeline", "WanImageToVideoPipeline")  # the diffusers pipelines whose folders we run
DEFAULTS_FILE = "videogen.json"
# the class names diffusers' pipelines expect in model_index.json and in each config.json
DIFFUSERS_NAMES = {"transformer": "WanTransformer3DModel", "transformer_2": "WanTransformer3DModel",
                   "vae": "AutoencoderKLWan"}
OWN_TRANSFORMER = "VideoDiT"  # the label of a transformer diffusers' class would not compute (frame positions)


@dataclass(frozen=True)
class Layout:
    """Which Wan layout a folder holds, read from its model_index.json and configs (no weights)."""

    experts: int = 1  # transformers: 2 for Wan2.2 A14B (high noise, then low noise)
    boundary_ratio: float | None = None  # the second expert takes over below boundary_ratio * 1000
    expand_timesteps: bool = False  # Wan2.2 TI2V: one timestep per token, the first latent frame held clean
    image_encoder: bool = False  # CLIP image states through added key/value projections (Wan2.1 I2V, FLF2V)
    condition_channels: bool = False  # the DiT takes noise + mask(4) + encoded condition frames (I2V layouts)
    first_last: bool = False  # image states of a first and a last frame (FLF2V: ``pos_embed_seq_len``)

    @property
    def name(self) -> str:
        if self.expand_timesteps:
            return "Wan2.2 TI2V"
        kind = "FLF2V" if self.first_last else "I2V" if self.condition_channels else "T2V"
        return f"Wan2.2 {kind}-A14B" if self.experts == 2 else f"Wan2.1 {kind}"

    @property
    def text_to_video(self) -> bool:
        """Whether the model draws from text alone (an I2V model always needs a first frame)."""
        return not self.condition_channels


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
    """The folder's model_index.json, once every component folder is known to be there and nothing it declares
    is a part or a mode videogen would leave out."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(f"model folder {folder} does not exist")
    if not (folder / "model_index.json").is_file():
        raise ModelError(f"{folder} is not a diffusers model folder: model_index.json is missing")
    index = read_json(folder / "model_index.json")
    extra = [name for name, value in index.items() if not name.startswith("_") and _declared(value)
             and name not in COMPONENTS + OPTIONAL + MODES + KNOWN_ENTRIES]
    if extra:  # a part the pipeline would leave out: never run a model half as published
        raise ModelError(f"{folder}: videogen cannot run this model as published: its {', '.join(extra)} "
                         f"{'is' if len(extra) == 1 else 'are'} not supported")
    pipeline = index.get("_class_name", PIPELINES[0])
    if pipeline not in PIPELINES:
        raise ModelError(f"{folder}: a {pipeline} folder; videogen runs {' and '.join(PIPELINES)} folders")
    wanted = COMPONENTS + tuple(name for name in OPTIONAL if _declared(index.get(name)))
    missing = [f"{name}/" for name in wanted if not (folder / name).is_dir()]
    if missing:
        raise ModelError(f"model folder {folder} is incomplete: {', '.join(missing)} missing")
    _check_pairs(folder, index)
    return index


def _declared(value) -> bool:
    """Whether a model_index.json entry is set: not null, false or [null, null]."""
    return value not in (None, False, [None, None])


def _check_pairs(folder: Path, index: dict) -> None:
    """Entries that only make sense together: an expert and its boundary, an image encoder and its processor."""
    expert, boundary = _declared(index.get("transformer_2")), index.get("boundary_ratio")
    if expert != (boundary is not None):
        raise ModelError(f"{folder}: model_index.json has {'transformer_2' if expert else 'boundary_ratio'} "
                         f"without {'boundary_ratio' if expert else 'transformer_2'}; both or neither")
    if boundary is not None and (isinstance(boundary, bool) or not isinstance(boundary, (int, float))
                                 or not 0 < boundary < 1):
        raise ModelError(f"{folder}: boundary_ratio must be a number between 0 and 1, got {boundary!r}")
    if _declared(index.get("image_encoder")) != _declared(index.get("image_processor")):
        raise ModelError(f"{folder}: model_index.json needs both image_encoder and image_processor, or neither")
    if index.get("expand_timesteps") not in (None, False, True):
        raise ModelError(f"{folder}: expand_timesteps must be true or false, got {index['expand_timesteps']!r}")


def read_layout(folder: Path, index: dict | None = None) -> Layout:
    """The folder's `Layout`, from model_index.json and the transformer's config (no weights are read)."""
    folder = Path(folder)
    index = check_folder(folder) if index is None else index
    dit = read_json(folder / "transformer" / "config.json")
    layout = Layout(
        experts=2 if _declared(index.get("transformer_2")) else 1,
        boundary_ratio=index.get("boundary_ratio"),
        expand_timesteps=bool(index.get("expand_timesteps")),
        image_encoder=_declared(index.get("image_encoder")),
        condition_channels=dit.get("in_channels", 16) != dit.get("out_channels", 16),
        first_last=dit.get("pos_embed_seq_len") is not None,
    )
    if layout.image_encoder != (dit.get("image_dim") is not None):
        needs = "takes image states but the folder has no image_encoder/" if dit.get("image_dim") is not None \
            else "takes no image states but the folder has an image_encoder/"
        raise ModelError(f"{folder}: its transformer {needs}")
    if layout.image_encoder:  # its transformer's image attention and the CLIP encoder are not built yet
        raise ModelError(f"{folder}: a {layout.name} model (CLIP image states through added key/value "
                         "projections): not supported yet; Wan2.2 I2V-A14B and TI2V-5B animate images")
    if layout.expand_timesteps and layout.condition_channels:
        raise ModelError(f"{folder}: expand_timesteps with a {dit.get('in_channels')}-channel transformer")
    return layout


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
            spatial=2 ** (len(vae.get("dim_mult", (1, 2, 4, 4))) - 1) * int(vae.get("patch_size") or 1),
            patch=tuple(int(p) for p in dit.get("patch_size", (1, 2, 2))),
            latent_channels=int(dit.get("out_channels") or dit.get("in_channels", 16)),
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


def load_image_encoder(folder: Path, dtype: torch.dtype | None = None):
    """The folder's CLIP image encoder and its processor as one `videogen.models.image.ImageEncoder`."""
    from videogen.models.image import ImageEncoder

    return ImageEncoder.from_pretrained(Path(folder) / "image_processor", Path(folder) / "image_encoder", dtype=dtype)


def load_components(folder: Path, dtype: torch.dtype | None = None) -> dict:
    """Everything a pipeline is made of, from a folder: ``text_encoder``, ``vae``, ``transformer``,
    ``transformer_2`` (or None), ``image_encoder`` (or None), ``layout``, ``scheduler_config`` and ``defaults``.
    dtype applies to the transformers and the encoders; the VAE stays in fp32, as Wan recommends (its decoder
    is sensitive to bf16)."""
    from videogen.models.dit import VideoDiT
    from videogen.models.vae import CausalVideoVAE

    folder = Path(folder)
    index = check_folder(folder)
    layout = read_layout(folder, index)
    return dict(
        layout=layout,
        defaults=read_defaults(folder, index),
        scheduler_config=read_scheduler_config(folder),
        text_encoder=load_text_encoder(folder, dtype),
        transformer=load_model(VideoDiT, folder / "transformer", dtype),
        transformer_2=load_model(VideoDiT, folder / "transformer_2", dtype) if layout.experts == 2 else None,
        image_encoder=load_image_encoder(folder, dtype) if layout.image_encoder else None,
        vae=load_model(CausalVideoVAE, folder / "vae", torch.float32),
    )


# ------------------------------------------------------------------------------------------- writing


def write_model_folder(folder: str | Path, *, overwrite: bool = False, **parts) -> Path:
    """Write a complete model folder that both videogen and diffusers' pipeline load.

    The folder appears whole or not at all (`videogen.atomic.staged_folder`). parts: as `write_components`.
    """
    with staged_folder(Path(folder), overwrite=overwrite) as staging:
        write_components(staging, **parts)
    return Path(folder)


def write_components(folder: Path, *, text_encoder, vae, transformer, scheduler, defaults: Settings,
                     transformer_2=None, image_encoder=None, layout: Layout | None = None) -> None:
    """The component folders, model_index.json and videogen.json, written into an existing folder.

    text_encoder: a `videogen.models.text.TextEncoder`; image_encoder: a `videogen.models.image.ImageEncoder`
    or None; scheduler: a diffusers scheduler; layout: the modes to declare (boundary_ratio, expand_timesteps);
    defaults: written as videogen.json.
    """
    import diffusers

    layout = layout or Layout()
    models = {"transformer": transformer, "transformer_2": transformer_2, "vae": vae}
    for name, model in models.items():
        if model is not None:
            model.save_pretrained(folder / name, safe_serialization=True)
    labels = label_diffusers_classes(folder)
    text_encoder.encoder.save_pretrained(folder / "text_encoder")
    text_encoder.save_tokenizer(folder / "tokenizer")  # with its text length
    scheduler.save_pretrained(folder / "scheduler")
    index = {
        "_class_name": "WanImageToVideoPipeline" if transformer.config.in_channels != vae.latent_channels
        or image_encoder is not None else "WanPipeline",
        "_diffusers_version": diffusers.__version__,
        "scheduler": ["diffusers", type(scheduler).__name__],
        "text_encoder": ["transformers", type(text_encoder.encoder).__name__],
        "tokenizer": ["transformers", type(text_encoder.tokenizer).__name__],
        **labels,
        "boundary_ratio": layout.boundary_ratio if transformer_2 is not None else None,
        "expand_timesteps": layout.expand_timesteps,
    }
    if image_encoder is not None:
        image_encoder.save_pretrained(folder / "image_processor", folder / "image_encoder")
        index.update(image_encoder=["transformers", type(image_encoder.encoder).__name__],
                     image_processor=["transformers", type(image_encoder.processor).__name__])
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    values = {k: v for k, v in defaults.to_dict().items() if not (k == "seed" and v is None)}
    (folder / DEFAULTS_FILE).write_text(json.dumps(values, indent=2))


def label_diffusers_classes(folder: Path) -> dict[str, list[str]]:
    """Name in each model's config.json the class that computes it: diffusers' where diffusers' class computes
    the same function from these configs and weights, else ours (a transformer with frame positions), so that
    diffusers refuses the folder in words rather than load a different model. Returns model_index.json's
    entries for them."""
    labels = {}
    for name, class_name in DIFFUSERS_NAMES.items():
        config_path = Path(folder) / name / "config.json"
        if not config_path.is_file():
            continue
        config = read_json(config_path)
        library = "diffusers"
        if name.startswith("transformer") and config.get("frame_position_dim"):
            library, class_name = "videogen", OWN_TRANSFORMER
        config_path.write_text(json.dumps({**config, "_class_name": class_name}, indent=2) + "\n")
        labels[name] = [library, class_name]
    index_path = Path(folder) / "model_index.json"
    if index_path.is_file():  # a folder written over another's: its index follows what it now holds
        index_path.write_text(json.dumps({**read_json(index_path), **labels}, indent=2))
    return labels


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
