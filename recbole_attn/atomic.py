"""Write-then-rename, the one way this package replaces a file: readers see
the old file or the whole new one, never a half-written one."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from recbole_attn.errors import UsageError


@contextmanager
def atomic_path(path: str | os.PathLike, exclusive: bool = False) -> Iterator[str]:
    """Yield a temp file name beside ``path``; when the block succeeds it is
    renamed over ``path`` (``exclusive``: linked to ``path``, which must not
    exist yet: :class:`FileExistsError`), when it fails it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make the file private to its writer
    try:
        yield tmp
        if exclusive:
            os.link(tmp, path)  # fails if path exists, unlike a rename
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def check_writable_dir(path: str | os.PathLike, what: str) -> None:
    """Raise ``UsageError`` now, not after hours of training, when files
    cannot be created under ``path``; nothing is left behind here (the
    folder itself is made when the first file is written)."""
    folder = Path(path).absolute()
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{what} {os.fspath(path)!r} cannot be created: {existing} is a file")
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=existing)
    except OSError as error:
        raise UsageError(f"{what} {os.fspath(path)!r} is not writable: {error.strerror or error}") from None
    os.close(fd)
    os.unlink(probe)
