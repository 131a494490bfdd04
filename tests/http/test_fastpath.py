"""The HTTP fast path (servecore.http.fastpath) answers exactly what the ASGI path answers.

``POST /v2/models/{m}[/versions/{v}]/infer`` on a model with a batch scheduler goes from the
HTTP connection straight into the scheduler, unless the fast path declines the request (then the
ASGI app answers it). What this module proves, against real server processes on 127.0.0.1 and
over raw sockets (so every response byte is seen):

* **Same bytes.** Two servers on the same batched models, one default (fast path on), one with
  ``--no-fast-path``, answer a corpus of good and bad requests (JSON and binary tensors, every
  request parameter, bad documents, bad tensors, bad ``timeout``/``priority``, unknown models
  and versions, compressed bodies and responses, raw binary, ``Expect: 100-continue``, bodies
  split across TCP sends, pipelining, HTTP/1.0 and ``Connection: close``, and API keys on a
  second pair) with byte-identical responses once the ``date`` header is removed, and close the
  same connections.
* **Same accounting.** After the corpus both servers show the same statistics counters
  (``/v2/models/stats``: inference, execution, per-stage and per-batch-size counts) and the same
  ``servecore_*`` counters on ``/metrics`` (requests by outcome, HTTP errors by status, batches
  by close reason, refusals, expiries, histogram counts, the in-flight gauge).
* **The fast path is really taken.** The servers run ``tests/fastpath_probe.py``, servecore with
  a spy that logs every ``FastInfer.handle`` call and whether it took the request: the good
  requests of the corpus are taken, the requests the fast path must leave to the ASGI app are
  declined (or never offered), and the ``--no-fast-path`` server never offers anything.
* **Under load.** 200 distinct requests on 40 keep-alive connections, 5 pipelined on each, sent
  at once, mixed good and bad: each answer is that request's own and is the answer of the
  ``--no-fast-path`` server under the same load (byte for byte where the model's arithmetic is
  exact; the MLP against onnxruntime run here), and both count the same.
* **Queueing.** With the only instance of a slow model busy, on both servers: a request whose
  ``timeout`` passes in the queue gets 504 with a JSON error, a full queue answers 429 with
  ``Retry-After``, a client that disconnects while queued (with a second request pipelined
  behind it) or while its batch runs costs nothing and never runs, and the server serves on;
  answers, statistics and metrics match between the servers, and the fast server took every one
  of those requests on its fast path.

Nothing here asserts how long anything takes; waits are hang guards, and requests are ordered
by watching ``servecore_inflight_requests`` as tests/http/test_batching.py does.
"""

from __future__ import annotations

import gzip
import json
import re
import socket
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime
import pytest
from prometheus_client.parser import text_string_to_metric_families

from checks import eventually
from fastpath_probe import LOG_ENV
from rawhttp import Headers, http_request
from server_process import ServerProcess
from test_bad_input import _bytes_blob, binary_request, tensor
from test_batching import batch_models, distinct, hold_steps, inflight, slow_doc  # noqa: F401  (fixtures)

#: hang guard for one socket operation, seconds
GUARD = 60.0
#: the pause between the two sends of a request split across TCP segments
SPLIT_PAUSE = 0.2
PROBE = Path(__file__).resolve().parents[1] / "fastpath_probe.py"
MAX_BATCH = 8
#: the options of the differential servers (besides the models and --no-fast-path)
BATCHING = ["--max-batch-size", str(MAX_BATCH), "--max-queue-delay-us", "0"]
IHCL = "Inference-Header-Content-Length"
API_KEY = "alice-key-0123456789"
AUTH = (("Authorization", f"Bearer {API_KEY}"),)



# -- servers --------------------------------------------------------------------------------------


class ProbedServer(ServerProcess):
    """A :class:`ServerProcess` running servecore under tests/fastpath_probe.py."""

    def __init__(self, args: Sequence[str], *, log_dir: Path) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.probe_log = log_dir / f"fastpath-{uuid.uuid4().hex[:8]}.log"
        super().__init__(args, env={LOG_ENV: str(self.probe_log)}, log_dir=log_dir)
        assert self.args[1:3] == ["-m", "servecore"], self.args
        self.args[1:3] = [str(PROBE)]

    def decisions(self) -> list[tuple[str, bool]]:
        """Every ``FastInfer.handle`` call so far: (the request's X-Case, whether it was taken)."""
        if not self.probe_log.exists():
            return []
        calls = []
        for line in self.probe_log.read_text().splitlines():
            case, _, taken = line.rpartition(" ")
            calls.append((case, taken == "1"))
        return calls


@dataclass(frozen=True)
class Pair:
    """Two servers of the same models and options: ``fast`` as by default, ``asgi`` with --no-fast-path."""

    fast: ProbedServer
    asgi: ProbedServer


def start_pair(stack: ExitStack, args: list[str], log_dir: Path) -> Pair:
    fast = stack.enter_context(ProbedServer(args, log_dir=log_dir))
    asgi = stack.enter_context(ProbedServer([*args, "--no-fast-path"], log_dir=log_dir))
    return Pair(fast, asgi)


@pytest.fixture(scope="module")
def models(batch_models: dict[str, Path], model_paths: dict[str, Path]) -> list[str]:
    """Batched: mlp, add_sub (two inputs), identity_fp32, identity_bytes (BYTES), lookup (fails its
    batch on a bad index). Not batched: fixed (INT32 [2, 3])."""
    paths = [batch_models[name] for name in ("mlp", "add_sub", "identity_fp32", "lookup")]
    return [str(p) for p in (*paths, model_paths["identity_bytes"], model_paths["fixed"])]


