"""One writer per log directory: an exclusive ``flock`` on ``DIR/.lock``, released by the kernel
when the process ends (also on SIGKILL), holding the owner's pid for error messages."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from servecore.audit.errors import AuditLogLockedError
from servecore.audit.records import LOCK_FILE


class DirectoryLock:
    """The writer's lock on a log directory."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK_FILE
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise AuditLogLockedError(
                f"the audit log {directory} is open for writing by process {owner}"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd >= 0:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = -1
