"""An append-only file that never keeps half a write.

:meth:`AppendFile.append` writes all of its data (looping over short writes) and optionally
fsyncs; if anything fails (``ENOSPC``, ``EIO``, a failed fsync) it cuts the file back to the
length it had before and re-raises, so a failed group commit leaves no torn record behind. The
next append cuts the file back again first should that have failed too.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (a created or removed file) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AppendFile:
    """One open append-only file and the length of its committed content."""

    def __init__(self, path: Path, *, durable_create: bool = True) -> None:
        self.path = path
        existed = path.exists()
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        self.size = os.fstat(self.fd).st_size
        self._dirty_tail = False
        if not existed and durable_create:
            fsync_dir(path.parent)

    def append(self, data: bytes, *, fsync: bool) -> None:
        """Append *data* entirely (and fsync when asked) or leave the file as it was."""
        try:
            if self._dirty_tail:
                os.ftruncate(self.fd, self.size)
                self._dirty_tail = False
            view = memoryview(data)
            while view:
                written = os.write(self.fd, view)
                view = view[written:]
            if fsync:
                os.fsync(self.fd)
        except OSError:
            self._dirty_tail = True
            try:
                os.ftruncate(self.fd, self.size)
                self._dirty_tail = False
            except OSError:
                pass
            raise
        self.size += len(data)

    def fsync(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