@pytest.fixture(scope="module")
def pair(models: list[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    with ExitStack() as stack:
        yield start_pair(stack, [*models, *BATCHING], tmp_path_factory.mktemp("fastpath-logs"))


@pytest.fixture(scope="module")
def auth_pair(models: list[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """The same servers with API keys: every inference needs ``Authorization: Bearer <key>``."""
    directory = tmp_path_factory.mktemp("fastpath-auth")
    keys = directory / "keys"
    keys.write_text(f"alice:{API_KEY}\n")
    with ExitStack() as stack:
        yield start_pair(stack, [*models, *BATCHING, "--api-keys-file", str(keys)], directory / "logs")


# -- raw HTTP -------------------------------------------------------------------------------------


_CONTENT_LENGTH = re.compile(rb"(?im)^content-length:[ \t]*(\d+)\r$")


class RawReader:
    """HTTP responses read from a socket exactly as they came, one after another."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _more(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def response(self) -> bytes:
        """The next whole response (head and body); an interim 1xx answer counts as one."""
        while b"\r\n\r\n" not in self.buffer:
            if not self._more():
                raise ConnectionError(f"the connection closed before a response head; got {self.buffer!r}")
        end = self.buffer.index(b"\r\n\r\n") + 4
        head = self.buffer[:end]
        found = _CONTENT_LENGTH.search(head)
        if found is not None:
            end += int(found.group(1))
        else:
            assert head.startswith(b"HTTP/1.1 1"), f"a final response without Content-Length: {head!r}"
        while len(self.buffer) < end:
            if not self._more():
                raise ConnectionError(f"the connection closed inside a response; got {self.buffer!r}")
        response, self.buffer = self.buffer[:end], self.buffer[end:]
        return response

    def closed(self) -> bool:
        """True when the server closes the connection (EOF or reset) having sent nothing more."""
        try:
            return not self.buffer and not self._more()
        except ConnectionResetError:
            return not self.buffer


def without_date(response: bytes) -> bytes:
    """*response* without its ``date`` header line (the one header that may differ)."""
    head, separator, body = response.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    kept = [line for line in lines if not line.lower().startswith(b"date:")]
    assert len(lines) - len(kept) <= 1, f"more than one date header: {head!r}"
    return b"\r\n".join(kept) + separator + body


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def parts(response: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-cased names) and body of one raw response."""
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def tensors(response: bytes) -> dict[str, np.ndarray]:
    """The outputs of a 200 inference response, JSON or binary, by name (not BYTES)."""
    status, headers, body = parts(response)
    assert status == 200, response[:600]
    json_length = int(headers.get(IHCL.lower(), len(body)))
    document = json.loads(body[:json_length])
    blob = memoryview(body)[json_length:]
    out = {}
    for entry in document["outputs"]:
        dtype = {"FP32": "<f4", "INT64": "<i8"}[entry["datatype"]]
        if "data" in entry:
            array = np.asarray(entry["data"], dtype=dtype)
        else:
            size = entry["parameters"]["binary_data_size"]
            array, blob = np.frombuffer(blob[:size], dtype=dtype), blob[size:]
        out[entry["name"]] = array.reshape(entry["shape"])
    return out


# -- the corpus -----------------------------------------------------------------------------------


class Route(Enum):
    """What the fast path must do with a request (``FastInfer.handle``, as the probe logs it)."""

    TAKEN = "taken"  # handled on the fast path
    DECLINED = "declined"  # offered, then left to the ASGI app
    UNOFFERED = "unoffered"  # never offered (not a fast route, or never started)
    EITHER = "either"  # depends on how the bytes arrive, or on nothing the contract fixes


@dataclass(frozen=True)
class Req:
    """One request of a case: what is sent, the status it must get, what the fast path must do."""

    path: str
    body: bytes | None
    status: int
    route: Route
    headers: Headers = ()
    method: str = "POST"
    version: str = "1.1"
    chunked: bool = False


class Sending(Enum):
    """How a case's bytes go out (each case has a connection of its own)."""

    WHOLE = "whole"  # every request (and the trailer) in one send
    SPLIT_BODY = "split body"  # the head and half the body; a pause; the rest
    HEAD_THEN_BODY = "head, then body"  # the head; a pause; the body
    EXPECT_CONTINUE = "expect 100-continue"  # the head; the interim answer read; the body


@dataclass(frozen=True)
class Case:
    """Requests sent on one connection, and what must come back."""

    name: str
    requests: tuple[Req, ...]
    sending: Sending = Sending.WHOLE
    #: requests answered (the first ones); the others are never answered (the connection closes)
    answered: int | None = None
    #: bytes sent after the requests, in the same send, and the status of their answer (if any)
    trailer: bytes = b""
    trailer_status: int | None = None
    #: the server closes the connection after its last answer
    closes: bool = False

    def tag(self, index: int) -> str:
        return f"{self.name}#{index}"

    def wire(self, index: int) -> bytes:
        r = self.requests[index]
        headers = r.headers + ((("Expect", "100-continue"),) if self.sending is Sending.EXPECT_CONTINUE else ())
        return http_request(
            r.path, r.body, tag=self.tag(index), headers=headers, method=r.method, version=r.version, chunked=r.chunked
        )

    def sends(self) -> list[bytes]:
        data = b"".join(self.wire(i) for i in range(len(self.requests))) + self.trailer
        if self.sending is Sending.WHOLE:
            return [data]
        (request,) = self.requests
        body = request.body or b""
        cut = len(data) - len(body) + (len(body) // 2 if self.sending is Sending.SPLIT_BODY else 0)
        return [data[:cut], data[cut:]]

    def statuses(self) -> list[int]:
        count = len(self.requests) if self.answered is None else self.answered
        extra = [] if self.trailer_status is None else [self.trailer_status]
        return [r.status for r in self.requests[:count]] + extra


@dataclass(frozen=True)
class Transcript:
    """What one server sent back for a case: its responses without the date, and whether it closed."""

    responses: tuple[bytes, ...]
    closed: bool


def exchange(port: int, case: Case) -> Transcript:
    """Play *case* on a fresh connection to *port*."""
    with socket.create_connection(("127.0.0.1", port), timeout=GUARD) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # separate sends, separate segments
        reader = RawReader(sock)
        responses = []
        for index, data in enumerate(case.sends()):
            if index and case.sending is Sending.EXPECT_CONTINUE:
                responses.append(reader.response())  # the interim answer, before the body goes
            elif index:
                time.sleep(SPLIT_PAUSE)
            sock.sendall(data)
        responses += [reader.response() for _ in case.statuses()]
        closed = reader.closed() if case.closes else False
    return Transcript(tuple(without_date(r) for r in responses), closed)


def js(document: Any) -> bytes:
    return json.dumps(document).encode()


MLP = "/v2/models/mlp/infer"
ADD_SUB = "/v2/models/add_sub/infer"
FP32 = "/v2/models/identity_fp32/infer"
BYTES = "/v2/models/identity_bytes/infer"
LOOKUP = "/v2/models/lookup/infer"
FIXED = "/v2/models/fixed/infer"


def mlp_x(rid: int, rows: int) -> np.ndarray:
    """Request *rid*'s MLP input: values no other request uses, exact in FP32 and in JSON."""
    return distinct(rid, rows, 64) / 256


def mlp_doc(rid: int, rows: int = 1, *, nested: bool = False, name: str = "input", **top: Any) -> dict[str, Any]:
    x = mlp_x(rid, rows)
    return {"inputs": [tensor(name, [rows, 64], "FP32", x.tolist() if nested else x.ravel().tolist())], **top}


def mlp_binary(rid: int, rows: int, **top: Any) -> tuple[bytes, Headers]:
    x = mlp_x(rid, rows).astype("<f4")
    body, headers = binary_request(
        {"inputs": [tensor("input", [rows, 64], "FP32", binary_data_size=x.nbytes)], **top}, x.tobytes()
    )
    return body, tuple(headers.items())


def add_sub_doc(rid: int, rows: int = 2, rows1: int | None = None, **top: Any) -> dict[str, Any]:
    a, b = distinct(rid, rows, 16), distinct(rid + 1, rows if rows1 is None else rows1, 16)
    return {
        "inputs": [
            tensor("INPUT0", list(a.shape), "FP32", a.ravel().tolist()),
            tensor("INPUT1", list(b.shape), "FP32", b.ravel().tolist()),
        ],
        **top,
    }


def fp32_doc(x: np.ndarray, **top: Any) -> dict[str, Any]:
    return {"inputs": [tensor("INPUT0", list(x.shape), "FP32", x.ravel().tolist())], **top}


def bytes_binary(items: Sequence[bytes], **top: Any) -> tuple[bytes, Headers]:
    blob = _bytes_blob(*items)
    body, headers = binary_request(
        {"inputs": [tensor("INPUT0", [1, len(items)], "BYTES", binary_data_size=len(blob))], **top}, blob
    )
    return body, tuple(headers.items())


def one(name: str, path: str, body: bytes | None, status: int, route: Route, **request: Any) -> Case:
    return Case(name, (Req(path, body, status, route, **request),))


def one_binary(name: str, path: str, request: tuple[bytes, Headers], status: int, route: Route) -> Case:
    """:func:`one` for a (body, headers) pair such as :func:`mlp_binary` makes."""
    body, headers = request
    return one(name, path, body, status, route, headers=headers)


def corpus() -> list[Case]:
    T, D, U, E = Route.TAKEN, Route.DECLINED, Route.UNOFFERED, Route.EITHER
    good = js(mlp_doc(1))
    cases = [
        # -- good requests, JSON --
        one("json flat", MLP, good, 200, T),
        one("json nested, 3 rows, id", MLP, js(mlp_doc(2, 3, nested=True, id="request-2")), 200, T),
        one("json max rows", MLP, js(mlp_doc(3, MAX_BATCH)), 200, T),
        one("json empty id", MLP, js(mlp_doc(4, id="")), 200, T),
        one("binary_data_output true", MLP, js(mlp_doc(5, 2, parameters={"binary_data_output": True})), 200, T),
        one("binary_data_output false", MLP, js(mlp_doc(6, parameters={"binary_data_output": False})), 200, T),
        one("outputs named", MLP, js(mlp_doc(7, outputs=[{"name": "logits"}])), 200, T),
        one("outputs binary_data true", MLP,
            js(mlp_doc(8, outputs=[{"name": "logits", "parameters": {"binary_data": True}}])), 200, T),
        one("outputs binary_data false over binary default", MLP,
            js(mlp_doc(9, parameters={"binary_data_output": True},
                       outputs=[{"name": "logits", "parameters": {"binary_data": False}}])), 200, T),
        one("classification", MLP,
            js(mlp_doc(10, 2, outputs=[{"name": "logits", "parameters": {"classification": 3}}])), 200, T),
        one("classification binary", MLP,
            js(mlp_doc(11, outputs=[{"name": "logits", "parameters": {"classification": 2, "binary_data": True}}])),
            200, T),
        one("timeout and priority", MLP, js(mlp_doc(12, parameters={"timeout": 60_000_000, "priority": 1})), 200, T),
        one("timeout and priority zero", MLP, js(mlp_doc(13, parameters={"timeout": 0, "priority": 0})), 200, T),
        one("huge priority", MLP, js(mlp_doc(14, parameters={"priority": 2**40})), 200, T),
        one("null timeout", MLP, js(mlp_doc(15, parameters={"timeout": None})), 200, T),
        one("unknown parameter", MLP, js(mlp_doc(16, parameters={"sequence_id": "x"})), 200, T),
        one("unknown top-level keys", MLP, js({**mlp_doc(17), "model_name": "mlp", "x-extra": [1]}), 200, T),
        one("trailing whitespace", MLP, good + b" \n\t", 200, T),
        one("text/plain content type", MLP, good, 200, T, headers=(("Content-Type", "text/plain"),)),
        one("an Authorization header nobody asked for", MLP, good, 200, T, headers=(("Authorization", "Bearer x"),)),
        one("versioned path", "/v2/models/mlp/versions/1/infer", good, 200, T),
        one("percent-encoded path", "/v2/models/ml%70/infer", good, 200, T),
        one("percent-encoded slash", "/v2/models/mlp%2Finfer", good, 200, T),
        one("query string", MLP + "?debug=1", good, 200, T),
        one("chunked body", MLP, js(mlp_doc(18, 2)), 200, T, chunked=True),
        one("Accept-Encoding identity", MLP, good, 200, T, headers=(("Accept-Encoding", "identity"),)),
        one("Accept-Encoding gzip;q=0", MLP, good, 200, T, headers=(("Accept-Encoding", "gzip;q=0"),)),
        one("Accept-Encoding br only", MLP, good, 200, T, headers=(("Accept-Encoding", "br"),)),
        one("add_sub both outputs", ADD_SUB, js(add_sub_doc(20)), 200, T),
        one("add_sub one output", ADD_SUB, js(add_sub_doc(21, outputs=[{"name": "OUTPUT1"}])), 200, T),
        one("add_sub inputs in reverse order", ADD_SUB,
            js({"inputs": list(reversed(add_sub_doc(22)["inputs"]))}), 200, T),
        one("identity_fp32 other width", FP32, js(fp32_doc(distinct(23, 2, 3))), 200, T),
        one("bytes json", BYTES, js({"inputs": [tensor("INPUT0", [1, 2], "BYTES", ["a", "\u00e9t\u00e9"])]}), 200, T),
        one("lookup", LOOKUP, js({"inputs": [tensor("index", [1, 4], "INT64", [0, 3, 15, 7])]}), 200, T),
        # -- good requests, binary tensors --
        one_binary("binary input, binary output", MLP,
                   mlp_binary(30, 2, parameters={"binary_data_output": True}), 200, T),
        one_binary("binary input, json output", MLP, mlp_binary(31, 1), 200, T),
        one_binary("binary input, header length with spaces", MLP,
                   altered(mlp_binary(32, 1), length=lambda n: f"  {n} "), 200, T),
        one("header length equal to the body", MLP, good, 200, T, headers=((IHCL, str(len(good))),)),
        one_binary("header length twice, the last right", MLP, altered(mlp_binary(33, 1), first="abc"), 200, T),
        one_binary("add_sub binary inputs", ADD_SUB, add_sub_binary(34), 200, T),
        one_binary("add_sub one input binary, one json", ADD_SUB, add_sub_mixed(35), 200, T),
        one_binary("bytes binary in and out", BYTES,
                   bytes_binary([b"", b"xy", "\u00e9t\u00e9".encode()], parameters={"binary_data_output": True}), 200, T),
        one_binary("big binary body", FP32, fp32_binary(distinct(36, MAX_BATCH, 8192)), 200, E),
        # -- refused after the request is queued or run: the fast path answers these itself --
        one("more rows than max_batch_size", MLP, js(mlp_doc(40, MAX_BATCH + 1)), 400, E),
        one("lookup index out of range fails its batch", LOOKUP,
            js({"inputs": [tensor("index", [1, 4], "INT64", [0, 99, 1, 2])]}), 500, T),
        one("classification of a BYTES output", BYTES,
            js({"inputs": [tensor("INPUT0", [1, 1], "BYTES", ["a"])],
                "outputs": [{"name": "OUTPUT0", "parameters": {"classification": 1}}]}), 400, T),
        one_binary("non-UTF-8 BYTES asked for as JSON", BYTES,
                   bytes_binary([b"\xff\xfe"], outputs=[{"name": "OUTPUT0", "parameters": {"binary_data": False}}]),
                   400, T),
        # -- bad documents and tensors: the ASGI path's to refuse --
        one("malformed json", MLP, good[:-7], 400, D),
        one("empty body", MLP, b"", 400, D),
        one("json array", MLP, b"[]", 400, D),
        one("json string", MLP, b'"inputs"', 400, D),
        one("json null", MLP, b"null", 400, D),
        one("empty inputs", MLP, js({"inputs": []}), 400, D),
        one("inputs not a list", MLP, js({"inputs": {"name": "input"}}), 400, D),
        one("trailing garbage", MLP, good + b"}", 400, D),
        one("id a number", MLP, js(mlp_doc(41, id=42)), 400, D),
        one("binary_data_output a string", MLP, js(mlp_doc(42, parameters={"binary_data_output": "true"})), 400, D),
        one("outputs not a list", MLP, js(mlp_doc(43, outputs="logits")), 400, D),
        one("classification negative", MLP,
            js(mlp_doc(44, outputs=[{"name": "logits", "parameters": {"classification": -1}}])), 400, D),
        one("wrong datatype", MLP, js({"inputs": [tensor("input", [1, 64], "FP64", [0.5] * 64)]}), 400, D),
        one("unknown datatype", MLP, js({"inputs": [tensor("input", [1, 64], "FP128", [0.5] * 64)]}), 400, D),
        one("wrong shape", MLP, js({"inputs": [tensor("input", [1, 63], "FP32", [0.5] * 63)]}), 400, D),
        one("wrong rank", MLP, js({"inputs": [tensor("input", [64], "FP32", [0.5] * 64)]}), 400, D),
        one("data not matching the shape", MLP, js({"inputs": [tensor("input", [1, 64], "FP32", [0.5] * 63)]}), 400, D),
        one("data of the wrong type", MLP, js({"inputs": [tensor("input", [1, 64], "FP32", ["x"] * 64)]}), 400, D),
        one("unknown input", MLP, js(mlp_doc(45, name="features")), 400, D),
        one("duplicate input", MLP, js({"inputs": mlp_doc(46)["inputs"] * 2}), 400, D),
        one("missing input", ADD_SUB, js({"inputs": add_sub_doc(47)["inputs"][:1]}), 400, D),
        one("rows differ between inputs", ADD_SUB, js(add_sub_doc(48, 2, 3)), 400, D),
        one("unknown output", MLP, js(mlp_doc(49, outputs=[{"name": "probabilities"}])), 400, D),
        one("duplicate output", MLP, js(mlp_doc(50, outputs=[{"name": "logits"}, {"name": "logits"}])), 400, D),
        one("zero rows", FP32, js(fp32_doc(np.zeros((0, 3), np.float32))), 200, D),
        one_binary("binary size not matching the shape", MLP, altered(mlp_binary(51, 1), body=lambda b: b[:-4]), 400, D),
        one_binary("bytes after the last tensor", MLP, altered(mlp_binary(52, 1), body=lambda b: b + b"\0" * 4), 400, D),
        one("header length not a number", MLP, good, 400, D, headers=((IHCL, "12a"),)),
        one("header length past the body", MLP, good, 400, D, headers=((IHCL, str(len(good) + 1)),)),
        # -- requests the fast path leaves to the ASGI app, good or bad --
        one("unknown model", "/v2/models/nope/infer", good, 404, D),
        one("unknown version", "/v2/models/mlp/versions/2/infer", good, 404, D),
        one("a model that does not batch", FIXED,
            js({"inputs": [tensor("INPUT0", [2, 3], "INT32", [1, 2, 3, 4, 5, 6])]}), 200, D),
        one("gzip body", MLP, gzip.compress(good), 200, D, headers=(("Content-Encoding", "gzip"),)),
        one("deflate body", MLP, zlib.compress(good), 200, D, headers=(("Content-Encoding", "deflate"),)),
        one("identity content-encoding", MLP, good, 200, D, headers=(("Content-Encoding", "identity"),)),
        one("corrupt gzip body", MLP, gzip.compress(good)[:-8], 400, D, headers=(("Content-Encoding", "gzip"),)),
        one("unsupported content-encoding", MLP, good, 415, D, headers=(("Content-Encoding", "br"),)),
        one("Accept-Encoding gzip", MLP, good, 200, D, headers=(("Accept-Encoding", "gzip"),)),
        one("Accept-Encoding deflate, gzip;q=0.5", MLP, good, 200, D,
            headers=(("Accept-Encoding", "deflate, gzip;q=0.5"),)),
        one("Accept-Encoding *", MLP, good, 200, D, headers=(("Accept-Encoding", "*"),)),
        one("Accept-Encoding gzip on a bad request", MLP, b"[]", 400, D, headers=(("Accept-Encoding", "gzip"),)),
        one("raw binary", MLP, mlp_x(60, 1).astype("<f4").tobytes(), 200, D, headers=((IHCL, "0"),)),
        one("raw binary on two inputs", ADD_SUB, b"\0" * 64, 400, D, headers=((IHCL, "0"),)),
        one("GET", MLP, None, 405, U, method="GET"),
        one("trailing slash", MLP + "/", good, 404, U),
        one("empty version", "/v2/models/mlp/versions//infer", good, 404, U),
        one("empty model", "/v2/models//infer", good, 404, U),
        one("extra segment", "/v2/models/mlp/versions/1/x/infer", good, 404, U),
        Case("expect 100-continue", (Req(MLP, good, 200, U),), sending=Sending.EXPECT_CONTINUE),
        Case("body split across sends", (Req(MLP, js(mlp_doc(61, 4)), 200, E),), sending=Sending.SPLIT_BODY),
        Case("head, then body", (Req(MLP, js(mlp_doc(62, 2)), 200, E),), sending=Sending.HEAD_THEN_BODY),
        Case("bad body split across sends", (Req(MLP, js(mlp_doc(63, name="x")), 400, E),),
             sending=Sending.SPLIT_BODY),
        # -- connections --
        Case("HTTP/1.0", (Req(MLP, good, 200, T, version="1.0"),), closes=True),
        Case("HTTP/1.0 keep-alive", (Req(MLP, good, 200, T, version="1.0", headers=(("Connection", "keep-alive"),)),)),
        Case("Connection: close", (Req(MLP, good, 200, T, headers=(("Connection", "close"),)),), closes=True),
        Case("Connection: close on a bad request", (Req(MLP, b"[]", 400, D, headers=(("Connection", "close"),)),),
             closes=True),
        Case("pipelined good, bad, good", (
            Req(MLP, js(mlp_doc(70)), 200, T), Req(MLP, js(mlp_doc(71, name="x")), 400, D),
            Req(MLP, js(mlp_doc(72, 2)), 200, T))),
        Case("pipelined across models and paths", (
            Req(ADD_SUB, js(add_sub_doc(73)), 200, T), Req(MLP, good, 200, D, headers=(("Accept-Encoding", "gzip"),)),
            Req(BYTES, js({"inputs": [tensor("INPUT0", [1, 1], "BYTES", ["z"])]}), 200, T),
            Req("/v2/models/nope/infer", good, 404, D), Req(MLP, None, 405, U, method="GET"),
            Req(LOOKUP, js({"inputs": [tensor("index", [1, 4], "INT64", [1, 2, 3, 4])]}), 200, T))),
        Case("pipelined eight", tuple(Req(MLP, js(mlp_doc(80 + i, 1 + i % 3)), 200, T) for i in range(8))),
        Case("pipelined after Connection: close", (
            Req(MLP, good, 200, T, headers=(("Connection", "close"),)), Req(MLP, js(mlp_doc(90)), 200, U)),
             answered=1, closes=True),
        Case("pipelined before unparseable bytes", (Req(MLP, good, 200, T),),
             trailer=b"NOT HTTP AT ALL\r\n\r\n", trailer_status=400, closes=True),
    ]
    for name, value in [("timeout", -1), ("timeout", "100"), ("timeout", 2.5), ("timeout", True),
                        ("priority", -2), ("priority", "high"), ("priority", 1.0), ("priority", [1])]:
        cases.append(one(f"bad {name} {value!r}", MLP, js(mlp_doc(100, parameters={name: value})), 400, D))
    return cases


def altered(
    request: tuple[bytes, Headers], *, length: Callable[[int], str] | None = None, first: str | None = None,
    body: Callable[[bytes], bytes] | None = None,
) -> tuple[bytes, Headers]:
    """A binary request with its header length rewritten (*length*), an earlier header length
    line added (*first*), or its body changed."""
    data, headers = request
    ((name, value),) = headers
    if length is not None:
        value = length(int(value))
    earlier = ((name, first),) if first is not None else ()
    return (data if body is None else body(data)), (*earlier, (name, value))


def add_sub_binary(rid: int) -> tuple[bytes, Headers]:
    a, b = distinct(rid, 3, 16).astype("<f4"), distinct(rid + 1, 3, 16).astype("<f4")
    data, headers = binary_request(
        {"inputs": [tensor("INPUT0", [3, 16], "FP32", binary_data_size=a.nbytes),
                    tensor("INPUT1", [3, 16], "FP32", binary_data_size=b.nbytes)],
         "parameters": {"binary_data_output": True}},
        a.tobytes(), b.tobytes(),
    )
    return data, tuple(headers.items())


def add_sub_mixed(rid: int) -> tuple[bytes, Headers]:
    a, b = distinct(rid, 1, 16), distinct(rid + 1, 1, 16).astype("<f4")
    data, headers = binary_request(
        {"inputs": [tensor("INPUT0", [1, 16], "FP32", a.ravel().tolist()),
                    tensor("INPUT1", [1, 16], "FP32", binary_data_size=b.nbytes)],
         "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}, {"name": "OUTPUT1"}]},
        b.tobytes(),
    )
    return data, tuple(headers.items())


def fp32_binary(x: np.ndarray) -> tuple[bytes, Headers]:
    blob = x.astype("<f4").tobytes()
    data, headers = binary_request(
        {"inputs": [tensor("INPUT0", list(x.shape), "FP32", binary_data_size=len(blob))],
         "parameters": {"binary_data_output": True}},
        blob,
    )
    return data, tuple(headers.items())


def auth_corpus() -> list[Case]:
    """Requests to the servers with API keys (see :func:`auth_pair`)."""
    T, D, E = Route.TAKEN, Route.DECLINED, Route.EITHER
    good = js(mlp_doc(1))
    body, ihcl = mlp_binary(2, 2, parameters={"binary_data_output": True})
    return [
        one("with the key", MLP, good, 200, T, headers=AUTH),
        one("with the key, binary", MLP, body, 200, T, headers=AUTH + ihcl),
        one("without a key", MLP, good, 401, D),
        one("a wrong key", MLP, good, 401, D, headers=(("Authorization", "Bearer wrong-key"),)),
        one("the key as Basic", MLP, good, 401, D, headers=(("Authorization", f"Basic {API_KEY}"),)),
        one("without a key, binary", MLP, body, 401, D, headers=ihcl),
        one("without a key, bad input", MLP, b"[]", 401, D),
        one("without a key, unknown model", "/v2/models/nope/infer", good, 401, D),
        one("with the key, bad input", MLP, js(mlp_doc(3, name="x")), 400, D, headers=AUTH),
        one("with the key, unknown model", "/v2/models/nope/infer", good, 404, D, headers=AUTH),
        one("with the key, too many rows", MLP, js(mlp_doc(4, MAX_BATCH + 1)), 400, E, headers=AUTH),
        Case("pipelined with and without the key", (
            Req(MLP, good, 200, T, headers=AUTH), Req(MLP, good, 401, D),
            Req(MLP, js(mlp_doc(5, 2)), 200, T, headers=AUTH))),
    ]


# -- what a server counted ----------------------------------------------------------------------


def statistics(url: str, headers: Headers = ()) -> dict[str, int]:
    """Every counter of ``/v2/models/stats`` (no durations, no last_inference), by model version."""
    document = httpx.get(url + "/v2/models/stats", headers=dict(headers), timeout=GUARD).json()
    out: dict[str, int] = {}
    for model in document["model_stats"]:
        key = f"{model['name']}/{model['version']}"
        out[f"{key} inference_count"] = model["inference_count"]
        out[f"{key} execution_count"] = model["execution_count"]
        for stage, duration in model["inference_stats"].items():
            out[f"{key} {stage}.count"] = duration["count"]
        for batch in model["batch_stats"]:
            for stage in ("compute_input", "compute_infer", "compute_output"):
                out[f"{key} batch_size={batch['batch_size']} {stage}.count"] = batch[stage]["count"]
    return out


def counters(url: str, headers: Headers = ()) -> dict[str, float]:
    """Every ``servecore_*`` sample of ``/metrics`` that counts something: counters, gauges and
    histogram counts, not durations (buckets and sums of ``*_seconds``)."""
    text = httpx.get(url + "/metrics", headers=dict(headers), timeout=GUARD).text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name
            if not name.startswith("servecore_") or name.endswith("_created") or name == "servecore_build_info":
                continue
            if "_seconds" in name and not name.endswith("_count"):
                continue
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{name}{{{labels}}}"] = sample.value
    return out


def change(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """What changed from *before* to *after* (keys that did not change are left out)."""
    keys = set(before) | set(after)
    return {k: after.get(k, 0) - before.get(k, 0) for k in sorted(keys) if after.get(k, 0) != before.get(k, 0)}


def only(values: Mapping[str, float], *needles: str) -> dict[str, float]:
    return {k: v for k, v in values.items() if any(needle in k for needle in needles)}


def routes(server: ProbedServer) -> dict[str, list[Route]]:
    """What the fast path did with each tagged request, by X-Case tag."""
    seen: dict[str, list[Route]] = {}
    for tag, taken in server.decisions():
        seen.setdefault(tag, []).append(Route.TAKEN if taken else Route.DECLINED)
    return seen


# -- playing a corpus on both servers -------------------------------------------------------------


@dataclass(frozen=True)
class CorpusRun:
    pair: Pair
    cases: list[Case]
    fast: list[Transcript]
    asgi: list[Transcript]
    #: statistics and metrics counters that changed while the corpus ran, on each server
    fast_statistics: dict[str, float] = field(default_factory=dict)
    asgi_statistics: dict[str, float] = field(default_factory=dict)
    fast_counters: dict[str, float] = field(default_factory=dict)
    asgi_counters: dict[str, float] = field(default_factory=dict)
    #: servecore_inflight_requests after the corpus, on each server
    inflight: tuple[float, float] = (0.0, 0.0)


def run_corpus(pair: Pair, cases: list[Case], headers: Headers = ()) -> CorpusRun:
    """Play every case on both servers, one at a time, each on a connection of its own."""
    names = [case.name for case in cases]
    assert len(set(names)) == len(names), "case names must be unique (they tag the requests)"
    before = {s: (statistics(s.url, headers), counters(s.url, headers)) for s in (pair.fast, pair.asgi)}
    fast = [exchange(pair.fast.port, case) for case in cases]
    asgi = [exchange(pair.asgi.port, case) for case in cases]
    after = {s: (statistics(s.url, headers), counters(s.url, headers)) for s in (pair.fast, pair.asgi)}
    gauge = "servecore_inflight_requests{}"
    return CorpusRun(
        pair, cases, fast, asgi,
        fast_statistics=change(before[pair.fast][0], after[pair.fast][0]),
        asgi_statistics=change(before[pair.asgi][0], after[pair.asgi][0]),
        fast_counters=change(before[pair.fast][1], after[pair.fast][1]),
        asgi_counters=change(before[pair.asgi][1], after[pair.asgi][1]),
        inflight=(after[pair.fast][1][gauge], after[pair.asgi][1][gauge]),
    )


def show(transcript: Transcript) -> str:
    lines = [f"    {response!r}" for response in transcript.responses]
    return "\n".join([*lines, f"    (connection closed by the server: {transcript.closed})"])


def assert_same_answers(run: CorpusRun) -> None:
    differing = [
        f"{case.name}:\n  fast path:\n{show(fast)}\n  --no-fast-path:\n{show(asgi)}"
        for case, fast, asgi in zip(run.cases, run.fast, run.asgi)
        if fast != asgi
    ]
    assert not differing, f"{len(differing)} of {len(run.cases)} cases answered differently:\n\n" + "\n\n".join(differing)


def assert_expected_statuses(run: CorpusRun) -> None:
    """The corpus means what it says: each case got the statuses it was written for, and the
    connections that must close did, on both servers."""
    wrong = []
    for case, fast, asgi in zip(run.cases, run.fast, run.asgi):
        for side, transcript in (("fast", fast), ("asgi", asgi)):
            final = [r for r in transcript.responses if not r.startswith(b"HTTP/1.1 1")]
            statuses = [status_of(r) for r in final]
            if statuses != case.statuses() or transcript.closed != case.closes:
                wrong.append(f"{case.name} ({side}): statuses {statuses}, closed {transcript.closed}; "
                             f"expected {case.statuses()}, closed {case.closes}: {final[-1][:400]!r}")
            if case.sending is Sending.EXPECT_CONTINUE and transcript.responses[0] != b"HTTP/1.1 100 Continue\r\n\r\n":
                wrong.append(f"{case.name} ({side}): no interim answer first: {transcript.responses[0]!r}")
    assert not wrong, "\n".join(wrong)


def assert_same_statistics(run: CorpusRun) -> None:
    assert run.fast_statistics, "the corpus changed no statistics at all"
    assert run.fast_statistics == run.asgi_statistics


def assert_same_counters(run: CorpusRun) -> None:
    assert only(run.fast_counters, "servecore_requests_total", "servecore_http_errors_total")
    assert run.fast_counters == run.asgi_counters
    assert run.inflight == (0, 0)


def assert_routes(run: CorpusRun) -> None:
    """On the fast server every request went the way its case says; the other never offers any."""
    seen = routes(run.pair.fast)
    wrong = []
    for case in run.cases:
        for index, request in enumerate(case.requests):
            got = seen.get(case.tag(index), [Route.UNOFFERED])
            if len(got) != 1:
                wrong.append(f"{case.tag(index)}: offered {len(got)} times")
            elif request.route is not Route.EITHER and got[0] is not request.route:
                wrong.append(f"{case.tag(index)}: {got[0].value}, expected {request.route.value}")
    assert not wrong, "\n".join(wrong)
    assert run.pair.asgi.decisions() == [], "the --no-fast-path server offered requests to the fast path"


# -- 1. the corpus, on the default server and on --no-fast-path -----------------------------------


@pytest.fixture(scope="module")
def corpus_run(pair: Pair) -> CorpusRun:
    return run_corpus(pair, corpus())


def test_the_corpus_gets_the_statuses_it_was_written_for(corpus_run: CorpusRun) -> None:
    assert_expected_statuses(corpus_run)


def test_both_paths_answer_every_request_with_the_same_bytes(corpus_run: CorpusRun) -> None:
    assert_same_answers(corpus_run)


def test_both_paths_count_the_same_statistics(corpus_run: CorpusRun) -> None:
    assert_same_statistics(corpus_run)


def test_both_paths_count_the_same_metrics(corpus_run: CorpusRun) -> None:
    assert_same_counters(corpus_run)


def test_the_fast_path_takes_good_requests_and_leaves_the_rest_to_the_app(corpus_run: CorpusRun) -> None:
    assert_routes(corpus_run)
    taken = [tag for tag, route in routes(corpus_run.pair.fast).items() if route == [Route.TAKEN]]
    assert len(taken) >= 40, taken


def test_with_api_keys_both_paths_answer_and_count_the_same(auth_pair: Pair) -> None:
    run = run_corpus(auth_pair, auth_corpus(), headers=AUTH)
    assert_expected_statuses(run)
    assert_same_answers(run)
    assert_same_statistics(run)
    assert_same_counters(run)
    assert_routes(run)


# -- 2. under load ----------------------------------------------------------------------------------

CONNECTIONS = 40
PIPELINED = 5


@dataclass(frozen=True)
class LoadRequest:
    kind: str
    wire: bytes
    status: int
    #: the inputs, to check the answer against (by kind)
    inputs: tuple[Any, ...] = ()


def load_requests() -> list[LoadRequest]:
    """CONNECTIONS * PIPELINED distinct requests, good and bad, JSON and binary, over four models."""
    out = []
    for i in range(CONNECTIONS * PIPELINED):
        rows = 1 + i % 4
        kind = ("add_sub", "mlp", "identity", "bytes", "mlp", "bad input", "add_sub", "too many rows")[i % 8]
        tag = f"load#{i}"
        if kind == "add_sub":
            doc = add_sub_doc(10_000 + 2 * i, rows)
            a, b = (np.asarray(t["data"], np.float32).reshape(t["shape"]) for t in doc["inputs"])
            out.append(LoadRequest(kind, http_request(ADD_SUB, js(doc), tag=tag), 200, (a, b)))
        elif kind == "mlp":
            body, headers = mlp_binary(20_000 + i, rows, id=tag, parameters={"binary_data_output": True})
            out.append(LoadRequest(kind, http_request(MLP, body, tag=tag, headers=headers), 200, (mlp_x(20_000 + i, rows),)))
        elif kind == "identity":
            x = distinct(30_000 + i, rows, 2 + i % 3)
            body, headers = fp32_binary(x)
            out.append(LoadRequest(kind, http_request(FP32, body, tag=tag, headers=headers), 200, (x,)))
        elif kind == "bytes":
            items = [f"{tag}/{j}" for j in range(rows)]
            doc = {"id": tag, "inputs": [tensor("INPUT0", [1, rows], "BYTES", items)]}
            out.append(LoadRequest(kind, http_request(BYTES, js(doc), tag=tag), 200, (items,)))
        elif kind == "bad input":
            out.append(LoadRequest(kind, http_request(MLP, js(mlp_doc(40_000 + i, rows, name="x")), tag=tag), 400))
        else:
            doc = fp32_doc(distinct(50_000 + i, MAX_BATCH + 1, 2))
            out.append(LoadRequest(kind, http_request(FP32, js(doc), tag=tag), 400))
    return out


def under_load(port: int, requests: list[LoadRequest]) -> list[bytes]:
    """Open CONNECTIONS connections, then send PIPELINED requests on each at once (one send per
    connection); every response, without its date, in request order."""
    barrier = threading.Barrier(CONNECTIONS)

    def connection(index: int) -> list[bytes]:
        mine = requests[index * PIPELINED:(index + 1) * PIPELINED]
        with socket.create_connection(("127.0.0.1", port), timeout=GUARD) as sock:
            reader = RawReader(sock)
            barrier.wait(GUARD)
            sock.sendall(b"".join(r.wire for r in mine))
            return [without_date(reader.response()) for _ in mine]

    with ThreadPoolExecutor(CONNECTIONS) as pool:
        return [response for answers in pool.map(connection, range(CONNECTIONS)) for response in answers]


def check_answer(request: LoadRequest, response: bytes, mlp: onnxruntime.InferenceSession) -> None:
    """*response* is *request*'s own answer."""
    status, _, body = parts(response)
    assert status == request.status, (request.kind, response[:500])
    if status != 200:
        assert set(json.loads(body)) == {"error"}
    elif request.kind == "add_sub":
        a, b = request.inputs
        out = tensors(response)
        np.testing.assert_array_equal(out["OUTPUT0"], a + b)
        np.testing.assert_array_equal(out["OUTPUT1"], a - b)
    elif request.kind == "mlp":
        (x,) = request.inputs
        (expected,) = mlp.run(["logits"], {"input": x.astype(np.float32)})
        # loose enough for a batch of another size; another request's logits differ by whole units
        np.testing.assert_allclose(tensors(response)["logits"], expected, rtol=1e-4, atol=1e-3)
    elif request.kind == "identity":
        np.testing.assert_array_equal(tensors(response)["OUTPUT0"], request.inputs[0])
    else:
        (items,) = request.inputs
        document = json.loads(body)
        assert document["outputs"][0]["data"] == items and document["id"] == items[0].split("/")[0]


def test_hundreds_of_concurrent_pipelined_requests_get_their_own_answers_on_both_paths(
    pair: Pair, batch_models: dict[str, Path]
) -> None:
    """200 requests on 40 connections at once: each answer is that request's own, and the same
    as the --no-fast-path server's under the same load (byte for byte but for the MLP's floats,
    which may be computed in batches of other sizes); both count the same requests and errors."""
    requests = load_requests()
    mlp = onnxruntime.InferenceSession(str(batch_models["mlp"]), providers=["CPUExecutionProvider"])
    before = {s: (statistics(s.url), counters(s.url)) for s in (pair.fast, pair.asgi)}
    fast = under_load(pair.fast.port, requests)
    asgi = under_load(pair.asgi.port, requests)
    after = {s: (statistics(s.url), counters(s.url)) for s in (pair.fast, pair.asgi)}
    for request, fast_answer, asgi_answer in zip(requests, fast, asgi):
        check_answer(request, fast_answer, mlp)
        check_answer(request, asgi_answer, mlp)
        if request.kind != "mlp":
            assert fast_answer == asgi_answer, (request.kind, fast_answer[:800], asgi_answer[:800])
        else:
            assert parts(fast_answer)[1] == parts(asgi_answer)[1]  # the same headers
    # batch compositions differ from run to run; what each request counts does not
    per_request = (" inference_count", " success.count", " fail.count", " queue.count", " compute_infer.count")
    fast_stats, asgi_stats = (
        {k: v for k, v in only(change(before[s][0], after[s][0]), *per_request).items() if "batch_size=" not in k}
        for s in (pair.fast, pair.asgi)
    )
    assert fast_stats and fast_stats == asgi_stats
    by_request = ("servecore_requests_total", "servecore_http_errors_total", "servecore_request_duration_seconds_count",
                  "servecore_queue_duration_seconds_count", "servecore_batch_rejected", "servecore_batch_expired")
    fast_counts, asgi_counts = (only(change(before[s][1], after[s][1]), *by_request) for s in (pair.fast, pair.asgi))
    assert fast_counts == asgi_counts
    assert fast_counts["servecore_http_errors_total{status=400}"] == sum(r.status == 400 for r in requests)
    for server in (pair.fast, pair.asgi):
        assert counters(server.url)["servecore_inflight_requests{}"] == 0


# -- 3. queueing: deadlines, admission and disconnects ---------------------------------------------


SLOW = "/v2/models/slow/infer"


@dataclass(frozen=True)
class QueueRun:
    answers: dict[str, bytes]
    statistics: dict[str, int]
    counters: dict[str, float]


def queue_scenario(server: ProbedServer, hold: int) -> QueueRun:
    """On a fresh server of the slow model (one instance, a queue of 2 rows, nothing inline):

    a holder runs; a request with a 20 ms timeout expires in the queue (504); a client queues a
    request with another pipelined behind it and disconnects (499, neither runs); two requests
    queue (one with ``Connection: close``, one HTTP/1.0) and a third is refused (429); the holder
    and the two are answered; a client whose batch is running disconnects (499); a last request
    is answered.
    """
    url, port = server.url, server.port

    def errors(status: int) -> float:
        return counters(url).get(f"servecore_http_errors_total{{status={status}}}", 0)

    def request(tag: str, document: dict[str, Any], **options: Any) -> bytes:
        return http_request(SLOW, js(document), tag=tag, **options)

    answers: dict[str, bytes] = {}
    with ExitStack() as stack:

        def send(*requests: bytes) -> tuple[socket.socket, RawReader]:
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=GUARD))
            sock.sendall(b"".join(requests))
            return sock, RawReader(sock)

        _, holder = send(request("holder", slow_doc(2 * hold)))
        eventually(lambda: inflight(url) == 1, "the holder to run")
        _, expiring = send(request("expires", slow_doc(1, timeout=20_000)))
        answers["expires"] = expiring.response()
        leaving, _ = send(request("leaves#0", slow_doc(hold)), request("leaves#1", slow_doc(hold)))
        eventually(lambda: inflight(url) == 2, "the leaving client's request to queue")
        leaving.close()
        eventually(lambda: errors(499) == 1 and inflight(url) == 1, "the server to drop the queued request")
        # answered later, from the batch's completion: the connection closes after the answer
        queued = [
            send(request("queued#0", slow_doc(1), headers=(("Connection", "close"),)))[1],
            send(request("queued#1", slow_doc(1), version="1.0"))[1],
        ]
        eventually(lambda: inflight(url) == 3, "two requests queued")
        _, refused = send(request("refused", slow_doc(1)))
        answers["refused"] = refused.response()
        answers["holder"] = holder.response()
        for i, reader in enumerate(queued):
            answers[f"queued#{i}"] = reader.response()
            assert reader.closed(), f"queued#{i}: the connection stayed open"
        running, _ = send(request("runs, then leaves", slow_doc(hold)))
        eventually(lambda: inflight(url) == 1, "the request to run")
        running.close()
        eventually(lambda: errors(499) == 2 and inflight(url) == 0, "the server to notice the client left")
        _, last = send(request("last", slow_doc(1)))
        answers["last"] = last.response()
    return QueueRun({k: without_date(v) for k, v in answers.items()}, statistics(url), counters(url))


def timing_free(response: bytes) -> bytes:
    """*response* without what depends on the clock: the µs waited in a 504's message (and so the
    content length), the seconds of a 429's Retry-After."""
    response = re.sub(rb"after \d+ \xc2\xb5s", b"after N \xc2\xb5s", response)
    response = re.sub(rb"(?im)^retry-after: \d+", b"retry-after: N", response)
    return re.sub(rb"(?im)^content-length: \d+", b"content-length: N", response)


@pytest.mark.timeout(600)
def test_deadlines_admission_and_disconnects_in_the_queue_on_both_paths(
    batch_models: dict[str, Path], hold_steps: int, tmp_path: Path
) -> None:
    args = [str(batch_models["slow"]), "--max-batch-size", "8", "--inline-compute-us", "0", "--max-queue-size", "2"]
    with ExitStack() as stack:
        pair = start_pair(stack, args, tmp_path / "logs")
        fast, asgi = queue_scenario(pair.fast, hold_steps), queue_scenario(pair.asgi, hold_steps)
        fast_routes, asgi_routes = routes(pair.fast), routes(pair.asgi)
    for run in (fast, asgi):
        assert [status_of(run.answers[k]) for k in ("holder", "queued#0", "queued#1", "last")] == [200] * 4
        status, headers, body = parts(run.answers["expires"])
        assert status == 504 and headers["content-type"] == "application/json", run.answers["expires"]
        assert "timed out" in json.loads(body)["error"] and "not run" in json.loads(body)["error"]
        status, headers, body = parts(run.answers["refused"])
        assert status == 429 and headers["content-type"] == "application/json", run.answers["refused"]
        assert "queue is full" in json.loads(body)["error"]
        assert headers["retry-after"].isdigit() and int(headers["retry-after"]) >= 1
        # the holder, the two queued together, the one whose client left while it ran, the last:
        # never the request of the client that left while queued, nor the one pipelined behind it
        assert run.statistics["slow/1 execution_count"] == 4, run.statistics
        assert run.counters["servecore_batch_expired_requests_total{model=slow,version=1}"] == 1
        assert run.counters["servecore_batch_rejected_requests_total{model=slow,reason=queue_full,version=1}"] == 1
        assert run.counters["servecore_inflight_requests{}"] == 0
    for step in ("holder", "queued#0", "queued#1", "last"):
        assert fast.answers[step] == asgi.answers[step], step
    for step in ("queued#0", "queued#1"):
        assert parts(fast.answers[step])[1]["connection"] == "close", fast.answers[step][:300]
    for step in ("expires", "refused"):
        assert timing_free(fast.answers[step]) == timing_free(asgi.answers[step]), (fast.answers[step], asgi.answers[step])
    assert fast.statistics == asgi.statistics
    assert fast.counters == asgi.counters
    taken = ["holder", "expires", "leaves#0", "queued#0", "queued#1", "refused", "runs, then leaves", "last"]
    assert fast_routes == {tag: [Route.TAKEN] for tag in taken}  # leaves#1 never started
    assert asgi_routes == {}


# -- routing ---------------------------------------------------------------------------------------


def test_match_routes_like_the_app_and_remembers_a_bounded_number_of_paths(batch_models: dict[str, Path]) -> None:  # noqa: F811
    from servecore.config import ServeConfig
    from servecore.dataplane import create_dataplane
    from servecore.http import fastpath
    from servecore.http.app import ServecoreApp
    from servecore.plugins import get_plugin_manager

    config = ServeConfig(models=(str(batch_models["identity_fp32"]),), max_batch_size=MAX_BATCH)
    dp = create_dataplane(config, get_plugin_manager(load_entrypoints=False))
    try:
        fast = fastpath.FastInfer(ServecoreApp(dp))
        cases = {
            "/v2/models/identity_fp32/infer": ("identity_fp32", None),
            "/v2/models/identity_fp32/versions/1/infer": ("identity_fp32", "1"),
            "/v2/models/unknown/infer": ("unknown", None),  # which models exist is handle's business
            "/v2/models/identity_fp32": None,
            "/v2/models/identity_fp32/ready": None,
            "/v2/models/identity_fp32/infer/more": None,
            "/v2/repository/models/identity_fp32/load": None,
            "/v2/health/ready": None,
            "/nothing": None,
        }
        for _ in range(2):  # the second time from what it remembered
            assert {path: fast.match(path) for path in cases} == cases
        for i in range(3 * fastpath.MAX_PATHS):
            assert fast.match(f"/v2/models/m{i}/infer") == (f"m{i}", None)
            assert len(fast._tokens) <= fastpath.MAX_PATHS
        assert {path: fast.match(path) for path in cases} == cases
    finally:
        dp.close()
