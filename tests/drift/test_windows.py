"""Windows on both implementations: time and row windows, the ring, reports, worker merges."""

from __future__ import annotations

import math
import zlib
from typing import cast

import numpy as np
import pytest

from servecore.drift import DriftCore
from servecore.drift.errors import SnapshotError
from servecore.drift.profile import ReferenceProfile
from servecore.drift.snapshot import KIND_WINDOW, frame, unframe
from servecore.drift.types import NumericState
from servecore.drift.windows import DriftWindows, WindowState, merge_states

from .conftest import reference_columns


def batch(n: int, seed: int, shift: float = 0.0) -> dict[str, np.ndarray]:
    columns = reference_columns(n, seed)
    columns["x"] = columns["x"] + shift
    return columns


def state_fields(state: WindowState) -> dict[str, object]:
    """Everything exact about a window: rows, schema counters, every histogram's counters."""
    out: dict[str, object] = {"rows": state.rows, "schema": dict(state.schema)}
    for name, hist in state.states.items():
        fields = {
            "counts": hist.counts.tolist(),
            "n": hist.n,
            "null": hist.n_null,
            "wrong": hist.n_wrongtype,
        }
        if hasattr(hist, "edges"):
            h = cast(NumericState, hist)
            fields.update(nan=h.n_nan, pinf=h.n_pinf, ninf=h.n_ninf, min=h.min, max=h.max)
        out[name] = fields
    return out


def test_time_windows(profile: ReferenceProfile, core: DriftCore) -> None:
    w = DriftWindows(profile, window_seconds=60, core=core)
    assert w.observe(batch(500, 1), now=120.0) == []
    assert w.current.window_id == 2
    assert w.observe(batch(500, 2), now=179.9) == []
    reports = w.observe(batch(500, 3), now=180.0)
    assert [r.window_id for r in reports] == [2] and reports[0].rows == 1000
    assert w.current.window_id == 3 and w.current.rows == 500
    # a batch stamped earlier goes into the open window and is counted
    w.observe(batch(10, 4), now=100.0)
    assert w.current.schema["late_batch"] == 1 and w.current.rows == 510
    # a timer closes the window once its slot is over; an empty window is dropped
    assert w.poll(now=200.0) is None
    closed = w.poll(now=240.0)
    assert closed is not None and closed.window_id == 3
    assert w.poll(now=600.0) is None and w.observe(batch(5, 5), now=601.0) == []
    assert w.current.window_id == 10


def test_row_windows_split_batches(profile: ReferenceProfile, core: DriftCore) -> None:
    w = DriftWindows(profile, window_rows=400, core=core)
    reports = w.observe(batch(1000, 1))
    assert [(r.window_id, r.rows) for r in reports] == [(0, 400), (1, 400)]
    assert w.current.window_id == 2 and w.current.rows == 200
    # the three windows together hold exactly the batch
    total = w.sliding(2)
    total._add(w.current)
    whole = WindowState(profile, core=core)
    whole.update(batch(1000, 1))
    assert state_fields(total)["x"] == state_fields(whole)["x"]
    assert state_fields(total)["colour"] == state_fields(whole)["colour"]
    assert w.observe({k: v[:0] for k, v in batch(3, 1).items()}) == []


def test_time_and_rows(profile: ReferenceProfile, core: DriftCore) -> None:
    w = DriftWindows(profile, window_seconds=10, window_rows=300, core=core)
    assert [r.window_id for r in w.observe(batch(700, 1), now=5.0)] == [0, 1]
    assert [r.rows for r in w.observe(batch(10, 2), now=15.0)] == [100]
    assert w.current.window_id == 3 and w.current.rows == 10


def test_ring_keeps_r_windows(profile: ReferenceProfile, core: DriftCore) -> None:
    w = DriftWindows(profile, window_rows=100, ring=3, core=core)
    w.observe(batch(1000, 1))
    assert [r.window_id for _, r in w.closed] == [7, 8, 9]
    assert w.sliding(10).rows == 300 and w.sliding(2).rows == 200
    with pytest.raises(ValueError, match="no closed window"):
        DriftWindows(profile, window_rows=5, core=core).sliding(1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "window_seconds, window_rows or both"),
        ({"window_seconds": 0}, "positive"),
        ({"window_rows": 0}, "positive int"),
        ({"window_rows": 5, "ring": 0}, "ring"),
    ],
)
def test_window_arguments(profile: ReferenceProfile, kwargs: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match=message):
        DriftWindows(profile, **kwargs)


