"""Per-epoch training metrics, to dict, CSV and JSON; accuracies are fractions, val_* None without a val set."""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgzoo._atomic import atomic_write_text
from imgzoo.eval.evaluation import json_safe
from imgzoo.eval.plots import plot_history  # a leaf below this module; matplotlib itself loads only when drawing

__all__ = ["History"]

COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "time", "images_per_sec")


def _written(text: str, path: str | os.PathLike[str] | None) -> str:
    if path is not None:
        atomic_write_text(path, text)
    return text


@dataclass
class History:
    """Per-epoch metrics of one :func:`imgzoo.fit` run, as equal-length lists."""

    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    val_loss: list[float | None] = field(default_factory=list)
    val_acc: list[float | None] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    time: list[float] = field(default_factory=list)  # seconds for the epoch, validation included
    images_per_sec: list[float] = field(default_factory=list)  # training images only

    def append(self, **row: Any) -> None:
        """Add one epoch; every column must be given (val_* may be None)."""
        if (missing := set(COLUMNS) - set(row)) | (unknown := set(row) - set(COLUMNS)):
            raise ValueError(
                f"History.append needs exactly {COLUMNS}; missing {sorted(missing)}, unknown {sorted(unknown)}"
            )
        for name in COLUMNS:
            getattr(self, name).append(row[name])

    def __len__(self) -> int:
        return len(self.epoch)

    def last(self) -> dict[str, Any]:
        """The most recent epoch as a dict; an IndexError if nothing was trained."""
        if not self.epoch:
            raise IndexError("History is empty: no epoch has finished")
        return {name: getattr(self, name)[-1] for name in COLUMNS}

    def to_dict(self) -> dict[str, list[Any]]:
        """Equal-length lists keyed by column name; a copy, safe to mutate."""
        return {name: list(getattr(self, name)) for name in COLUMNS}

    @classmethod
    def from_dict(cls, data: dict[str, list[Any]]) -> History:
        if unknown := set(data) - set(COLUMNS):
            raise ValueError(f"unknown History columns {sorted(unknown)}; expected {list(COLUMNS)}")
        lengths = {name: len(values) for name, values in data.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"History columns must have equal lengths, got {lengths}")
        return cls(**{name: list(values) for name, values in data.items()})

    def to_json(self, path: str | os.PathLike[str] | None = None) -> str:
        """The history as JSON text (NaN and infinity as null); also written atomically to ``path`` if given."""
        return _written(json.dumps(json_safe(self.to_dict()), indent=1), path)

    @classmethod
    def from_json(cls, source: str | os.PathLike[str]) -> History:
        """Read what :meth:`to_json` wrote: a file path or the JSON text itself."""
        text = str(source)
        if not text.lstrip().startswith("{"):
            text = Path(source).read_text()
        return cls.from_dict(json.loads(text))

    def to_csv(self, path: str | os.PathLike[str] | None = None) -> str:
        """The history as CSV text (header row, one row per epoch; empty cells for None)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(zip(*(getattr(self, name) for name in COLUMNS), strict=True))  # None: an empty cell
        return _written(buffer.getvalue(), path)

    def plot(self, path: str | os.PathLike[str] | None = None):  # -> matplotlib.figure.Figure
        """Accuracy and loss curves (:func:`imgzoo.eval.plots.plot_history`); a PNG at ``path`` if given."""
        return plot_history(self, path)
