"""Training checkpoints: everything needed to continue a run as if it had never stopped.

A checkpoint holds the model, optimizer, scheduler and grad-scaler states, the random
number generator states (Python, NumPy, torch, CUDA; under torchrun, every process's), the
number of finished epochs, the History so far, the state of callbacks such as early stopping,
and what the learning-rate schedule was sized for (fit refuses to resume it for another
length). It is written
atomically, so a process killed at any moment leaves the previous checkpoint intact.

Everything is stored as tensors and plain Python values, so it loads with
``torch.load(weights_only=True)``: opening a checkpoint never runs pickled code.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imgzoo._atomic import atomic_open

__all__ = ["FORMAT", "LAST", "capture_rng", "load_checkpoint", "resolve_resume", "restore_rng", "save_checkpoint"]

FORMAT = "imgzoo-checkpoint-v1"
LAST = "last.pt"  # the checkpoint of the latest finished epoch, rewritten each epoch
INTERRUPTED = "interrupted.pt"  # written on Ctrl-C: the weights mid-epoch, not resumable exactly


def capture_rng() -> dict[str, Any]:
    """The state of every generator fit draws from: shuffling, dropout, augmentation."""
    np_state = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": np_state["bit_generator"],
            "state": {"key": np_state["key"].numpy().astype(np.uint32), "pos": np_state["pos"]},
            "has_gauss": np_state["has_gauss"],
            "gauss": np_state["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plus a format tag) to ``path`` atomically; returns the path."""
    path = Path(path)
    with atomic_open(path, "wb") as f:
        torch.save({"format": FORMAT, **payload}, f)
    return path


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (a file, or a folder holding ``last.pt``)."""
    path = resolve_resume(path)
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(
            f"{path} is not an imgzoo training checkpoint (expected format {FORMAT!r}). "
            "To load saved weights instead, use imgzoo.hub.load."
        )
    return payload


def resolve_resume(path: str | os.PathLike[str]) -> Path:
    """A checkpoint file, or a checkpoint folder's ``last.pt``; a clear error if neither exists."""
    path = Path(path)
    if path.is_dir():
        path = path / LAST
    if not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {path}; pass resume= the checkpoint_dir of an earlier fit or a .pt file it wrote"
        )
    return path
