import subprocess
import sys

import pytest

import videogen
from videogen.cli import main


def test_version_attribute():
    assert videogen.__version__.count(".") == 2


def test_cli_version(capsys):
    try:
        main(["--version"])
    except SystemExit as e:
        assert e.code == 0
    assert videogen.__version__ in capsys.readouterr().out


def test_python_dash_m_runs():
    out = subprocess.run([sys.executable, "-m", "videogen", "--version"], capture_output=True, text=True)
    assert out.returncode == 0
    assert out.stdout.strip() == f"videogen {videogen.__version__}"


def test_unknown_command_is_one_line_error():
    out = subprocess.run([sys.executable, "-m", "videogen", "frobnicate"], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.startswith("error: ")
    assert "Traceback" not in out.stderr


def test_shipped_configs_found_in_the_wheel_and_the_checkout_layouts(tmp_path):
    from videogen.bundled import config_path, shipped_configs
    from videogen.errors import InputError

    wheel = tmp_path / "site-packages" / "videogen"  # pip install .: videogen/configs/NAME
    checkout = tmp_path / "repo" / "videogen"  # pip install -e .: <repo>/configs/NAME
    for folder in (wheel / "configs", checkout.parent / "configs"):
        folder.mkdir(parents=True)
        (folder / "a.yaml").write_text("task: dit\n")
    assert config_path("a.yaml", wheel) == wheel / "configs" / "a.yaml"
    assert config_path("a", checkout) == checkout.parent / "configs" / "a.yaml"
    assert shipped_configs(checkout) == [checkout.parent / "configs" / "a.yaml"]
    with pytest.raises(InputError, match=r"no shipped config b\.yaml \(shipped: a\.yaml\)"):
        config_path("b.yaml", wheel)
    with pytest.raises(InputError, match="file name alone"):
        config_path("../configs/a.yaml", wheel)
    # this checkout: every config the CLI and the recipe name is found, each starting with its header comment
    shipped = shipped_configs()
    assert config_path("finetune-lora.yaml") in shipped and config_path("demo-dit4-p2-position.yaml") in shipped
    assert all(path.read_text().startswith("# ") for path in shipped)


@pytest.mark.slow
def test_the_built_wheel_carries_the_configs_and_the_demo_model(tmp_path):
    import shutil
    import zipfile
    from pathlib import Path

    from videogen.bundled import find_default_model, shipped_configs

    root = Path(__file__).resolve().parents[1]
    source = tmp_path / "src"  # a copy, so that the build leaves no build/ or egg-info in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(root / name, source / name)
    for name in ("videogen", "configs", "assets"):
        shutil.copytree(root / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), "."]
    subprocess.run(build, cwd=source, check=True, capture_output=True)
    names = set(zipfile.ZipFile(next(tmp_path.glob("videogen-*.whl"))).namelist())
    configs = {f"videogen/configs/{path.name}" for path in shipped_configs()}
    assert configs and configs <= names
    model = find_default_model()
    if model is not None:  # the demo model, file for file
        files = {f"videogen/assets/demo-model/{p.relative_to(model).as_posix()}" for p in model.rglob("*")
                 if p.is_file()}
        assert "videogen/assets/demo-model/model_index.json" in files and files <= names
    assert not [n for n in names if n.startswith(("configs/", "assets/"))]  # no stray top-level package
