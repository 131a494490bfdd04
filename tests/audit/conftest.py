"""Fixtures of the audit-log tests: a key directory and a log factory (tmpfs: tests/conftest.py)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from servecore.audit import AuditConfig, ModelRef, inference_event
from servecore.audit.keys import keygen
from servecore.audit.log import AuditLog
from servecore.audit.records import parse_ts

MODEL = ModelRef("mlp", "1", "ab" * 32, "cd" * 32)


def event(i: int, **extra: Any) -> dict[str, Any]:
    """A small inference event with request id ``r<i>``."""
    return {**inference_event(request_id=f"r{i}", model=MODEL, status="ok",
                              latency_us={"total": 100 + i}), **extra}


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    keys = tmp_path / "keys"
    keygen(keys, now_us=parse_ts("2000-01-01T00:00:00Z"))  # valid for the fake clocks too
    return keys


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path / "log"


LogFactory = Callable[..., AuditLog]


@pytest.fixture
def open_log(log_dir: Path, key_dir: Path) -> Iterator[LogFactory]:
    """``open_log(**config)``: an AuditLog on ``log_dir``, closed after the test if still open."""
    opened: list[AuditLog] = []

    def make(clock_ns: Callable[[], int] | None = None, **options: Any) -> AuditLog:
        options.setdefault("directory", log_dir)
        options.setdefault("key_dir", key_dir)
        options.setdefault("fsync", "never")
        config = AuditConfig(**options)
        log = AuditLog(config) if clock_ns is None else AuditLog(config, clock_ns=clock_ns)
        opened.append(log)
        return log

    yield make
    for log in opened:
        log.close()


def write_records(log: AuditLog, n: int, start: int = 0) -> None:
    """Submit n events and wait until the last is written."""
    for i in range(start, start + n - 1):
        log.submit(event(i))
    log.submit_durable(event(start + n - 1)).result(timeout=30)


class FakeClock:
    """A settable wall clock (ns since the epoch) that ticks 1 µs per reading."""

    def __init__(self, start_ns: int) -> None:
        self.now = start_ns

    def __call__(self) -> int:
        self.now += 1000
        return self.now


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m servecore.audit_cli ARGS``."""
    return subprocess.run([sys.executable, "-m", "servecore.audit_cli", *args],
                          check=False, capture_output=True, text=True, cwd=cwd, timeout=120)
