"""Train several models the same way and compare them: the original notebooks' table and plot.

``compare`` trains, so it lives above the loop (:func:`imgzoo.fit`) rather than beside
``evaluate``: measuring a model never trains one, and this module is where the two meet.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import DataLoader, Dataset

from imgzoo.history import History
from imgzoo.loaders import own_generator
from imgzoo.plots import plot_histories
from imgzoo.training import fit

__all__ = ["Comparison", "compare"]


@dataclass
class Comparison:
    """Histories of several models trained the same way, with the notebooks' table and plot."""

    histories: dict[str, History] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        """Final-epoch metrics per model, as the original notebooks reported them."""
        rows = []
        for name, history in self.histories.items():
            last = history.last()
            rows.append({"model": name, **{k: last[k] for k in ("train_acc", "val_acc", "train_loss", "val_loss")}})
        return rows

    def to_markdown(self) -> str:
        def pct(v: float | None) -> str:
            return "n/a" if v is None else f"{100 * v:.2f}%"

        def num(v: float | None) -> str:
            return "n/a" if v is None else f"{v:.4f}"

        lines = ["| Model | Train accuracy | Val accuracy | Train loss | Val loss |", "|---|---|---|---|---|"]
        for r in self.rows():
            cells = [r["model"], pct(r["train_acc"]), pct(r["val_acc"]), num(r["train_loss"]), num(r["val_loss"])]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_markdown()

    def plot(self, path: str | os.PathLike[str] | None = None):
        """Accuracy and loss curves of every model on one figure (solid: train, dashed: val)."""
        return plot_histories(self.histories, path)


def compare(
    models: Mapping[str, nn.Module],
    train: Dataset | DataLoader | Mapping[str, Dataset | DataLoader],
    val: Dataset | DataLoader | None = None,
    *,
    epochs: int,
    **fit_options: Any,
) -> Comparison:
    """Train each model with the same options and seed, and compare the final epochs.

    ``train`` may be a mapping from model name to its own training data, to compare
    the same model with and without augmentation, as the original notebooks did. A
    ready-made loader shared by all models is rewound before each one, so every model
    trains on the same batches in the same order.
    """
    if not models:
        raise ValueError("compare needs at least one model: compare({'name': model, ...}, train, val, epochs=...)")
    result = Comparison()
    # A ready-made loader (FastLoader) shuffles and augments with its own generator; rewind it
    # before each model, so every model sees the same batches in the same order.
    loaders = list(train.values()) if isinstance(train, Mapping) else [train]
    generators = [g for g in map(own_generator, [*loaders, val]) if g is not None]
    start_states = [g.get_state() for g in generators]
    for name, model in models.items():
        for generator, state in zip(generators, start_states, strict=True):
            generator.set_state(state)
        data = train[name] if isinstance(train, Mapping) else train
        options = dict(fit_options)
        if options.get("checkpoint_dir") is not None:  # one folder per model, never shared
            options["checkpoint_dir"] = Path(options["checkpoint_dir"]) / name
        if options.get("verbose", 1):
            print(f"== {name}")
        result.histories[name] = fit(model, data, val, epochs=epochs, **options)
    return result
