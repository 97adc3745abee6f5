"""Where the shipped files live, however videogen was installed: the bundled demo model and the configs.

The demo model ships as a diffusers-layout folder in the repository's top-level ``assets/demo-model/``
(issue 7), the training configs in the top-level ``configs/``. Each reaches a user by one of two routes, and
`default_model_path` / `config_path` look in both:

1. **a wheel** (``pip install .``): ``setup.py`` maps the packages ``videogen.assets`` and
   ``videogen.configs`` to the top-level ``assets/`` and ``configs/`` folders, so the wheel holds
   ``videogen/assets/demo-model/`` and ``videogen/configs/*.yaml`` beside ``videogen/__init__.py``;
2. **a checkout** (``pip install -e .``, or running from the repository root): the package folder is
   ``<repo>/videogen`` and both sit one level up, in ``<repo>/assets/demo-model`` and ``<repo>/configs``.

Both are plain file paths relative to the imported ``videogen`` package, so no import machinery (editable
finders, namespace packages) is involved. A missing model or config is a `ModelError` / `InputError` that
says what to do, which the CLI prints as one line.
"""

from __future__ import annotations

from pathlib import Path

from videogen.errors import InputError, ModelError

DEMO_MODEL = "demo-model"  # the folder name under assets/
CONFIGS = "configs"  # the folder of shipped training configs


def _package_folder() -> Path:
    import videogen

    return Path(videogen.__file__).resolve().parent


def candidate_paths(package_folder: Path | None = None) -> list[Path]:
    """Where the demo model may be, in the order searched: the wheel layout, then the checkout layout."""
    package = Path(package_folder) if package_folder is not None else _package_folder()
    return [package / "assets" / DEMO_MODEL, package.parent / "assets" / DEMO_MODEL]


def find_default_model(package_folder: Path | None = None) -> Path | None:
    """The first candidate holding a model folder (its ``model_index.json``), or None."""
    for path in candidate_paths(package_folder):
        if (path / "model_index.json").is_file():
            return path
    return None


def default_model_path(package_folder: Path | None = None) -> Path:
    """The bundled demo model's folder; a `ModelError` naming the places searched when there is none."""
    found = find_default_model(package_folder)
    if found is None:
        places = " or ".join(str(p) for p in candidate_paths(package_folder))
        raise ModelError(
            f"no bundled demo model in this installation (looked in {places}): pass --model FOLDER, "
            "or build it with tools/train_demo.py"
        )
    return found


def config_folders(package_folder: Path | None = None) -> list[Path]:
    """Where the shipped configs may be, in the order searched: the wheel layout, then the checkout layout."""
    package = Path(package_folder) if package_folder is not None else _package_folder()
    return [package / CONFIGS, package.parent / CONFIGS]


def shipped_configs(package_folder: Path | None = None) -> list[Path]:
    """Every shipped config (``*.yaml``), sorted by name; a name in both layouts counts once, the wheel's."""
    found: dict[str, Path] = {}
    for folder in config_folders(package_folder):
        for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else ():
            found.setdefault(path.name, path)
    return [found[name] for name in sorted(found)]


def config_path(name: str, package_folder: Path | None = None) -> Path:
    """The shipped config called ``name`` (a file name such as ``finetune-lora.yaml``; the ``.yaml`` may be
    left off); an `InputError` naming the shipped ones when there is none."""
    file = name if name.endswith((".yaml", ".yml")) else f"{name}.yaml"
    if Path(file).name != file:
        raise InputError(f"{name}: a shipped config is named by its file name alone, not a path")
    for folder in config_folders(package_folder):
        if (folder / file).is_file():
            return folder / file
    names = ", ".join(p.name for p in shipped_configs(package_folder)) or "none in this installation"
    raise InputError(f"no shipped config {file} (shipped: {names})")
