"""One fit per checkpoint folder, and a folder that can be written, both known before training starts.

Two runs writing ``last.pt`` in the same folder overwrite each other's checkpoints, and a
resume then continues a mixture of both. fit holds an OS file lock on ``fit.lock`` in the folder
for the whole run, with its process id and host in the file so that a refusal can name the
holder. The OS drops the lock when its process ends, however it ends, so a lock file left by a
killed run is simply taken over. Creating the lock file is also the test that the folder can be
written: a read-only or misnamed folder fails here, not after the first epoch's work.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

__all__ = ["LOCK_NAME", "CheckpointDirError", "lock_checkpoint_dir"]

LOCK_NAME = "fit.lock"

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]
    import msvcrt


class CheckpointDirError(RuntimeError):
    """A checkpoint_dir that cannot be written, or that another fit is writing."""


def _try_lock(fd: int) -> bool:
    """Take the OS lock on ``fd`` without waiting; False if another process holds it."""
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


def _unlock(fd: int) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
    else:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


def _open_lock(folder: Path) -> int:
    """Create the folder and open its lock file; a folder that cannot be written is refused here."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise CheckpointDirError(
            f"fit: cannot write checkpoints to {folder}: {e.strerror or e} ({type(e).__name__}). "
            "Pass a checkpoint_dir= in a folder you can write to, or fix its permissions; nothing was trained."
        ) from None


def _holder(path: Path) -> str:
    text = path.read_text(errors="replace").split() if path.exists() else []
    return f"process {text[0]} on {text[1]}" if len(text) >= 2 else "another process"


def _acquire(folder: Path) -> int:
    """The open, locked lock file. Retried when the file was replaced while we waited for it."""
    path = folder / LOCK_NAME
    for _ in range(10):
        fd = _open_lock(folder)
        if not _try_lock(fd):
            os.close(fd)
            raise CheckpointDirError(
                f"fit: {folder} is in use by another fit ({_holder(path)}, see {path}); two runs writing the "
                "same checkpoints would overwrite each other's. Wait for that run to end, or pass another "
                "checkpoint_dir=."
            )
        # A holder that released and deleted the file between our open and our lock leaves us a lock
        # on a file no one else will open: lock the file that is at the path now instead.
        if path.exists() and os.path.samestat(os.fstat(fd), os.stat(path)):
            return fd
        os.close(fd)
    raise CheckpointDirError(f"fit: could not lock {path}: it keeps being replaced; is another fit starting there?")


@contextlib.contextmanager
def lock_checkpoint_dir(folder: str | os.PathLike[str] | None) -> Iterator[None]:
    """Hold ``folder``'s lock for the body; None (no checkpoints) locks nothing."""
    if folder is None:
        yield
        return
    folder = Path(folder)
    fd = _acquire(folder)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        yield
    finally:
        # While still locked, so that a waiting process retries on a new file. Windows cannot delete an
        # open file: the lock file stays there, unlocked, and the next fit simply takes it.
        with contextlib.suppress(OSError):
            os.unlink(folder / LOCK_NAME)
        _unlock(fd)
        os.close(fd)
