#!/usr/bin/env python
"""Dynamic batching, measured end to end: servecore with batching off and on, against onnxruntime.

Measures, in one run and on the same machine:

* ``heavy``  -- ``benchmarks/models.py``'s heavy MLP (FP32[batch,512] -> 4 x 1024 ReLU -> 10),
                served by ``servecore serve`` with batching off (``--max-batch-size 0``) and on
                (``--max-batch-size 64 --max-queue-delay-us 2000`` by default), loaded by
                ``wrk -t1 -cN`` (N = 1, 16, 64) with 1-row JSON requests. For every point the
                model's statistics (``GET /v2/models/heavy/stats``) are read before and after, so
                the mean batch size the server formed is ``Δinference_count / Δexecution_count``
                over exactly that point.
* ``ort``    -- raw onnxruntime, in-process, pinned to the server's core with the server's thread
                settings, at every mean batch size the server achieved (rounded; always 1): the
                samples per second the model itself can do at that batch size. Each batching
                point on the heavy model also gets one measured beside it, right after its load
                with the server idle, at its own mean batch; the 70 % target uses that one (the
                shared hosts this runs on drift by tens of per cent within minutes).
* ``asgi``   -- batching on with ``--no-fast-path``: every request through the ASGI app, the
                fast path's baseline in the same run (``--modes`` picks among off, on, asgi).
* ``small``  -- the demo MLP (FP32[batch,64] -> 256 -> 10) at concurrency 1, batching off vs on
                (on: the same batch size, ``--max-queue-delay-us 0`` by default): what batching
                costs a request that has nobody to wait for.
* ``gather`` -- a micro-benchmark of :func:`servecore.batching.gather.gather` (pure-Python twin)
                against the compiled one and ``np.concatenate``: 64 FP32[1,512] rows, and 64
                FP32[1,L] rows of random L padded to the longest.

Targets (reported, not enforced): at c=64 on the heavy model batching on answers >= 4x the requests
per second of batching off, and >= 70 % of raw onnxruntime's samples per second at the achieved
mean batch size; on the small MLP at c=1 the p50 with batching on is within 50 µs of off; zero
errors everywhere.

The HTTP plumbing (server processes, wrk and its Lua script, taskset pinning, answer checks) is
``bench_http.py``'s. Writes ``benchmarks/results/batching.md`` and ``batching.json``::

    python benchmarks/bench_batching.py                    # everything, 10 s per point
    python benchmarks/bench_batching.py -d 3 --warmup 1    # quicker
    python benchmarks/bench_batching.py --modes off        # harness only: no batching options
    python benchmarks/bench_batching.py --max-batch-size 32 --max-queue-delay-us 500
    python benchmarks/bench_batching.py --env SERVECORE_PURE_PYTHON=1
    python benchmarks/bench_batching.py --micro-only       # just the gather micro-benchmark
    python benchmarks/bench_batching.py --server-cpus 0,1 --model-cpus 0   # model and loop on own cores
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import timeit
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

# The HTTP harness this benchmark reuses, and the models (both beside this file).
import bench_http as bh
from bench_http import HOST, BenchError, Server

from models import HEAVY_FEATURES, build_heavy, build_small

ROOT = HERE.parent
HEAVY, SMALL = "heavy", "mlp"  # model names (the files' stems)
FEATURES = {HEAVY: HEAVY_FEATURES, SMALL: 64}
#: off: no batching; on: batching (with the fast path when servecore has one); asgi: batching with
#: ``--no-fast-path``, every request through the ASGI app (the fast path's baseline, same run)
ALL_MODES = ("off", "on", "asgi")
#: servecore serve options this benchmark passes (detected in ``serve --help``)
BATCH_OPTIONS = (
    "--max-batch-size",
    "--max-queue-delay-us",
    "--preferred-batch-sizes",
    "--max-queue-size",
    "--instances",
    "--default-timeout-us",
    "--no-fast-path",
)
#: pause before reading statistics, so that requests still in flight when wrk stops are counted
STATS_SETTLE_S = 0.25
TARGET_ON_OFF = 4.0
TARGET_VS_ORT = 0.70
TARGET_P50_US = 50.0


def log(msg: str) -> None:
    print(f"[bench_batching] {msg}", file=sys.stderr, flush=True)


def infer_path(model: str) -> str:
    return f"/v2/models/{model}/infer"


# --------------------------------------------------------------------------------------------
# servecore: options and statistics


def serve_help(argv: list[str], env: dict[str, str]) -> str:
    """``servecore serve ... --help`` (click answers --help before anything else)."""
    try:
        p = subprocess.run(
            [*argv, "--help"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BenchError(f"could not run {argv[0]} serve --help: {e}") from None
    if p.returncode != 0:
        raise BenchError(f"`serve --help` failed (status {p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p.stdout


def supported_options(help_text: str) -> set[str]:
    words = set(help_text.replace(",", " ").replace("/", " ").split())
    return {opt for opt in BATCH_OPTIONS if opt in words}


def fetch_stats(port: int, model: str) -> dict[str, Any] | None:
    """The model's entry of ``GET /v2/models/{model}/stats``, or None when there is none."""
    url = f"http://{HOST}:{port}/v2/models/{model}/stats"
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            doc = json.loads(r.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None
    entries = doc.get("model_stats") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not entries or not isinstance(entries[0], dict):
        return None
    entry = entries[0]
    if not isinstance(entry.get("inference_count"), int) or not isinstance(
        entry.get("execution_count"), int
    ):
        return None
    return entry


def _histogram(entry: dict[str, Any]) -> dict[int, int]:
    hist: dict[int, int] = {}
    for b in entry.get("batch_stats") or []:
        try:
            hist[int(b["batch_size"])] = int(b["compute_infer"]["count"])
        except (KeyError, TypeError, ValueError):
            continue
    return hist


def stats_delta(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, Any]:
    """Executions, inferences, mean batch size and batch-size histogram between two readings."""
    if before is None or after is None:
        return {"available": False}
    inferences = after["inference_count"] - before["inference_count"]
    executions = after["execution_count"] - before["execution_count"]
    h0, h1 = _histogram(before), _histogram(after)
    hist = {size: h1[size] - h0.get(size, 0) for size in sorted(h1) if h1[size] - h0.get(size, 0)}
    return {
        "available": True,
        "inference_count": inferences,
        "execution_count": executions,
        "mean_batch_size": inferences / executions if executions else None,
        "batch_size_histogram": hist,
    }


def batching_args(args: argparse.Namespace, *, mode: str, model: str, supported: set[str]) -> list[str]:
    """The servecore options of one server: batching off or on, as far as servecore knows them."""
    if mode == "off":
        return ["--max-batch-size", "0"] if "--max-batch-size" in supported else []
    if mode == "asgi" and "--no-fast-path" not in supported:
        raise BenchError("this servecore has no --no-fast-path option: leave 'asgi' out of --modes")
    delay = args.max_queue_delay_us if model == HEAVY else args.small_max_queue_delay_us
    wanted = [("--max-batch-size", args.max_batch_size), ("--max-queue-delay-us", delay)]
    optional = [
        ("--preferred-batch-sizes", args.preferred_batch_sizes),
        ("--max-queue-size", args.max_queue_size),
        ("--instances", args.instances),
        ("--default-timeout-us", args.default_timeout_us),
    ]
    wanted += [(opt, value) for opt, value in optional if value is not None]
    missing = [opt for opt, _ in wanted if opt not in supported]
    if missing:
        raise BenchError(
            f"this servecore does not accept {', '.join(missing)} (not in `servecore serve "
            "--help`): dynamic batching is not available in it yet, so batching cannot be "
            "turned on. Run `--modes off` to exercise the harness without batching."
        )
    return [a for opt, value in wanted for a in (opt, str(value))] + (["--no-fast-path"] if mode == "asgi" else [])


# --------------------------------------------------------------------------------------------
# gather micro-benchmark


def bench_gather(repeat: int = 7, seed: int = 0) -> list[dict[str, Any]]:
    """µs per call of gather (pure, compiled) and numpy equivalents, best of *repeat* runs."""
    from servecore.batching import gather as pure

    try:
        from servecore._native import gather as native
    except ImportError:
        native = None  # type: ignore[assignment]
    rng = np.random.default_rng(seed)
    rows = [rng.standard_normal((1, 512)).astype(np.float32) for _ in range(64)]
    out = np.empty((64, 512), np.float32)
    lengths = rng.integers(1, 513, 64)
    ragged = [rng.standard_normal((1, int(n))).astype(np.float32) for n in lengths]
    width = int(lengths.max())
    padded_out = np.empty((64, width), np.float32)

    def pad_concat() -> np.ndarray:
        return np.concatenate([np.pad(a, ((0, 0), (0, width - a.shape[1]))) for a in ragged])

    def time_us(fn: Any) -> float:
        t = timeit.Timer(fn)
        number, _ = t.autorange()
        return min(t.repeat(repeat=repeat, number=number)) / number * 1e6

    cases: list[tuple[str, list[tuple[str, Any]]]] = [
        (
            "64 x FP32[1,512]",
            [
                ("python", lambda: pure.gather(rows, out)),
                ("native", (lambda: native.gather(rows, out)) if native else None),
                ("np.concatenate", lambda: np.concatenate(rows, out=out)),
            ],
        ),
        (
            f"64 x FP32[1,L], L random in 1..512, padded to {width}",
            [
                ("python", lambda: pure.gather(ragged, padded_out)),
                ("native", (lambda: native.gather(ragged, padded_out)) if native else None),
                ("np.pad + np.concatenate", pad_concat),
            ],
        ),
    ]
    results = []
    for case, fns in cases:
        timings = {name: (time_us(fn) if fn is not None else None) for name, fn in fns}
        results.append({"case": case, "us": timings})
    return results


def gather_table(micro: list[dict[str, Any]]) -> str:
    lines = [
        "| case | python µs | native µs | numpy µs (what) | native vs python | native vs numpy |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for r in micro:
        us = r["us"]
        numpy_name = next(k for k in us if k not in ("python", "native"))
        py, nat, npy = us["python"], us["native"], us[numpy_name]
        def fmt(v: float | None) -> str:
            return f"{v:,.2f}" if v is not None else "not built"

        lines.append(
            f"| {r['case']} | {fmt(py)} | {fmt(nat)} | {npy:,.2f} ({numpy_name}) "
            f"| {f'{py / nat:.1f}x' if nat else '—'} | {f'{npy / nat:.1f}x' if nat else '—'} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# report


def _fmt(v: float | None, digits: int = 0) -> str:
    return "—" if v is None else f"{v:,.{digits}f}"


def ort_at(results: dict[str, Any], mean: float | None) -> dict[str, Any] | None:
    if mean is None:
        return None
    return results["ort"].get(str(max(1, round(mean))))


def ort_point(model: Path, batch: int, core: int | None, args: argparse.Namespace, threads: int | None) -> dict[str, Any]:
    """Raw onnxruntime on the heavy model at *batch* rows per call: ``bench_ort``'s result plus
    ``batch`` and ``samples_per_s``."""
    x = np.random.default_rng(batch).standard_normal((batch, HEAVY_FEATURES)).astype(np.float32)
    r = bh.bench_ort(model, x, core, args.ort_duration, 1.0, intra_op_threads=threads)
    r["batch"] = batch
    r["samples_per_s"] = r["calls_per_s"] * batch
    return r


def ort_reference(results: dict[str, Any], point: dict[str, Any]) -> dict[str, Any] | None:
    """The raw onnxruntime figure a heavy point is compared with: the one measured beside it
    when there is one, else the end-of-run one at its mean batch size."""
    return point.get("ort_beside") or ort_at(results, point["stats"].get("mean_batch_size"))


def find_point(results: dict[str, Any], model: str, mode: str, c: int) -> dict[str, Any] | None:
    run = results["runs"].get(f"{model}-{mode}")
    if run is None:
        return None
    return next((p for p in run["points"] if p["concurrency"] == c), None)


def build_table(results: dict[str, Any]) -> str:
    lines = [
        (
            "| model | batching | concurrency | req/s | p50 µs | p99 µs | errors | mean batch "
            "| on / off | vs raw ORT at that batch (end of run; beside the point) |"
        ),
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for run in results["runs"].values():
        model, mode = run["model"], run["mode"]
        for p in run["points"]:
            c, rps, lat = p["concurrency"], p["requests_per_s"], p["latency_us"]
            mean = p["stats"].get("mean_batch_size")
            ratio = "—"
            off = find_point(results, model, "off", c) if mode != "off" else None
            if off is not None:
                ratio = f"{rps / off['requests_per_s']:.2f}×"
                if model == SMALL:
                    ratio += f" (p50 {lat['p50'] - off['latency_us']['p50']:+,.0f} µs)"
            elif mode == "off":
                ratio = "1.00 (baseline)"
            vs_ort = "—"
            ort = ort_at(results, mean) if model == HEAVY else None
            if ort is not None:
                vs_ort = (
                    f"{rps / ort['samples_per_s']:.2f} of {ort['samples_per_s']:,.0f}/s "
                    f"@ batch {ort['batch']}"
                )
            beside = p.get("ort_beside")
            if beside is not None:
                vs_ort += f"; beside it {rps / beside['samples_per_s']:.2f} of {beside['samples_per_s']:,.0f}/s"
            lines.append(
                f"| {model} | {run['label']} | {c} | {_fmt(rps)} | {lat['p50']:,} | {lat['p99']:,} "
                f"| {p['errors_total']} | {_fmt(mean, 1)} | {ratio} | {vs_ort} |"
            )
    return "\n".join(lines)


def ort_table(results: dict[str, Any]) -> str:
    lines = [
        "| raw onnxruntime (heavy) | calls/s | samples/s | p50 µs per call | p99 µs per call |",
        "|---|---:|---:|---:|---:|",
    ]
    for b, r in sorted(results["ort"].items(), key=lambda kv: int(kv[0])):
        lines.append(
            f"| batch {b} | {r['calls_per_s']:,.0f} | {r['samples_per_s']:,.0f} "
            f"| {r['latency_us']['p50']:,.0f} | {r['latency_us']['p99']:,.0f} |"
        )
    return "\n".join(lines)


def check_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    targets = []
    top = max(results["meta"]["concurrency"])
    on, off = find_point(results, HEAVY, "on", top), find_point(results, HEAVY, "off", top)
    if on and off:
        got = on["requests_per_s"] / off["requests_per_s"]
        targets.append({
            "target": f"heavy, c={top}: batching on ≥ {TARGET_ON_OFF:g}× batching off req/s",
            "measured": f"{got:.2f}×", "met": got >= TARGET_ON_OFF,
        })
    if on:
        mean = on["stats"].get("mean_batch_size")
        ort = ort_reference(results, on)
        if ort is not None:
            got = on["requests_per_s"] / ort["samples_per_s"]
            where = "measured beside the point" if "ort_beside" in on else "measured at the end of the run"
            targets.append({
                "target": f"heavy, c={top}: batching on ≥ {TARGET_VS_ORT:.0%} of raw onnxruntime "
                f"samples/s at the achieved mean batch size",
                "measured": f"{got:.0%} ({on['requests_per_s']:,.0f} vs {ort['samples_per_s']:,.0f}"
                f"/s at batch {ort['batch']}, {where}; mean batch {mean:.1f})",
                "met": got >= TARGET_VS_ORT,
            })
        else:
            targets.append({
                "target": f"heavy, c={top}: ≥ {TARGET_VS_ORT:.0%} of raw onnxruntime",
                "measured": "no mean batch size (statistics unavailable)", "met": None,
            })
    s_on, s_off = find_point(results, SMALL, "on", 1), find_point(results, SMALL, "off", 1)
    if s_on and s_off:
        d = s_on["latency_us"]["p50"] - s_off["latency_us"]["p50"]
        targets.append({
            "target": f"small MLP, c=1: p50 with batching on within {TARGET_P50_US:g} µs of off",
            "measured": f"{d:+,.0f} µs ({s_on['latency_us']['p50']:,} vs "
            f"{s_off['latency_us']['p50']:,} µs)",
            "met": d <= TARGET_P50_US,
        })
    errors = sum(p["errors_total"] for run in results["runs"].values() for p in run["points"])
    targets.append({"target": "zero errors", "measured": str(errors), "met": errors == 0})
    return targets


def render_markdown(results: dict[str, Any]) -> str:
    m = results["meta"]
    out = ["# Dynamic batching", ""]
    if results["runs"]:
        if m["server_core"] is None:
            pin = "not pinned"
        elif m.get("server_cpus"):
            pin = (
                f"servecore on CPUs {m['server_cpus']} (model threads on {m.get('model_cpus') or 'any of them'}), "
                f"raw onnxruntime on core {m['server_core']}, wrk on core {m['client_core']}"
            )
        else:
            pin = f"server and raw onnxruntime on core {m['server_core']}, wrk on core {m['client_core']}"
        on_args = " ".join(results["on_args"].get(HEAVY, [])) or "(not run)"
        small_args = " ".join(results["on_args"].get(SMALL, [])) or "(not run)"
        out += [
            f"- date: {m['date']}; host: {m['cpu']} ({m['nproc']} cores visible); {pin}",
            (
                f"- requests: 1-row {m.get('encoding', 'JSON')}, heavy FP32[1,{HEAVY_FEATURES}] "
                f"({m['body_bytes'][HEAVY]} B), small FP32[1,64]; wrk `-t1 -cN`, "
                f"{m['duration_s']:g} s per point after a {m['warmup_s']:g} s discarded warm-up; "
                f"{m['wrk_version']}"
            ),
            (
                f"- batching on (heavy): `{on_args}`; small MLP: `{small_args}`; "
                f"`--intra-op-threads {m['intra_op_threads']}` everywhere"
            ),
            (
                "- mean batch = Δinference_count / Δexecution_count of "
                "`GET /v2/models/{m}/stats` over each measured point"
            ),
            (
                f"- python {m['python']}, onnxruntime {m['onnxruntime']}, servecore core: "
                f"{m['servecore_env'] or 'default (native when built)'}"
            ),
            "",
            build_table(results),
            "",
        ]
        if results["ort"]:
            out += [ort_table(results), ""]
        out += ["Targets:", ""]
        for t in results["targets"]:
            mark = {True: "met", False: "**not met**", None: "unknown"}[t["met"]]
            out.append(f"- {t['target']}: {t['measured']} — {mark}")
        out.append("")
        hist_lines = []
        for run in results["runs"].values():
            for p in run["points"]:
                hist = p["stats"].get("batch_size_histogram")
                if run["mode"] == "on" and hist:
                    top = sorted(hist.items(), key=lambda kv: -kv[1])[:6]
                    shown = ", ".join(f"{size}: {count}" for size, count in top)
                    hist_lines.append(f"- {run['model']} c={p['concurrency']}: {shown}")
        if hist_lines:
            out += ["Most frequent batch sizes (rows: executions):", "", *hist_lines, ""]
    if results["notes"]:
        out += ["Notes:", "", *[f"- {n}" for n in results["notes"]], ""]
    if results.get("gather"):
        out += ["## gather micro-benchmark (µs per call, best of 7)", "", gather_table(results["gather"]), ""]
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("-c", "--concurrency", default="1,16,64", help="wrk connections on the heavy model (1,16,64)")
    ap.add_argument("-d", "--duration", type=int, default=10, help="whole seconds per point (10)")
    ap.add_argument("--warmup", type=int, default=2, help="discarded warm-up whole seconds, 0 for none (2)")
    ap.add_argument(
        "--modes", default="off,on,asgi",
        help="any of off, on, asgi (batching on with --no-fast-path), comma-separated (default all three)",
    )
    ap.add_argument("--max-batch-size", type=int, default=64, help="batching on: rows per batch (64)")
    ap.add_argument("--max-queue-delay-us", type=int, default=2000, help="batching on, heavy model (2000)")
    ap.add_argument(
        "--small-max-queue-delay-us", type=int, default=0,
        help="batching on, small-MLP latency check (0: a lone request is not held back)",
    )
    ap.add_argument("--preferred-batch-sizes", default=None, help="passed through when given")
    ap.add_argument("--max-queue-size", type=int, default=None, help="passed through when given")
    ap.add_argument("--instances", type=int, default=None, help="passed through when given")
    ap.add_argument("--default-timeout-us", type=int, default=None, help="passed through when given")
    ap.add_argument(
        "--intra-op-threads", type=int, default=1,
        help="onnxruntime threads per operator, for the server and raw onnxruntime alike "
        "(1: the server owns one core; 0: onnxruntime's default)",
    )
    ap.add_argument(
        "--binary", action="store_true",
        help="send the input as binary tensor data (perf_analyzer's default) instead of JSON numbers",
    )
    ap.add_argument("--skip-small", action="store_true", help="leave out the small-MLP check")
    ap.add_argument("--skip-micro", action="store_true", help="leave out the gather micro-benchmark")
    ap.add_argument("--micro-only", action="store_true", help="only the gather micro-benchmark")
    ap.add_argument("--ort-duration", type=float, default=3.0, help="seconds per raw onnxruntime batch size (3)")
    ap.add_argument(
        "--servecore-cmd", default=None,
        help="command that starts servecore, as in bench_http.py (default: this venv's servecore)",
    )
    ap.add_argument(
        "--env", action="append", default=[], metavar="KEY=VALUE",
        help="extra environment for servecore (repeatable), e.g. SERVECORE_PURE_PYTHON=1",
    )
    ap.add_argument("--server-core", type=int, default=0, help="CPU for the server / onnxruntime (0)")
    ap.add_argument("--client-core", type=int, default=1, help="CPU for wrk (1)")
    ap.add_argument(
        "--server-cpus", default=None,
        help="CPUs (taskset list) for the servecore processes instead of --server-core, e.g. 0,1 "
        "(raw onnxruntime stays on --server-core)",
    )
    ap.add_argument(
        "--model-cpus", default=None,
        help="passed to every servecore server (off and on alike): model threads on these CPUs, "
        "the event loop on the others of --server-cpus",
    )
    ap.add_argument("--no-pin", action="store_true", help="do not use taskset")
    ap.add_argument("--startup-timeout", type=float, default=120.0)
    ap.add_argument("--out-dir", type=Path, default=HERE / "results")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - set(ALL_MODES):
        raise BenchError(f"--modes: choose from {','.join(ALL_MODES)}, got {args.modes!r}")
    concurrencies = [int(c) for c in args.concurrency.split(",") if c.strip()]
    if args.duration < 1 or args.warmup < 0 or not concurrencies or min(concurrencies) < 1:
        raise BenchError("need --duration >= 1, --warmup >= 0 and concurrencies >= 1")
    if args.max_batch_size < 1:
        raise BenchError("--max-batch-size is the batch size with batching on: at least 1")
    extra_env = bh.parse_env(args.env)
    results: dict[str, Any] = {"runs": {}, "ort": {}, "notes": [], "on_args": {}, "targets": []}

    if not args.skip_micro:
        log("gather micro-benchmark")
        results["gather"] = bench_gather()
        for r in results["gather"]:
            log(f"  {r['case']}: " + ", ".join(
                f"{k} {v:.2f} µs" for k, v in r["us"].items() if v is not None))
    if args.micro_only:
        md = render_markdown(results | {"meta": {}})
        print(md)
        return 0

    wrk = shutil.which("wrk")
    if wrk is None:
        raise BenchError("wrk is not installed (e.g. `apt-get install -y wrk`); it drives the load.")
    if args.no_pin:
        server_core = client_core = None
    else:
        server_core, client_core = args.server_core, args.client_core
        allowed = os.sched_getaffinity(0)
        for name, core in (("--server-core", server_core), ("--client-core", client_core)):
            if core not in allowed:
                raise BenchError(f"{name} {core} is not among usable CPUs {sorted(allowed)}")
        if shutil.which("taskset") is None:
            raise BenchError("taskset (util-linux) is missing; install it or pass --no-pin")

    import onnxruntime

    threads = args.intra_op_threads if args.intra_op_threads > 0 else None
    tmp = Path(tempfile.mkdtemp(prefix="bench_batching_"))
    live: list[Server] = []

    def on_sigterm(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        models = {HEAVY: build_heavy(tmp / f"{HEAVY}.onnx"), SMALL: build_small(tmp / f"{SMALL}.onnx")}
        rng = np.random.default_rng(0)
        inputs = {m: rng.standard_normal((1, f)).astype(np.float32) for m, f in FEATURES.items()}
        header_lengths: dict[str, int | None] = {m: None for m in inputs}
        if args.binary:
            bodies = {}
            for m, x in inputs.items():
                bodies[m], header_lengths[m] = bh.make_binary_body(x)
        else:
            bodies = {m: bh.make_body(x) for m, x in inputs.items()}
        body_files = {}
        for m, body in bodies.items():
            body_files[m] = tmp / f"{m}.json"
            body_files[m].write_bytes(body)
        expect = {
            m: np.asarray(bh.ort_session(models[m], intra_op_threads=threads).run(
                ["logits"], {"input": inputs[m]})[0])
            for m in models
        }

        server_env = {**os.environ, **extra_env}
        help_text = serve_help(bh.servecore_argv(args.servecore_cmd, models[HEAVY], 0), server_env)
        supported = supported_options(help_text)
        thread_args = (
            ["--intra-op-threads", str(args.intra_op_threads)]
            if "--intra-op-threads" in help_text.split() else []
        )
        if "--max-batch-size" not in supported:
            results["notes"].append(
                "this servecore has no `--max-batch-size` option (no dynamic batching yet): the "
                "'off' servers ran without it, which is the only behaviour it has"
            )
            log(results["notes"][-1])

        plan: list[tuple[str, str, list[int]]] = []  # model, mode, concurrencies
        for mode in modes:
            plan.append((HEAVY, mode, concurrencies))
        if not args.skip_small:
            for mode in modes:
                plan.append((SMALL, mode, [1]))
        # Fail before any load if batching cannot be turned on.
        run_args = {
            (model, mode): batching_args(args, mode=mode, model=model, supported=supported)
            for model, mode, _ in plan
        }
        for (model, mode), a in run_args.items():
            if mode == "on":
                results["on_args"][model] = a

        results["meta"] = {
            "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "cpu": bh.cpu_name(),
            "nproc": os.cpu_count(),
            "server_core": server_core,
            "server_cpus": args.server_cpus if server_core is not None else None,
            "model_cpus": args.model_cpus,
            "client_core": client_core,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "concurrency": concurrencies,
            "modes": modes,
            "body_bytes": {m: len(b) for m, b in bodies.items()},
            "encoding": "binary tensor data" if args.binary else "JSON",
            "wrk_version": bh.wrk_version(wrk),
            "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__,
            "intra_op_threads": args.intra_op_threads,
            "servecore_env": " ".join(f"{k}={v}" for k, v in extra_env.items()),
            "supported_options": sorted(supported),
        }

        stats_missing = False
        for model, mode, conc in plan:
            key = f"{model}-{mode}"
            label = {"on": "on", "asgi": "on, --no-fast-path"}.get(mode, "off")
            port = bh.free_port()
            argv = bh.servecore_argv(args.servecore_cmd, models[model], port)
            argv += thread_args + run_args[(model, mode)]
            if args.model_cpus:
                argv += ["--model-cpus", args.model_cpus]
            srv = Server(label=f"servecore {key}", argv=argv, env=server_env, port=port,
                         log_path=tmp / f"{key}.log")
            live.append(srv)
            srv.start(args.server_cpus if args.server_cpus and server_core is not None else server_core)
            srv.wait_ready(args.startup_timeout)
            path = infer_path(model)
            check = bh.verify(srv.label, port, bodies[model], expect[model], path=path, header_length=header_lengths[model])
            log(f"  {srv.label} ready on :{port}, verified {check}")
            run: dict[str, Any] = {
                "model": model, "mode": mode, "label": label, "argv": argv, "verify": check,
                "points": [],
            }
            for c in conc:
                if args.warmup > 0:
                    bh.run_wrk(wrk, port, c, args.warmup, client_core, body_files[model], path=path, header_length=header_lengths[model])
                time.sleep(STATS_SETTLE_S)
                before = fetch_stats(port, model)
                res = bh.run_wrk(wrk, port, c, args.duration, client_core, body_files[model], path=path, header_length=header_lengths[model])
                time.sleep(STATS_SETTLE_S)
                after = fetch_stats(port, model)
                res["concurrency"] = c
                res["stats"] = stats_delta(before, after)
                stats_missing |= not res["stats"]["available"]
                run["points"].append(res)
                mean = res["stats"].get("mean_batch_size")
                log(
                    f"  {key} c={c}: {res['requests_per_s']:,.0f} req/s, "
                    f"p50 {res['latency_us']['p50']} µs, p99 {res['latency_us']['p99']} µs, "
                    f"errors {res['errors_total']}, mean batch {_fmt(mean, 2)}"
                )
                if srv.proc is not None and srv.proc.poll() is not None:
                    raise BenchError(f"{srv.label} died during load; output:\n{srv.log_tail()}")
                if model == HEAVY and mode != "off" and mean is not None:
                    # Raw onnxruntime at this point's mean batch, at once, with the server idle:
                    # on a shared host the model's own speed drifts by tens of per cent within
                    # minutes, so the end-of-run figure alone can compare the point with a
                    # different machine.
                    res["ort_beside"] = ort_point(models[HEAVY], max(1, round(mean)), server_core, args, threads)
                    log(f"  raw onnxruntime beside it: {res['ort_beside']['samples_per_s']:,.0f} samples/s")
            srv.stop()
            results["runs"][key] = run
        if stats_missing:
            results["notes"].append(
                "`GET /v2/models/{m}/stats` gave no inference_count/execution_count: mean batch "
                "sizes are unknown, and raw onnxruntime ran at batch 1 only"
            )

        # Raw onnxruntime at every batch size the server formed on the heavy model (and 1).
        sizes = {1}
        for p in [p for mode in ("on", "asgi") for p in results["runs"].get(f"{HEAVY}-{mode}", {}).get("points", [])]:
            mean = p["stats"].get("mean_batch_size")
            if mean is not None:
                sizes.add(max(1, round(mean)))
        for b in sorted(sizes):
            log(f"raw onnxruntime, batch {b}: {args.ort_duration:g} s on core {server_core}")
            r = results["ort"][str(b)] = ort_point(models[HEAVY], b, server_core, args, threads)
            log(f"  {r['samples_per_s']:,.0f} samples/s ({r['calls_per_s']:,.0f} calls/s)")
    finally:
        for srv in live:
            srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    results["targets"] = check_targets(results)
    md = render_markdown(results)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "batching.md").write_text(md)
    (args.out_dir / "batching.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(md)
    log(f"wrote {args.out_dir / 'batching.md'} and {args.out_dir / 'batching.json'}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        print(f"bench_batching: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("bench_batching: interrupted", file=sys.stderr)
        sys.exit(130)
