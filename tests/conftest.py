import pytest


# ------------------------------------------------------------------------ pipeline: tiny Wan2.1 folder


@pytest.fixture(scope="session")
def tiny_wan_folder(tmp_path_factory):
    """A random Wan2.1-T2V folder in the diffusers layout, saved by diffusers' own WanPipeline (built once)."""
    from videogen.testing import build_tiny_wan_folder

    return build_tiny_wan_folder(tmp_path_factory.mktemp("tiny-wan") / "model")


@pytest.fixture(autouse=True)
def _no_videogen_server(tmp_path_factory, monkeypatch):
    """Commands under test run in the test's process: a `videogen serve` the developer left running is not
    asked (tests/test_serve.py starts its own, on its own socket)."""
    monkeypatch.setenv("VIDEOGEN_SOCKET", str(tmp_path_factory.getbasetemp() / "no-server.sock"))
