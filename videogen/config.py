"""Typed configuration: dataclasses loaded from YAML, with ``--set key.sub=value`` overrides.

A config is a (possibly nested) dataclass whose fields carry type hints; a YAML file gives some or all of them
and the defaults fill the rest. Every value is checked against its field's type when loaded, and an unknown key
is refused with its dotted name, so a typo never silently falls back to a default::

    @dataclass
    class Optim:
        lr: float = 1e-4  # learning rate
        betas: tuple[float, float] = (0.9, 0.999)

    @dataclass
    class TrainConfig:
        optim: Optim = field(default_factory=Optim)
        steps: int = 1000
        precision: Literal["fp32", "bf16"] = "bf16"

    cfg = load_config(TrainConfig, "configs/train.yaml", overrides=["optim.lr=3e-4", "steps=50"])
    save_config(cfg, "runs/x/config.yaml")  # loads back equal

Supported field types: bool, int, float, str, Path, ``Literal[...]``, ``Optional[T]`` / ``T | None``,
``list[T]``, ``tuple[T, ...]``, ``tuple[A, B]``, ``dict[str, T]`` and nested dataclasses.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal, Sequence, TypeVar, Union

from videogen.atomic import write_atomic
from videogen.errors import ConfigError

__all__ = ["load_config", "save_config", "to_dict", "from_dict", "apply_overrides"]

T = TypeVar("T")


# ------------------------------------------------------------------------------------------------ loading


def load_config(cls: type[T], path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> T:
    """An instance of the dataclass `cls` from a YAML file (or only defaults when `path` is None), with
    ``key.sub=value`` overrides applied on top. Raises ConfigError naming the file or override and the key."""
    data = _read_yaml(Path(path)) if path is not None else {}
    where = str(path) if path is not None else cls.__name__
    data = apply_overrides(cls, data, overrides)
    return from_dict(cls, data, where=where)


def _read_yaml(path: Path) -> dict:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the config ({type(e).__name__})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        raise ConfigError(f"{path}: invalid YAML ({line}{getattr(e, 'problem', None) or e})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values, not {type(data).__name__}")
    return data


def from_dict(cls: type[T], data: dict, *, where: str = "config", prefix: str = "") -> T:
    """Build the dataclass `cls` from a mapping, checking every key and value; missing keys take defaults."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {prefix.rstrip('.') or 'config'} must be a mapping, got {_show(data)}")
    hints = _field_types(cls)
    for key in data:
        if key not in hints:
            raise ConfigError(f"{where}: unknown key '{prefix}{key}'{_suggest(key, hints)}")
    values = {}
    for f in dataclasses.fields(cls):
        name = prefix + f.name
        if f.name in data:
            values[f.name] = _convert(data[f.name], hints[f.name], name, where)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where}: missing key '{name}'")
    try:
        return cls(**values)
    except (ValueError, TypeError) as e:  # a config's own __post_init__ checks
        raise ConfigError(f"{where}: {e}") from None


def _field_types(cls) -> dict[str, Any]:
    """Resolved type hints of a dataclass's fields (works with ``from __future__ import annotations``)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _suggest(key: str, choices) -> str:
    close = difflib.get_close_matches(str(key), list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


# --------------------------------------------------------------------------------------------- type checks


def _convert(value, tp, name: str, where: str):
    """`value` checked against (and, where lossless, converted to) the type `tp`; ConfigError otherwise."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return value if isinstance(value, tp) else from_dict(tp, value, where=where, prefix=f"{name}.")
    if origin in (Union, types.UnionType):
        return _convert_union(value, args, name, where)
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):  # True is not 1 here
            return value
        raise ConfigError(f"{where}: {name} must be one of {', '.join(map(repr, args))}, got {_show(value)}")
    if origin in (list, tuple, dict):
        return _convert_container(value, origin, args, name, where)
    if tp is Any:
        return value
    return _convert_scalar(value, tp, name, where)


def _convert_union(value, args, name, where):
    if value is None and type(None) in args:
        return None
    errors = []
    for arg in (a for a in args if a is not type(None)):
        try:
            return _convert(value, arg, name, where)
        except ConfigError as e:
            errors.append(e)
    if len(errors) == 1:
        raise errors[0]
    raise ConfigError(f"{where}: {name} must be {_type_name(Union[args])}, got {_show(value)}")


