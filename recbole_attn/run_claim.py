"""One run at a time per last checkpoint.

A run writes its last checkpoint (and the best-model file it points to)
after every epoch. A second run that went on from the same file at the
same time, say the same ``--resume=auto`` command started twice, would
write over the first one's files, and each would test whichever best model
was written last. So a run holds an advisory lock on
``<last checkpoint>.lock`` while it trains and tests; ``resume=auto``
skips a checkpoint whose lock is held and a named ``--resume`` of one is
refused. The operating system drops the lock when its process ends, even
when killed, so a crashed run never leaves a stale claim behind (the file
may stay; an unheld lock file claims nothing).

Where ``fcntl`` is missing (Windows), or the file system cannot lock (or
the folder is read-only), claims succeed without a lock: the run goes on
as it would have without this check, with a warning.
"""
from __future__ import annotations

import logging
import os
from types import ModuleType
from typing import Any

fcntl: ModuleType | None
try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK_SUFFIX = ".lock"
logger = logging.getLogger(__name__)


def lock_path(checkpoint: str | os.PathLike) -> str:
    return os.fspath(checkpoint) + LOCK_SUFFIX


class CheckpointClaim:
    """A held lock on one last checkpoint's lock file; :meth:`release` it
    when the run is over (it is also a context manager)."""

    def __init__(self, checkpoint: str | os.PathLike, fd: int | None) -> None:
        self.checkpoint, self._fd = os.fspath(checkpoint), fd

    def release(self) -> None:
        """Remove the lock file, then drop the lock (in that order, so that
        nobody can lock the file between the two and then lose it)."""
        if self._fd is None:
            return
        try:
            os.unlink(lock_path(self.checkpoint))
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> CheckpointClaim:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def claim(checkpoint: str | os.PathLike) -> CheckpointClaim | None:
    """Lock ``checkpoint``'s lock file for this process; None when another
    run holds it."""
    path = lock_path(checkpoint)
    if fcntl is None:
        return CheckpointClaim(checkpoint, None)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as error:  # a read-only folder: nothing can write this checkpoint's files anyway
            return _unlocked(checkpoint, error)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except OSError as error:  # a file system without locks (ENOLCK, ENOSYS)
            os.close(fd)
            return _unlocked(checkpoint, error)
        if _still_named(fd, path):
            return CheckpointClaim(checkpoint, fd)
        os.close(fd)  # its holder released it (and removed the file) while we opened it: try the new file


def _unlocked(checkpoint: str | os.PathLike, error: OSError) -> CheckpointClaim:
    logger.warning(f"cannot lock {lock_path(checkpoint)} ({error.strerror or error}): going on without "
                   f"the check that no other run writes {os.fspath(checkpoint)}")
    return CheckpointClaim(checkpoint, None)


def _still_named(fd: int, path: str) -> bool:
    """Whether the file locked through ``fd`` is still the one at ``path``."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False
