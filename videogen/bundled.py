"""Where the bundled demo model lives, however videogen was installed.

The demo model ships as a diffusers-layout folder in the repository's top-level ``assets/demo-model/``
(issue 7). That folder reaches a user by one of two routes, and `default_model_path` looks in both:

1. **a wheel** (``pip install .``): ``setup.py`` maps the package ``videogen.assets`` to the top-level
   ``assets/`` folder, so the wheel holds ``videogen/assets/demo-model/`` beside ``videogen/__init__.py``;
2. **a checkout** (``pip install -e .``, or running from the repository root): the package folder is
   ``<repo>/videogen`` and the model sits one level up, in ``<repo>/assets/demo-model``.

Both are plain file paths relative to the imported ``videogen`` package, so no import machinery (editable
finders, namespace packages) is involved. A missing model is a `ModelError` that says what to do, which
the CLI prints as one line.
"""

from __future__ import annotations

from pathlib import Path

from videogen.errors import ModelError

DEMO_MODEL = "demo-model"  # the folder name under assets/


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