def _convert_container(value, origin, args, name, where):
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {name} must be a mapping, got {_show(value)}")
        key_tp, value_tp = args or (Any, Any)
        return {
            _convert(k, key_tp, f"{name} key", where): _convert(v, value_tp, f"{name}.{k}", where)
            for k, v in value.items()
        }
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{where}: {name} must be a list, got {_show(value)}")
    if origin is list:
        item_tp = args[0] if args else Any
        return [_convert(v, item_tp, f"{name}[{i}]", where) for i, v in enumerate(value)]
    if not args or (len(args) == 2 and args[1] is Ellipsis):
        item_types = [args[0] if args else Any] * len(value)  # tuple[T, ...]: any length
    elif len(value) == len(args):
        item_types = list(args)  # tuple[A, B]: exactly these
    else:
        raise ConfigError(f"{where}: {name} must have {len(args)} items, got {len(value)}")
    return tuple(_convert(v, t, f"{name}[{i}]", where) for i, (v, t) in enumerate(zip(value, item_types)))


def _convert_scalar(value, tp, name, where):
    """bool, int, float, str and Path, strictly: no bool for an int, no number for a str.

    A float field also takes an int and a string such as "1e-4", which YAML 1.1 (PyYAML) reads as a string
    because it has no decimal point.
    """
    if tp is float and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            pass
    elif tp is Path and isinstance(value, (str, Path)):
        return Path(value)
    elif isinstance(tp, type) and isinstance(value, tp) and not (isinstance(value, bool) and tp is not bool):
        return value
    raise ConfigError(f"{where}: {name} must be {_type_name(tp)}, got {_show(value)}")


def _type_name(tp) -> str:
    if isinstance(tp, type) and not typing.get_args(tp):
        return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, tp.__name__)
    return str(tp).replace("typing.", "").replace("pathlib.", "")


def _show(value) -> str:
    return f"{type(value).__name__} {value!r}"


# -------------------------------------------------------------------------------------------- overrides


def apply_overrides(cls: type, data: dict, overrides: Sequence[str]) -> dict:
    """Apply ``key.sub=value`` overrides to a raw config mapping (a copy is returned).

    The value is read as a YAML scalar or flow collection (``3``, ``1e-4``, ``true``, ``null``, ``[1, 2]``);
    a string field takes the text as written, so ``name=007`` stays "007". Keys are checked against `cls`.
    """
    data = _copy(data)
    for text in overrides:
        key, sep, raw = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override '{text}': expected key=value, e.g. train.lr=1e-4")
        node, tp, leaf = _walk(cls, data, key, text)
        node[leaf] = _parse_override(raw.strip(), tp, key, f"override '{text}'")
    return data


def _walk(cls: type, data: dict, key: str, text: str):
    """The mapping that holds the last part of a dotted key, that part's type, and its name."""
    parts = key.split(".")
    node, tp = data, cls
    for depth, part in enumerate(parts):
        tp = _unwrap_optional(tp)
        if not dataclasses.is_dataclass(tp):
            raise ConfigError(f"override '{text}': '{'.'.join(parts[:depth])}' has no sub-keys")
        hints = _field_types(tp)
        if part not in hints:
            unknown = ".".join(parts[: depth + 1])
            raise ConfigError(f"override '{text}': unknown key '{unknown}'{_suggest(part, hints)}")
        if depth < len(parts) - 1:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        tp = hints[part]
    return node, tp, parts[-1]


def _parse_override(raw: str, tp, key: str, where: str):
    import yaml

    if _unwrap_optional(tp) in (str, Path) and raw not in ("null", "~"):
        return _convert(raw, tp, key, where)
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        raise ConfigError(f"{where}: cannot read the value '{raw}' (YAML)") from None
    return _convert(value, tp, key, where)


def _unwrap_optional(tp):
    """T for Optional[T]; other types unchanged."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        rest = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return tp


def _copy(data):
    if isinstance(data, dict):
        return {k: _copy(v) for k, v in data.items()}
    return data


# ------------------------------------------------------------------------------------------------ saving


def to_dict(cfg) -> dict:
    """A config as plain YAML/JSON types: nested dicts, lists for tuples, strings for paths."""
    if not (dataclasses.is_dataclass(cfg) and not isinstance(cfg, type)):
        raise ConfigError(f"to_dict: expected a config dataclass instance, got {type(cfg).__name__}")
    return {f.name: _plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


def _plain(value):
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def save_config(cfg, path: str | os.PathLike) -> Path:
    """Write a config as YAML, atomically (`videogen.atomic.write_atomic`: a temporary file beside it, renamed)."""
    import yaml

    path = Path(path)
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None, allow_unicode=True)
    if not path.parent.is_dir():
        raise ConfigError(f"{path}: the folder {path.parent} does not exist")
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
