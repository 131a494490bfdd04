#!/usr/bin/env python
"""HTTP serving overhead, side by side: onnxruntime alone vs a thin endpoint vs servecore.

Measures, in one run and on the same machine:

* ``ort``       -- in-process ``InferenceSession.run`` on one FP32[1,64] row, one thread, pinned to
                   the server core (no HTTP at all): the cost of the model call itself.
* ``thin``      -- ``benchmarks/thin_app.py``: starlette + uvicorn (uvloop, httptools), one POST
                   route that parses the JSON body with orjson and returns a fixed V2 answer. The
                   floor for "Python ASGI server speaking V2 JSON".
* ``servecore`` -- the real server (``servecore serve src/servecore/demo/mlp.onnx``), one row per
                   core with ``--both-cores`` (native and ``SERVECORE_PURE_PYTHON=1``).

HTTP targets are loaded with ``wrk -t1 -cN`` (N = 1, 16, 64 by default) using
``benchmarks/wrk_post.lua``; the server is pinned to one core and wrk to another with
``taskset -c``. Each point gets a discarded warm-up run first. Before loading, every endpoint must
answer 200 with ``outputs``; servecore's ``logits`` must match onnxruntime within 1e-5.

Writes a markdown table to ``benchmarks/results/http.md`` and everything measured to
``benchmarks/results/http.json``. This is a script, not a test::

    python benchmarks/bench_http.py                       # all targets, 10 s per point
    python benchmarks/bench_http.py --targets thin,ort -d 5
    python benchmarks/bench_http.py --both-cores
    python benchmarks/bench_http.py --servecore-cmd "python -m servecore" --env PYTHONPATH=src
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as _dt
import gc
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_MODEL = ROOT / "src" / "servecore" / "demo" / "mlp.onnx"
LUA_SCRIPT = HERE / "wrk_post.lua"
INFER_PATH = "/v2/models/mlp/infer"
READY_PATH = "/v2/health/ready"
HOST = "127.0.0.1"  # the only address this script ever sends traffic to
LOGITS_ATOL = 1e-5
ALL_TARGETS = ("ort", "thin", "servecore")


class BenchError(RuntimeError):
    """A failure with a message meant for the person running the benchmark."""


def log(msg: str) -> None:
    print(f"[bench_http] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# input


def make_input(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 64)).astype(np.float32)


def make_body(x: np.ndarray) -> bytes:
    # float32 -> Python float is exact, so the server decodes exactly the values of ``x``.
    doc = {
        "inputs": [
            {
                "name": "input",
                "shape": list(x.shape),
                "datatype": "FP32",
                "data": x.ravel().tolist(),
            }
        ]
    }
    return json.dumps(doc, separators=(",", ":")).encode()


# --------------------------------------------------------------------------------------------
# onnxruntime alone


def ort_session(model: Path, *, intra_op_threads: int | None = 1) -> Any:
    """A CPU session; one thread by default, onnxruntime's own default with None."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if intra_op_threads is not None:
        so.intra_op_num_threads = intra_op_threads
        so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(model), sess_options=so, providers=["CPUExecutionProvider"])


def bench_ort(
    model: Path,
    x: np.ndarray,
    core: int | None,
    duration: float,
    warmup: float,
    *,
    intra_op_threads: int | None = 1,
) -> dict:
    """Time ``session.run`` calls one by one on this thread, pinned to *core*."""
    old_affinity = os.sched_getaffinity(0)
    if core is not None:
        os.sched_setaffinity(0, {core})  # before the session exists: no thread escapes the pin
    try:
        sess = ort_session(model, intra_op_threads=intra_op_threads)
        run, feed, names = sess.run, {"input": x}, ["logits"]
        pc = time.perf_counter_ns
        end = pc() + int(warmup * 1e9)
        while pc() < end:
            run(names, feed)
        times: list[int] = []
        append = times.append
        gc.collect()
        gc.disable()
        try:
            start = pc()
            end = start + int(duration * 1e9)
            while True:
                t0 = pc()
                run(names, feed)
                t1 = pc()
                append(t1 - t0)
                if t1 >= end:
                    break
        finally:
            gc.enable()
        elapsed_ns = t1 - start
    finally:
        os.sched_setaffinity(0, old_affinity)
    arr = np.asarray(times, dtype=np.float64) / 1e3  # µs
    p50, p90, p99, p999 = np.percentile(arr, [50, 90, 99, 99.9])
    return {
        "calls": len(times),
        "duration_s": elapsed_ns / 1e9,
        "calls_per_s": len(times) / (elapsed_ns / 1e9),
        "latency_us": {
            "min": float(arr.min()),
            "mean": float(arr.mean()),
            "p50": float(p50),
            "p90": float(p90),
            "p99": float(p99),
            "p999": float(p999),
            "max": float(arr.max()),
        },
    }