def test_workers_merge_to_one_process(profile: ReferenceProfile, core: DriftCore) -> None:
    """Three workers' snapshots, loaded and summed, equal one process fed every row."""
    data = batch(30_000, 7, shift=0.2)
    data["x"][::97] = np.nan
    single = DriftWindows(profile, window_seconds=60, core=core)
    workers = [DriftWindows(profile, window_seconds=60, core=core) for _ in range(3)]
    for i, start in enumerate(range(0, 30_000, 1000)):
        piece = {k: v[start : start + 1000] for k, v in data.items()}
        single.observe(piece, now=61.0)
        workers[i % 3].observe(piece, now=61.0 + i)
    snapshots = [w.current.to_bytes() for w in workers]
    loaded = [WindowState.from_bytes(s, profile, core=core) for s in snapshots]
    merged = merge_states(loaded)
    assert merged.window_id == single.current.window_id == 1
    assert state_fields(merged) == state_fields(single.current)
    for name in ("x", "y"):
        a, b = merged.states[name], single.current.states[name]
        assert a.mean == pytest.approx(b.mean, rel=1e-9)  # type: ignore[union-attr]
        assert a.m2 == pytest.approx(b.m2, rel=1e-9)  # type: ignore[union-attr]
    # the aggregator's verdict is the single process's
    aggregator = DriftWindows(profile, window_seconds=60, core=core)
    merged_report, single_report = aggregator.evaluate(merged), single.close()
    for fa, fb in zip(merged_report.features, single_report.features):
        assert (fa.status, fa.n, fa.counts, fa.p_value, fa.psi, fa.js) == (
            fb.status,
            fb.n,
            fb.counts,
            fb.p_value,
            fb.psi,
            fb.js,
        )
    assert merged_report.feature("x").status == "drift"


def test_merge_checks(profile: ReferenceProfile, core: DriftCore) -> None:
    a, b = (
        WindowState(profile, core=core, window_id=1),
        WindowState(profile, core=core, window_id=2),
    )
    with pytest.raises(ValueError, match="cannot merge window 2 into 1"):
        a.merge(b)
    other = ReferenceProfile(profile.features[:2])
    with pytest.raises(ValueError, match="different reference profiles"):
        a.merge(WindowState(other, core=core, window_id=1))
    with pytest.raises(ValueError, match="at least one"):
        merge_states([])


def test_snapshot_rejections(profile: ReferenceProfile, core: DriftCore) -> None:
    state = WindowState(profile, core=core, window_id=5)
    state.update(batch(200, 1))
    data = state.to_bytes()
    assert state_fields(WindowState.from_bytes(data, profile, core=core)) == state_fields(state)
    flipped = bytearray(data)
    flipped[40] ^= 1
    with pytest.raises(SnapshotError, match="CRC32"):
        WindowState.from_bytes(bytes(flipped), profile, core=core)
    with pytest.raises(SnapshotError, match="torn"):
        WindowState.from_bytes(data[:-9], profile, core=core)
    with pytest.raises(SnapshotError, match="truncated"):
        WindowState.from_bytes(data[:10], profile, core=core)
    versioned = bytearray(data[:-4])
    versioned[4] = 9
    with pytest.raises(SnapshotError, match="format version 9"):
        WindowState.from_bytes(_reframe(bytes(versioned)), profile, core=core)
    other = ReferenceProfile(profile.features[:3])
    with pytest.raises(SnapshotError, match="reference profile"):
        WindowState.from_bytes(data, other, core=core)
    # a histogram of another layout inside a snapshot that claims this profile
    state.states["x"] = core.NumericHistogram(np.array([0.0, 1.0]))
    with pytest.raises(SnapshotError, match="feature 'x': edges differ"):
        WindowState.from_bytes(state.to_bytes(), profile, core=core)
    # a body that is cut short inside a valid frame
    body = bytes(unframe(data, KIND_WINDOW))
    with pytest.raises(SnapshotError, match="too short"):
        WindowState.from_bytes(frame(KIND_WINDOW, body[:-7]), profile, core=core)


def _reframe(head_and_body: bytes) -> bytes:
    """Recompute the CRC of a frame whose header was edited (so only the edit is wrong)."""
    return head_and_body + zlib.crc32(head_and_body).to_bytes(4, "little")


def test_report_contents(profile: ReferenceProfile, core: DriftCore) -> None:
    w = DriftWindows(profile, window_rows=2000, core=core)
    data = batch(2000, 9)
    data["x"][:10] = np.nan
    report = w.observe(data)[0]
    assert report.profile_sha256 == profile.sha256 and report.alpha_per_feature == 0.05 / 4
    x = report.feature("x")
    assert x.kind == "numeric" and x.n == 1990 and x.n_min == 320 and x.status == "ok"
    assert x.counters["n_nan"] == 10 and x.missing.current == pytest.approx(10 / 2000)
    assert x.ks is not None and x.wasserstein is not None and x.psi.smoothing == 0.5
    assert x.mean == pytest.approx(float(np.nanmean(data["x"])), rel=1e-9)
    assert x.std == pytest.approx(float(np.nanstd(data["x"], ddof=1)), rel=1e-9)
    colour = report.feature("colour")
    assert colour.kind == "categorical" and colour.ks is None and colour.unseen_share == 0.0
    assert colour.n_min == 100 and len(colour.counts) == 5
    assert report.drifted == () and report.alerts == () and report.drifted_share == 0.0
    with pytest.raises(KeyError):
        report.feature("nope")
    assert not math.isnan(x.p_value)
