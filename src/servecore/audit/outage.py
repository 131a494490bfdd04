"""An outage of the log: records lost or refused since it last wrote, and its ``audit_gap``."""

from __future__ import annotations

from typing import Any

from servecore.audit.records import format_ts


class Outage:
    """Records lost or refused since the log last wrote successfully."""

    def __init__(self, since_us: int, reason: str, after_seq: int) -> None:
        self.since_us, self.reason, self.after_seq = since_us, reason, after_seq
        self.lost = self.refused = 0
        self.first_lost_us: int | None = None
        self.last_lost_us: int | None = None

    def lose(self, ts_us: int) -> None:
        self.lost += 1
        self.first_lost_us = ts_us if self.first_lost_us is None else self.first_lost_us
        self.last_lost_us = ts_us

    def absorb(self, later: Outage) -> None:
        self.lost += later.lost
        self.refused += later.refused
        if later.first_lost_us is not None:
            if self.first_lost_us is None:
                self.first_lost_us = later.first_lost_us
            self.last_lost_us = later.last_lost_us

    def record(self, policy: str, until_us: int) -> dict[str, Any]:
        def ts(us: int | None) -> str | None:
            return None if us is None else format_ts(us)

        return {
            "event": "audit_gap",
            "policy": policy,
            "reason": self.reason,
            "lost": self.lost,
            "refused": self.refused,
            "after_seq": self.after_seq if self.after_seq >= 0 else None,
            "since": ts(self.since_us),
            "until": ts(until_us),
            "first_lost": ts(self.first_lost_us),
            "last_lost": ts(self.last_lost_us),
        }
