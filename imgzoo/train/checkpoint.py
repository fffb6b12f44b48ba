"""Training checkpoints: all a run needs to continue as if it had never stopped, written atomically; only
tensors and plain values, so ``torch.load(weights_only=True)`` reads them and never runs pickled code."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imgzoo._atomic import atomic_open
from imgzoo.errors import CheckpointError

FORMAT = "imgzoo-checkpoint-v1"
LAST = "last.pt"  # the latest finished epoch, rewritten each epoch
INTERRUPTED = "interrupted.pt"  # written on Ctrl-C: where the run stopped, inside an epoch or between two
REQUIRED = ("epoch", "seed", "model", "optimizer", "rng", "history")  # a file without them was not written by fit


def capture_rng() -> dict[str, Any]:
    """The state of every generator fit draws from (shuffling, dropout, augmentation), NumPy's as tensors."""
    np_state = np.random.get_state(legacy=False)
    key, pos = np_state["state"]["key"], np_state["state"]["pos"]
    numpy = {"bit_generator": np_state["bit_generator"], "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos)}
    numpy |= {"has_gauss": int(np_state["has_gauss"]), "gauss": float(np_state["gauss"])}
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return {"python": random.getstate(), "numpy": numpy, "torch": torch.get_rng_state(), "cuda": cuda}


def restore_rng(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    saved = state["numpy"]
    key = {"key": saved["key"].numpy().astype(np.uint32), "pos": saved["pos"]}
    np.random.set_state({**saved, "state": key})
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plus a format tag) to ``path`` atomically; returns the path."""
    with atomic_open(Path(path), "wb") as f:
        torch.save({"format": FORMAT, **payload}, f)
    return Path(path)


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (a file, or a folder holding ``last.pt``);
    a :class:`CheckpointError` for a file that is damaged or is not an imgzoo training checkpoint."""
    path = resolve_resume(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch's own message may suggest unpickling the file: never pass that on
        raise CheckpointError(_unreadable(path, type(e).__name__)) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not an imgzoo training checkpoint (expected format {FORMAT!r}). "
            "To load saved weights instead, use imgzoo.hub.api.load."
        )
    if missing := [key for key in REQUIRED if key not in payload]:
        raise CheckpointError(_unreadable(path, f"it has the imgzoo format tag but lacks {missing}"))
    return payload


def _unreadable(path: Path, why: str) -> str:
    size = path.stat().st_size
    what = "empty: 0 bytes" if size == 0 else f"{size} bytes; {why}"
    others = sorted(p.name for p in path.parent.glob("*.pt") if p != path)
    instead = f"resume from another checkpoint of the run ({', '.join(others)}), or " if others else ""
    return (
        f"{path} cannot be read as an imgzoo training checkpoint ({what}): it is damaged, e.g. by a full disk or "
        f"a copy that did not finish, or it is another kind of file. To go on, {instead}start the run again "
        "without resume= (delete or move the file first)."
    )


def resume_point(path: str | os.PathLike[str]) -> Path | None:
    """The file to resume a checkpoint folder from: an exact ``interrupted.pt`` (fit deletes it once a later
    epoch is checkpointed; one written mid-step cannot continue exactly), else ``last.pt``, else None."""
    folder = Path(path)
    interrupted, last = folder / INTERRUPTED, folder / LAST
    if interrupted.is_file():
        state = load_checkpoint(interrupted)
        if "partial" in state and (state["partial"] is None or state["partial"]["exact"]):
            return interrupted
    return last if last.is_file() else None


def resolve_resume(path: str | os.PathLike[str]) -> Path:
    """A checkpoint file, or a checkpoint folder's ``last.pt``; a clear error if neither exists."""
    path = Path(path) / LAST if Path(path).is_dir() else Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {path}; pass resume= the checkpoint_dir of an earlier fit or a .pt file it wrote"
        )
    return path