# --------------------------------------------------------------------------------------------
# server processes


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: if the harness dies, so does the server
    except Exception:
        pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@dataclass
class Server:
    label: str
    argv: list[str]
    env: dict[str, str]
    port: int
    log_path: Path
    proc: subprocess.Popen | None = None
    _log_file: Any = None

    def start(self, core: int | None) -> None:
        argv = (["taskset", "-c", str(core)] if core is not None else []) + self.argv
        log(f"starting {self.label}: {shlex.join(argv)}")
        self._log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: stop() reaches any children too
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )

    def log_tail(self, n: int = 30) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n:]) or "(empty log)"

    def wait_ready(self, timeout: float) -> None:
        assert self.proc is not None
        url = f"http://{HOST}:{self.port}{READY_PATH}"
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                raise BenchError(
                    f"{self.label} exited with status {rc} before it was ready; its output:\n"
                    f"{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return
                    last = f"HTTP {r.status}"
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code}"
            except (urllib.error.URLError, OSError) as e:
                last = str(e)
            time.sleep(0.1)
        raise BenchError(
            f"{self.label} not ready after {timeout:.0f} s (GET {READY_PATH}: {last}); output:\n"
            f"{self.log_tail()}"
        )

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log(f"{self.label} ignored SIGTERM; killing it")
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)
        elif proc is not None:
            # the leader is gone; make sure nothing else of its group lingers
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


def make_binary_body(x: np.ndarray) -> tuple[bytes, int]:
    """The binary-tensor form of :func:`make_body` (what perf_analyzer sends): a JSON header, then
    the raw little-endian FP32 bytes; the output comes back as JSON. Returns (body, header length)."""
    raw = np.ascontiguousarray(x, dtype="<f4").tobytes()
    doc = {
        "inputs": [
            {"name": "input", "shape": list(x.shape), "datatype": "FP32", "parameters": {"binary_data_size": len(raw)}}
        ]
    }
    header = json.dumps(doc, separators=(",", ":")).encode()
    return header + raw, len(header)


def post_infer(port: int, body: bytes, *, path: str = INFER_PATH, header_length: int | None = None) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"}
    if header_length is not None:
        headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(header_length)}
    req = urllib.request.Request(
        f"http://{HOST}:{port}{path}",
        data=body,
        method="POST",
        headers=headers,
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def verify(
    label: str,
    port: int,
    body: bytes,
    expect_logits: np.ndarray | None,
    *,
    path: str = INFER_PATH,
    header_length: int | None = None,
) -> dict:
    status, raw = post_infer(port, body, path=path, header_length=header_length)
    if status != 200:
        raise BenchError(f"{label}: POST {path} answered {status}: {raw[:500]!r}")
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise BenchError(f"{label}: response is not JSON ({e}): {raw[:500]!r}") from None
    outputs = doc.get("outputs") if isinstance(doc, dict) else None
    if not isinstance(outputs, list) or not outputs:
        raise BenchError(f"{label}: response has no 'outputs': {raw[:500]!r}")
    result: dict[str, Any] = {"status": status, "response_bytes": len(raw)}
    if expect_logits is not None:
        out = next((o for o in outputs if isinstance(o, dict) and o.get("name") == "logits"), None)
        if out is None:
            raise BenchError(f"{label}: no output named 'logits' in {raw[:500]!r}")
        if out.get("datatype") != "FP32" or list(out.get("shape", [])) != [1, 10]:
            raise BenchError(
                f"{label}: logits is {out.get('datatype')}{out.get('shape')}, expected FP32[1,10]"
            )
        got = np.asarray(out.get("data"), dtype=np.float64).reshape(1, 10)
        diff = float(np.max(np.abs(got - expect_logits.astype(np.float64))))
        if not diff <= LOGITS_ATOL:
            raise BenchError(
                f"{label}: logits differ from onnxruntime by {diff:.3g} (> {LOGITS_ATOL}):\n"
                f"  server:      {got.ravel().tolist()}\n"
                f"  onnxruntime: {expect_logits.ravel().tolist()}"
            )
        result["logits_max_abs_diff"] = diff
    return result


def native_codec_importable(env: dict[str, str]) -> bool:
    """Whether this Python can import the compiled codec (else "native" silently means Python)."""
    p = subprocess.run(
        [sys.executable, "-c", "import servecore._native.codec"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        timeout=60,
    )
    return p.returncode == 0


def server_metadata(port: int) -> Any:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/v2", timeout=5) as r:
            return json.loads(r.read())
    except Exception as e:  # informational only
        return {"error": str(e)}


# --------------------------------------------------------------------------------------------
# wrk


def wrk_version(wrk: str) -> str:
    p = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10)
    text = (p.stdout + p.stderr).strip()
    return text.split(" Copyright")[0] if text else "?"


def run_wrk(
    wrk: str,
    port: int,
    conns: int,
    duration: int,
    core: int | None,
    body_file: Path,
    *,
    path: str = INFER_PATH,
    header_length: int | None = None,
) -> dict:
    argv = (["taskset", "-c", str(core)] if core is not None else []) + [
        wrk,
        "-t1",
        f"-c{conns}",
        f"-d{duration}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA_SCRIPT),
        f"http://{HOST}:{port}{path}",
    ]
    env = dict(os.environ, WRK_BODY_FILE=str(body_file))
    if header_length is not None:
        env["WRK_HEADER_LENGTH"] = str(header_length)
    try:
        p = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=duration + 30, cwd=ROOT
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk did not finish within {duration + 30:.0f} s: {shlex.join(argv)}")
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("WRK_RESULT ")), None)
    if p.returncode != 0 or line is None:
        raise BenchError(
            f"wrk failed (status {p.returncode}): {shlex.join(argv)}\n{p.stdout}\n{p.stderr}"
        )
    res = json.loads(line[len("WRK_RESULT ") :])
    res["errors_total"] = sum(res["errors"].values())
    res["requests_per_s"] = res["requests"] / (res["duration_us"] / 1e6)
    return res


