"""Write files and folders so that a crash leaves either the old version or the new one, never a mix:
write a temporary sibling (same file system), flush it to disk, then rename it into place."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = ["atomic_directory", "atomic_open", "atomic_write_text", "check_output"]

# mkstemp's files are owner-only; a saved model or log gets a new file's usual mode (os.umask is read by setting).
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; it replaces ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def check_output(path: str | os.PathLike[str], *, reads: tuple = (), folder_of: str | None = None) -> Path:
    """The one rule for a path a command writes, checked before any work: it is named, is not and does not lie inside
    anything the command ``reads``, and replaces nothing of the user's: a new file, or a new or empty folder, or one
    the same command made before (it holds ``folder_of``, e.g. run.json)."""
    if not str(path).strip():
        raise ValueError("the output path is empty; name a file or folder to write, e.g. --out runs/first")
    path, target = Path(path), Path(path).resolve()
    for source in (Path(r).resolve() for r in reads if r is not None and Path(r).exists()):
        if target.is_relative_to(source):
            where = "is" if target == source else f"lies inside {source}, which is"
            raise ValueError(f"{path} {where} what this command reads; write it elsewhere (another --out)")
    existing = next(p for p in (target, *target.parents) if p.exists())
    if existing != target and not existing.is_dir():
        raise NotADirectoryError(f"{path} cannot be written: {existing} is a file, not a folder; choose another path")
    if folder_of is None and (path.exists() or path.is_symlink()):
        raise FileExistsError(
            f"{path} exists; imgzoo writes a new file, never over one: delete it or choose another path"
        )
    if folder_of is not None and path.exists():
        if not path.is_dir():
            raise NotADirectoryError(f"{path} is a file, not a folder; choose a new or empty folder")
        if any(path.iterdir()) and not (path / folder_of).exists():
            raise FileExistsError(
                f"{path} holds files but no {folder_of}, so it is not a folder imgzoo made, and its files could be "
                "written over; choose a new or empty folder"
            )
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temporary sibling of ``path`` to fill; on success it replaces ``path`` whole: the old folder is
    renamed aside, the new one in, then the old one deleted (a crash between the renames leaves it whole in a hidden
    ``.NAME.*.old`` sibling), never a folder with files of both."""
    # abspath: "." and ".." name no sibling; a link is followed so the folder it points to is replaced.
    path = Path(path).resolve() if Path(path).is_symlink() else Path(os.path.abspath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        # mkdtemp makes an owner-only folder; give it the old folder's mode, or a new folder's.
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.is_dir() else 0o777 & ~_UMASK)
        _swap_in(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_in(new: Path, path: Path) -> None:
    if not path.exists():
        os.rename(new, path)
    else:
        old = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.old")
        os.rename(path, old)
        try:
            os.rename(new, path)
        except BaseException:
            os.rename(old, path)  # put the old version back rather than leave nothing
            raise
        shutil.rmtree(old, ignore_errors=True)
    with contextlib.suppress(OSError):  # make the renames durable (a no-op where folders cannot be opened: Windows)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    # What a killed save left: an .old copy is stale once a swap succeeds, a .tmp folder an hour after it was begun.
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*"):
        with contextlib.suppress(OSError):  # another process may remove it first
            if stale.suffix == ".old" or (stale.suffix == ".tmp" and time.time() - stale.stat().st_mtime > 3600):
                shutil.rmtree(stale)
