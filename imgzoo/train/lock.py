"""One fit per checkpoint folder (two would overwrite each other's last.pt), in a folder known to be writable
before training starts. filelock's OS lock is dropped when its process ends, so a killed run blocks nothing."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

LOCK_NAME = "fit.lock"


class CheckpointDirError(RuntimeError):
    """A checkpoint_dir that cannot be written, or that another fit is writing."""


@contextlib.contextmanager
def lock_checkpoint_dir(folder: str | os.PathLike[str] | None) -> Iterator[None]:
    """Hold ``folder``'s lock for the body; None (no checkpoints) locks nothing."""
    if folder is None:
        yield
        return
    folder = Path(folder)
    lock = FileLock(path := folder / LOCK_NAME, timeout=0)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        holder = path.read_text(errors="replace").split() if path.is_file() else []  # read before we try
        held = lock.acquire()  # a context manager that releases it
    except Timeout:  # before OSError: filelock's Timeout is a TimeoutError
        who = f"process {holder[0]} on {holder[1]}" if len(holder) >= 2 else "another process"
        raise CheckpointDirError(
            f"fit: {folder} is in use by another fit ({who}, see {path}); two runs writing the same checkpoints "
            "would overwrite each other's. Wait for that run to end, or pass another checkpoint_dir=."
        ) from None
    except OSError as e:
        raise CheckpointDirError(
            f"fit: cannot write checkpoints to {folder}: {e.strerror or e} ({type(e).__name__}). "
            "Pass a checkpoint_dir= in a folder you can write to, or fix its permissions; nothing was trained."
        ) from None
    with held:
        with contextlib.suppress(OSError):  # only to name the holder in another fit's refusal
            path.write_text(f"{os.getpid()} {socket.gethostname()}\n")
        yield
