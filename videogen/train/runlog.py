"""A run's record: the config used, a CSV of the logged numbers, and TensorBoard events when installed."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from videogen.config import save_config
from videogen.train.config import TrainConfig

FIRST_COLUMNS = ["step", "loss", "lr", "grad_norm", "samples_per_s"]


class RunLog:
    """``config.yaml`` and ``log.csv`` in the run folder (main process only; a no-op elsewhere).

    On resume the CSV keeps its rows up to the resumed step and drops the later ones, which the resumed
    run is about to write again.
    """

    def __init__(self, folder: Path, cfg: TrainConfig, *, enabled: bool = True, resume_step: int | None = None):
        self.folder, self.enabled = Path(folder), enabled
        self.csv_path = self.folder / "log.csv"
        self.columns: list[str] | None = None
        self.tensorboard = None
        if not enabled:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        save_config(cfg, self.folder / ("config.yaml" if resume_step is None else "config.resumed.yaml"))
        if resume_step is not None and self.csv_path.is_file():
            self._truncate(resume_step)

    def _truncate(self, step: int) -> None:
        with open(self.csv_path, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows:
            return
        self.columns = list(rows[0].keys())
        with open(self.csv_path, "w", newline="") as f:
            writer = csv.DictWriter(f, self.columns)
            writer.writeheader()
            writer.writerows(r for r in rows if int(r["step"]) <= step)

    def __enter__(self):
        if self.enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # TensorBoard is optional: pip install tensorboard
                SummaryWriter = None
            if SummaryWriter is not None:
                self.tensorboard = SummaryWriter(str(self.folder / "tensorboard"))
        return self

    def __exit__(self, *exc):
        if self.tensorboard is not None:
            self.tensorboard.close()

    def row(self, step: int, stats: dict) -> None:
        if not self.enabled:
            return
        values = {"step": step, **{k: v for k, v in stats.items() if isinstance(v, (int, float))}}
        new = self.columns is None
        if new:
            self.columns = FIRST_COLUMNS + sorted(k for k in values if k not in FIRST_COLUMNS)
        with open(self.csv_path, "a", newline="") as f:
            writer = csv.DictWriter(f, self.columns, extrasaction="ignore")
            if new and f.tell() == 0:
                writer.writeheader()
            writer.writerow({k: _fmt(values.get(k)) for k in self.columns})
        if self.tensorboard is not None:
            for k, v in values.items():
                if k != "step" and math.isfinite(v):
                    self.tensorboard.add_scalar(k, v, step)


def _fmt(value) -> str:
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)
