"""Reading diffusers configs into our classes without diffusers' class look-up."""

from __future__ import annotations

import inspect


def as_own_class(cls: type, config_dict: dict, diffusers_name: str) -> dict:
    """``config_dict`` as if saved by ``cls``, when it names diffusers' equivalent class ``diffusers_name``.

    Wan folders (and ours, for diffusers' sake) name diffusers' class. diffusers' ``extract_init_dict``
    resolves that name only to drop the config keys ``cls`` lacks, and resolving it imports every diffusers
    model of its kind: ~2 s of ``videogen generate``'s wall time per model on a CPU. Our classes take that
    class's keys, so the same keys are dropped here without the import.
    """
    if config_dict.get("_class_name") != diffusers_name:
        return config_dict
    known = set(inspect.signature(cls.__init__).parameters) - {"self"}
    config_dict = {k: v for k, v in config_dict.items() if k.startswith("_") or k in known}
    config_dict["_class_name"] = cls.__name__
    return config_dict
