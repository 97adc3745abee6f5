"""videogen.config: typed dataclasses from YAML, dotted overrides, strict keys and types, save/load round trip."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import pytest
import yaml

from videogen.config import apply_overrides, from_dict, load_config, save_config, to_dict
from videogen.errors import ConfigError, InputError


@dataclass
class Optim:
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    warmup: Optional[int] = None


@dataclass
class Data:
    root: Path = Path("data")
    size: tuple[int, ...] = (64, 64)
    captions: list[str] = field(default_factory=list)


@dataclass
class TrainConfig:
    name: str
    optim: Optim = field(default_factory=Optim)
    data: Data = field(default_factory=Data)
    steps: int = 1000
    ema: bool = False
    precision: Literal["fp32", "bf16"] = "bf16"
    loss_weights: dict[str, float] = field(default_factory=dict)
    resume: Path | None = None

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_yaml_fills_defaults_and_nests(tmp_path):
    path = write(tmp_path, "name: run1\noptim:\n  lr: 3.0e-4\ndata:\n  size: [32, 48]\n  captions: [a, b]\n")
    cfg = load_config(TrainConfig, path)
    assert cfg.name == "run1" and cfg.steps == 1000 and cfg.precision == "bf16"
    assert cfg.optim == Optim(lr=3e-4)
    assert cfg.data.size == (32, 48) and isinstance(cfg.data.size, tuple)
    assert cfg.data.captions == ["a", "b"]
    assert cfg.data.root == Path("data")


def test_overrides_are_parsed_as_yaml_and_typed(tmp_path):
    path = write(tmp_path, "name: run1\n")
    cfg = load_config(
        TrainConfig,
        path,
        overrides=[
            "optim.lr=1e-3",  # PyYAML reads this as a string; a float field converts it
            "optim.betas=[0.5, 0.9]",
            "optim.warmup=100",
            "steps=5",
            "ema=true",
            "precision=fp32",
            "name=007",  # a string field keeps the text as written
            "data.root=/tmp/frames",
            "loss_weights={mse: 1, kl: 0.5}",
            "resume=runs/x",
        ],
    )
    assert cfg.optim == Optim(lr=1e-3, betas=(0.5, 0.9), warmup=100)
    assert cfg.steps == 5 and cfg.ema is True and cfg.precision == "fp32"
    assert cfg.name == "007"
    assert cfg.data.root == Path("/tmp/frames")
    assert cfg.loss_weights == {"mse": 1.0, "kl": 0.5}
    assert cfg.resume == Path("runs/x")
    assert load_config(TrainConfig, path, overrides=["optim.warmup=null"]).optim.warmup is None


def test_later_override_wins_and_defaults_only_without_file():
    cfg = load_config(TrainConfig, None, overrides=["name=a", "steps=2", "steps=3"])
    assert cfg.steps == 3 and cfg.optim == Optim()


@pytest.mark.parametrize(
    "text, key",
    [("name: a\nsteps_: 3\n", "'steps_'"), ("name: a\noptim:\n  lrr: 0.1\n", "'optim.lrr'")],
)
def test_unknown_key_in_file_is_named(tmp_path, text, key):
    with pytest.raises(ConfigError, match=key) as e:
        load_config(TrainConfig, write(tmp_path, text))
    assert "cfg.yaml" in str(e.value)
    assert "did you mean" in str(e.value)


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lrr=0.1", "unknown key 'optim.lrr'"),
        ("nope=1", "unknown key 'nope'"),
        ("steps.x=1", "'steps' has no sub-keys"),
        ("steps", "expected key=value"),
        ("steps=abc", "steps must be an integer, got str 'abc'"),
        ("steps=1.5", "steps must be an integer, got float 1.5"),
        ("steps=true", "steps must be an integer, got bool True"),
        ("ema=1", "ema must be true or false, got int 1"),
        ("precision=fp16", "precision must be one of 'fp32', 'bf16'"),
        ("optim.lr=fast", "optim.lr must be a number"),
        ("optim.betas=[0.9]", "optim.betas must have 2 items, got 1"),
        ("data.captions=[1, 2]", r"data.captions\[0\] must be a string"),
        ("steps=0", "steps must be >= 1"),  # the dataclass's own check, as a ConfigError
    ],
)
def test_bad_overrides_give_one_clear_error(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TrainConfig, None, overrides=["name=a", override])


def test_bad_values_in_file(tmp_path):
    with pytest.raises(ConfigError, match="name must be a string, got int 123"):
        load_config(TrainConfig, write(tmp_path, "name: 123\n"))
    with pytest.raises(ConfigError, match="missing key 'name'"):
        load_config(TrainConfig, write(tmp_path, "steps: 3\n"))
    with pytest.raises(ConfigError, match="optim must be a mapping"):
        load_config(TrainConfig, write(tmp_path, "name: a\noptim: 3\n"))


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="missing.yaml: no such file"):
        load_config(TrainConfig, tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match=r"cfg.yaml: invalid YAML \(line 3: mapping values are not allowed"):
        load_config(TrainConfig, write(tmp_path, "name: a\nsteps: 3\n  x: 4\n"))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(TrainConfig, write(tmp_path, "- a\n- b\n"))
    assert issubclass(ConfigError, InputError)  # so the CLI reports it as one line, exit 2


def test_save_load_round_trip(tmp_path):
    overrides = ["name=r", "optim.betas=[0.1, 0.2]", "data.size=[8, 16, 24]", "resume=a/b", "loss_weights={x: 2}"]
    cfg = load_config(TrainConfig, None, overrides=overrides)
    path = save_config(cfg, tmp_path / "saved.yaml")
    assert load_config(TrainConfig, path) == cfg
    plain = yaml.safe_load(path.read_text())
    assert plain == to_dict(cfg)
    assert plain["optim"]["betas"] == [0.1, 0.2] and plain["resume"] == "a/b"
    assert [p.name for p in tmp_path.iterdir()] == ["saved.yaml"]  # no temporary file left


def test_apply_overrides_does_not_mutate_input_and_from_dict_checks():
    raw = {"name": "a", "optim": {"lr": 0.5}}
    out = apply_overrides(TrainConfig, raw, ["optim.lr=0.25"])
    assert raw["optim"]["lr"] == 0.5 and out["optim"]["lr"] == 0.25
    assert from_dict(TrainConfig, out).optim.lr == 0.25


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_run_config_loads_validates_and_round_trips(path, tmp_path):
    from videogen.train.config import load_train_config

    cfg = load_train_config(path)  # unknown keys, wrong types and inconsistent values are errors
    saved = save_config(cfg, tmp_path / "config.yaml")  # what a run folder keeps, and --resume reads
    assert to_dict(load_train_config(saved)) == to_dict(cfg)
