"""videogen: text-to-video diffusion with a causal video VAE and a diffusion transformer.

The heavy names are imported lazily, so ``import videogen`` (and ``videogen --version``) stays fast and
touches neither torch nor PyAV.
"""

__version__ = "0.1.0"

_LAZY = {
    "Video": "videogen.io",
    "read_video": "videogen.io",
    "iter_frames": "videogen.io",
    "write_video": "videogen.io",
    "VideoWriter": "videogen.io",
    "VideoInfo": "videogen.io",
    "probe_video": "videogen.io",
    "VideogenError": "videogen.errors",
    "CausalVideoVAE": "videogen.models.vae",
    "VideoDiT": "videogen.models.dit",
    "VideoPipeline": "videogen.tasks",
    "Pipeline": "videogen.pipeline",
    "Settings": "videogen.settings",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'videogen' has no attribute {name!r}")
