"""The audit log's options (one frozen object; the server builds it from its own options)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from servecore.errors import ConfigError

FsyncPolicy = Literal["always", "interval", "never"]
FailurePolicy = Literal["fail-closed", "fail-open"]


@dataclass(frozen=True, kw_only=True)
class AuditConfig:
    """Options of :class:`~servecore.audit.log.AuditLog`."""

    #: where the segments and ``checkpoints.jsonl`` go (created if missing)
    directory: Path
    #: the key directory made by ``servecore audit keygen`` (keep it away from the log)
    key_dir: Path
    #: ``always``: fsync each group commit before acknowledging it; ``interval``: every
    #: ``fsync_interval_s``; ``never``: leave it to the OS
    fsync: FsyncPolicy = "interval"
    fsync_interval_s: float = 1.0
    #: what a write failure or a full queue does: ``fail-closed`` refuses new records
    #: (:class:`~servecore.audit.errors.AuditUnavailableError`, 503) until a write succeeds;
    #: ``fail-open`` keeps accepting, counts the lost records and writes one ``audit_gap``
    on_failure: FailurePolicy = "fail-closed"
    #: records waiting for the writer at most
    queue_size: int = 65_536
    #: sign a checkpoint every this many records ...
    checkpoint_every: int = 10_000
    #: ... or this many seconds after the first unsigned record (and at rotation and close)
    checkpoint_interval_s: float = 60.0
    #: start a new segment past this size ...
    segment_max_bytes: int = 64 * 2**20
    #: ... and at each new UTC day
    rotate_daily: bool = True
    #: remove whole segments this many calendar months after their last record (0: never)
    retention_months: int = 6
    #: a second directory every checkpoint is appended to (another disk, a WORM mount)
    anchor_dir: Path | None = None
    #: how often a failed log tries writing again
    retry_interval_s: float = 1.0
    #: the log's name inside its checkpoints
    origin: str = "servecore"

    def __post_init__(self) -> None:
        if self.fsync not in ("always", "interval", "never"):
            raise ConfigError(f"audit fsync must be always, interval or never, not {self.fsync!r}")
        if self.on_failure not in ("fail-closed", "fail-open"):
            raise ConfigError(
                f"audit failure policy must be fail-closed or fail-open, not {self.on_failure!r}"
            )
        positive = {
            "queue_size": self.queue_size,
            "checkpoint_every": self.checkpoint_every,
            "segment_max_bytes": self.segment_max_bytes,
            "fsync_interval_s": self.fsync_interval_s,
            "checkpoint_interval_s": self.checkpoint_interval_s,
            "retry_interval_s": self.retry_interval_s,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ConfigError(f"audit {name} must be positive, not {value}")
        if self.retention_months < 0:
            raise ConfigError(f"audit retention_months must be >= 0, not {self.retention_months}")