# --------------------------------------------------------------------------------------------
# report


def fmt_int(v: float) -> str:
    return f"{v:,.0f}"


def build_table(results: dict) -> str:
    thin = {p["concurrency"]: p for p in results["http"].get("thin", {}).get("points", [])}
    ort_res = results.get("ort")
    lines = [
        "| target | concurrency | req/s | p50 µs | p99 µs | errors | ratio vs thin |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    if ort_res:
        lat = ort_res["latency_us"]
        lines.append(
            f"| onnxruntime alone | in-process, 1 thread | {fmt_int(ort_res['calls_per_s'])} "
            f"| {lat['p50']:.1f} | {lat['p99']:.1f} | 0 | — |"
        )
    for key, tgt in results["http"].items():
        for p in tgt["points"]:
            c = p["concurrency"]
            rps, lat, err = p["requests_per_s"], p["latency_us"], p["errors_total"]
            if key == "thin":
                ratio = "1.00 (baseline)"
            elif c in thin:
                ratio = f"{rps / thin[c]['requests_per_s']:.2f}×"
                if c == 1:
                    d = lat["p50"] - thin[c]["latency_us"]["p50"]
                    ratio += f" (p50 {d:+,.0f} µs)"
            else:
                ratio = "—"
            lines.append(
                f"| {tgt['label']} | {c} | {fmt_int(rps)} | {lat['p50']:,} | {lat['p99']:,} "
                f"| {err} | {ratio} |"
            )
    return "\n".join(lines)


def build_notes(results: dict) -> list[str]:
    notes = []
    thin = {p["concurrency"]: p for p in results["http"].get("thin", {}).get("points", [])}
    ort_res = results.get("ort")
    for key, tgt in results["http"].items():
        if key == "thin" or 1 not in thin:
            continue
        p1 = next((p for p in tgt["points"] if p["concurrency"] == 1), None)
        if p1 is None:
            continue
        extra = p1["latency_us"]["p50"] - thin[1]["latency_us"]["p50"]
        msg = f"{tgt['label']}: c=1 p50 is {extra:+,.0f} µs vs thin"
        if ort_res:
            own = extra - ort_res["latency_us"]["p50"]
            msg += (
                f"; minus the model call (onnxruntime p50 {ort_res['latency_us']['p50']:.1f} µs) "
                f"leaves ≈{own:+,.0f} µs of servecore's own per-request work"
            )
        notes.append(msg + ".")
    for key, tgt in results["http"].items():
        if tgt.get("native_codec_importable") is False and tgt["env"].get(
            "SERVECORE_PURE_PYTHON", "0"
        ).strip().lower() in ("", "0", "false", "no", "off"):
            notes.append(
                f"{tgt['label']}: **servecore._native.codec is not importable** (extension not "
                "built?), so this row ran the pure-Python codec."
            )
        if tgt.get("env"):
            notes.append(f"{tgt['label']}: extra env {tgt['env']}.")
        if any(p["errors_total"] for p in tgt["points"]):
            notes.append(f"{tgt['label']}: **errors during load**, see http.json.")
    return notes


def render_markdown(results: dict) -> str:
    m = results["meta"]
    pin = (
        f"server on core {m['server_core']}, wrk on core {m['client_core']}"
        if m["server_core"] is not None
        else "not pinned"
    )
    head = [
        "# HTTP serving overhead",
        "",
        f"- date: {m['date']}; host: {m['cpu']} ({m['nproc']} cores visible); {pin}",
        f"- request: POST {INFER_PATH}, JSON FP32[1,64] ({m['body_bytes']} B), "
        f"model `{m['model']}`",
        f"- wrk: `-t1 -cN`, {m['duration_s']:g} s per point after a {m['warmup_s']:g} s "
        f"discarded warm-up; {m['wrk_version']}",
        f"- python {m['python']}, onnxruntime {m['onnxruntime']}, uvicorn {m['uvicorn']}, "
        f"starlette {m['starlette']}",
        "",
        "",
    ]
    notes = build_notes(results)
    tail = ["", *[f"- {n}" for n in notes]] if notes else []
    return "\n".join(head) + build_table(results) + "\n" + "\n".join(tail) + ("\n" if tail else "")


# --------------------------------------------------------------------------------------------
# main


def parse_env(items: list[str]) -> dict[str, str]:
    env = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BenchError(f"--env expects KEY=VALUE, got {item!r}")
        env[key] = value
    return env


def servecore_argv(cmd: str | None, model: Path, port: int) -> list[str]:
    if cmd is None:
        exe = Path(sys.executable).parent / "servecore"
        found = str(exe) if exe.exists() else shutil.which("servecore")
        if found is None:
            raise BenchError(
                "the `servecore` console script was not found (next to this Python or on PATH). "
                "Install the project (`pip install -e .`), pass "
                "--servecore-cmd 'python -m servecore', or leave servecore out with "
                "--targets thin,ort."
            )
        cmd = shlex.quote(found)
    fields = {"model": str(model), "port": str(port), "host": HOST}
    if "{port}" in cmd:
        return [a.format(**fields) for a in shlex.split(cmd)]
    return shlex.split(cmd) + ["serve", str(model), "--port", str(port), "--host", HOST]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--targets",
        default=",".join(ALL_TARGETS),
        help="comma-separated subset of ort,thin,servecore (default: all)",
    )
    ap.add_argument(
        "-c", "--concurrency", default="1,16,64", help="wrk connections (default 1,16,64)"
    )
    ap.add_argument(
        "-d", "--duration", type=int, default=10, help="whole seconds per point (10)"
    )
    ap.add_argument(
        "--warmup", type=int, default=2, help="discarded warm-up whole seconds, 0 for none (2)"
    )
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument(
        "--servecore-cmd",
        default=None,
        help="command that starts servecore. Without {port} in it, 'serve MODEL --port P "
        "--host 127.0.0.1' is appended (e.g. 'python -m servecore'); with it, {model}, {port} "
        "and {host} are substituted. Default: the servecore console script of this venv.",
    )
    ap.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for servecore (repeatable), e.g. SERVECORE_PURE_PYTHON=1",
    )
    ap.add_argument(
        "--both-cores",
        action="store_true",
        help="measure servecore twice: native core and SERVECORE_PURE_PYTHON=1",
    )
    ap.add_argument("--server-core", type=int, default=0, help="CPU for the server / ort (0)")
    ap.add_argument("--client-core", type=int, default=1, help="CPU for wrk (1)")
    ap.add_argument("--no-pin", action="store_true", help="do not use taskset")
    ap.add_argument("--startup-timeout", type=float, default=60.0)
    ap.add_argument("--out-dir", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)

    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    bad = sorted(set(targets) - set(ALL_TARGETS))
    if bad or not targets:
        raise BenchError(f"--targets: unknown {bad}; choose from {','.join(ALL_TARGETS)}")
    concurrencies = [int(c) for c in args.concurrency.split(",") if c.strip()]
    if args.duration < 1 or args.warmup < 0 or not concurrencies or min(concurrencies) < 1:
        raise BenchError("need --duration >= 1, --warmup >= 0 and concurrencies >= 1")
    extra_env = parse_env(args.env)

    http_targets = [t for t in targets if t != "ort"]
    wrk = shutil.which("wrk")
    if http_targets and wrk is None:
        raise BenchError(
            "wrk is not installed (e.g. `apt-get install -y wrk`); it drives the load."
        )
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
    if not args.model.exists():
        raise BenchError(f"model not found: {args.model}")

    import onnxruntime
    import starlette
    import uvicorn

    x = make_input()
    body = make_body(x)
    expect = np.asarray(ort_session(args.model).run(["logits"], {"input": x})[0])

    results: dict[str, Any] = {
        "meta": {
            "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "cpu": cpu_name(),
            "nproc": os.cpu_count(),
            "server_core": server_core,
            "client_core": client_core,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "concurrency": concurrencies,
            "model": os.path.relpath(args.model, ROOT),
            "body_bytes": len(body),
            "wrk_version": wrk_version(wrk) if wrk else None,
            "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__,
            "uvicorn": uvicorn.__version__,
            "starlette": starlette.__version__,
            "targets": targets,
        },
        "http": {},
    }

    # Servers to run, in order.
    plan: list[tuple[str, str, dict[str, str], bool, Any]] = []  # key, label, env, check, argv_fn
    if "thin" in targets:
        plan.append(
            (
                "thin",
                "thin endpoint",
                {},
                False,
                lambda port: [
                    sys.executable, "-m", "uvicorn", "benchmarks.thin_app:app",
                    "--host", HOST, "--port", str(port),
                    "--loop", "uvloop", "--http", "httptools",
                    "--no-access-log", "--log-level", "warning",
                ],
            )
        )
    if "servecore" in targets:
        servecore_argv(args.servecore_cmd, args.model, 0)  # fail early if it cannot be found
        variants: list[tuple[str, str, dict[str, str]]]
        if args.both_cores:
            native_env = {**extra_env, "SERVECORE_PURE_PYTHON": "0"}
            python_env = {**extra_env, "SERVECORE_PURE_PYTHON": "1"}
            variants = [
                ("servecore-native", "servecore (native)", native_env),
                ("servecore-python", "servecore (pure-Python)", python_env),
            ]
        else:
            suffix = " ".join(f"{k}={v}" for k, v in extra_env.items())
            label = f"servecore [{suffix}]" if suffix else "servecore"
            variants = [("servecore", label, extra_env)]
        def servecore_argv_fn(port: int) -> list[str]:
            return servecore_argv(args.servecore_cmd, args.model, port)

        for key, label, env in variants:
            plan.append((key, label, env, True, servecore_argv_fn))

    def on_sigterm(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    tmp = Path(tempfile.mkdtemp(prefix="bench_http_"))
    body_file = tmp / "body.json"
    body_file.write_bytes(body)
    live: list[Server] = []
    try:
        if "ort" in targets:
            log(f"onnxruntime alone: {args.duration:g} s on core {server_core}")
            results["ort"] = bench_ort(args.model, x, server_core, args.duration, args.warmup)
            log(
                f"  {results['ort']['calls_per_s']:,.0f} calls/s, "
                f"p50 {results['ort']['latency_us']['p50']:.1f} µs"
            )
        for key, label, env, check, argv_fn in plan:
            port = free_port()
            srv = Server(
                label=label,
                argv=argv_fn(port),
                env={**os.environ, **env},
                port=port,
                log_path=tmp / f"{key}.log",
            )
            live.append(srv)
            srv.start(server_core)
            srv.wait_ready(args.startup_timeout)
            check_res = verify(label, port, body, expect if check else None)
            log(f"  {label} ready on :{port}, verified {check_res}")
            tgt: dict[str, Any] = {
                "label": label,
                "argv": srv.argv,
                "env": env,
                "verify": check_res,
                "points": [],
            }
            if check:
                tgt["server_metadata"] = server_metadata(port)
                tgt["native_codec_importable"] = native_codec_importable(srv.env)
            for c in concurrencies:
                if args.warmup > 0:
                    run_wrk(wrk, port, c, args.warmup, client_core, body_file)
                res = run_wrk(wrk, port, c, args.duration, client_core, body_file)
                res["concurrency"] = c
                tgt["points"].append(res)
                log(
                    f"  {label} c={c}: {res['requests_per_s']:,.0f} req/s, "
                    f"p50 {res['latency_us']['p50']} µs, p99 {res['latency_us']['p99']} µs, "
                    f"errors {res['errors_total']}"
                )
                if srv.proc is not None and srv.proc.poll() is not None:
                    raise BenchError(f"{label} died during load; output:\n{srv.log_tail()}")
            srv.stop()
            results["http"][key] = tgt
    finally:
        for srv in live:
            srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    md = render_markdown(results)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "http.md").write_text(md)
    (args.out_dir / "http.json").write_text(json.dumps(results, indent=2) + "\n")
    print(md)
    log(f"wrote {args.out_dir / 'http.md'} and {args.out_dir / 'http.json'}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        print(f"bench_http: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("bench_http: interrupted", file=sys.stderr)
        sys.exit(130)
