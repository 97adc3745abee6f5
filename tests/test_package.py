import subprocess
import sys

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
