import pytest


# ------------------------------------------------------------------------ pipeline: tiny Wan2.1 folder


@pytest.fixture(scope="session")
def tiny_wan_folder(tmp_path_factory):
    """A random Wan2.1-T2V folder in the diffusers layout, saved by diffusers' own WanPipeline (built once)."""
    from videogen.testing import build_tiny_wan_folder

    return build_tiny_wan_folder(tmp_path_factory.mktemp("tiny-wan") / "model")
