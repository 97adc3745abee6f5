"""The networks: the causal video VAE, the diffusion transformer, attention and the text encoder."""

_LAZY = {
    "CausalVideoVAE": "videogen.models.vae",
    "VideoDiT": "videogen.models.dit",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'videogen.models' has no attribute {name!r}")
