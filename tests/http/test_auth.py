"""API keys (``--api-keys-file``): health is open, everything else needs ``Authorization: Bearer <key>``.

Failures are 401 ``{"error": ...}`` as ``application/json``. An invalid keys file stops
``servecore serve`` with a non-zero exit and a message naming the file and line.
(Which principal a request ran as is not exposed by any endpoint yet, so it is not tested here.)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from checks import GOOD_DOC, assert_serving
from server_process import ServerProcess

JSON = "application/json"
KEYS = {"alice": "alice-key-0123456789", "bob": "b0b:with:colons", "ci": "ci-key"}
KEYS_FILE = """\
# servecore API keys: name:key
alice:alice-key-0123456789

   # an indented comment
  bob :  b0b:with:colons
ci:ci-key
"""

#: (method, path, body) of every authenticated endpoint
PROTECTED: list[tuple[str, str, Any]] = [
    ("GET", "/v2", None),
    ("GET", "/v2/", None),
    ("GET", "/v2/models/identity_fp32", None),
    ("GET", "/v2/models/identity_fp32/versions/1", None),
    ("GET", "/v2/models/identity_fp32/ready", None),
    ("GET", "/v2/models/identity_fp32/versions/1/ready", None),
    ("GET", "/v2/models/identity_fp32/config", None),
    ("GET", "/v2/models/identity_fp32/versions/1/config", None),
    ("GET", "/v2/models/identity_fp32/stats", None),
    ("GET", "/v2/models/identity_fp32/versions/1/stats", None),
    ("GET", "/v2/models/stats", None),
    ("GET", "/metrics", None),
    ("POST", "/v2/models/identity_fp32/infer", GOOD_DOC),
    ("POST", "/v2/models/identity_fp32/versions/1/infer", GOOD_DOC),
]
PUBLIC = ["/v2/health/live", "/v2/health/ready"]
BAD_AUTH: list[dict[str, str]] = [
    {},
    {"Authorization": "Bearer wrong-key"},
    {"Authorization": "Bearer alice-key-012345678"},  # a prefix of a key
    {"Authorization": "Bearer alice-key-0123456789x"},  # a key plus more
    {"Authorization": "Bearer alice"},  # a name, not a key
    {"Authorization": "Basic x"},
    {"Authorization": "Basic YWxpY2U6YWxpY2Uta2V5LTAxMjM0NTY3ODk="},
    {"Authorization": "Bearer"},
    {"Authorization": ""},
    {"Authorization": "alice-key-0123456789"},  # the key without a scheme
    {"Authorization": "Token alice-key-0123456789"},
    {"X-API-Key": "alice-key-0123456789"},
]


def assert_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["content-type"] == JSON, response.headers
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"], body
    return str(body["error"])


def call(client: httpx.Client, method: str, path: str, body: Any, headers: dict[str, str]) -> httpx.Response:
    return client.request(method, path, content=None if body is None else json.dumps(body), headers=headers)


def assert_ok(response: httpx.Response, path: str) -> None:
    assert response.status_code == 200, (path, response.status_code, response.text[:300])
    if path != "/metrics":
        assert response.headers["content-type"] == JSON


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "api-keys.txt"
    path.write_text(KEYS_FILE, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def auth_server(model_paths: dict[str, Path], keys_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    args = ["--api-keys-file", str(keys_file), str(model_paths["identity_fp32"])]
    with ServerProcess(args, log_dir=tmp_path_factory.mktemp("auth-logs")) as proc:  # readiness is public
        yield proc


@pytest.fixture
def client(auth_server: ServerProcess) -> Iterator[httpx.Client]:
    """A client of the keyed server; after each test a keyed inference still works."""
    with httpx.Client(base_url=auth_server.url, timeout=10.0) as c:
        yield c
        assert_serving(c, headers={"Authorization": f"Bearer {KEYS['ci']}"})


@pytest.mark.parametrize("path", PUBLIC)
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}], ids=["none", "wrong", "basic"])
def test_health_is_open(client: httpx.Client, path: str, headers: dict[str, str]) -> None:
    response = client.get(path, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == JSON


@pytest.mark.parametrize(("method", "path", "body"), PROTECTED, ids=[f"{m} {p}" for m, p, _ in PROTECTED])
@pytest.mark.parametrize("headers", BAD_AUTH, ids=[repr(h) for h in BAD_AUTH])
def test_protected_endpoints_refuse_bad_credentials(client: httpx.Client, method: str, path: str, body: Any, headers: dict[str, str]) -> None:
    message = assert_error(call(client, method, path, body, headers), 401)
    for key in KEYS.values():
        assert key not in message


def test_401_says_how_to_authenticate(client: httpx.Client) -> None:
    response = client.get("/v2")
    assert_error(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "Bearer" in response.json()["error"]


@pytest.mark.parametrize(("method", "path", "body"), PROTECTED, ids=[f"{m} {p}" for m, p, _ in PROTECTED])
@pytest.mark.parametrize("name", sorted(KEYS))
def test_each_valid_key_works(client: httpx.Client, method: str, path: str, body: Any, name: str) -> None:
    assert_ok(call(client, method, path, body, {"Authorization": f"Bearer {KEYS[name]}"}), path)


@pytest.mark.parametrize(
    "value",
    [f"bearer {KEYS['alice']}", f"BEARER {KEYS['alice']}", f"Bearer  {KEYS['alice']}", f"Bearer\t{KEYS['alice']}"],
    ids=["lower", "upper", "spaces", "tab"],
)
def test_scheme_is_case_insensitive_and_whitespace_tolerant(client: httpx.Client, value: str) -> None:
    response = client.get("/v2/models/identity_fp32", headers={"Authorization": value})
    if value.startswith("Bearer\t"):
        # RFC 9110 puts one SP between scheme and token; a tab may be refused, but only with a 401
        if response.status_code != 200:
            assert_error(response, 401)
        return
    assert_ok(response, "/v2/models/identity_fp32")


def test_auth_is_checked_before_the_body(client: httpx.Client) -> None:
    """A bad body without a key is a 401, not a 400; an unknown model without a key is a 401 too."""
    assert_error(client.post("/v2/models/identity_fp32/infer", content=b"not json"), 401)
    assert_error(client.post("/v2/models/missing/infer", content=b"{}"), 401)
    assert_error(client.get("/v2/models/missing"), 401)
    headers = {"Authorization": f"Bearer {KEYS['bob']}"}
    assert_error(client.post("/v2/models/identity_fp32/infer", content=b"not json", headers=headers), 400)
    assert_error(client.get("/v2/models/missing", headers=headers), 404)


def test_unknown_routes_stay_404(client: httpx.Client) -> None:
    assert_error(client.get("/nothing"), 404)
    assert_error(client.get("/v2/health/live/x"), 404)
    assert_error(client.post("/v2/health/live"), 405)


def test_refused_requests_are_counted_and_keep_the_connection(client: httpx.Client) -> None:
    for _ in range(10):
        assert_error(client.get("/v2"), 401)
        assert_ok(client.get("/v2", headers={"Authorization": f"Bearer {KEYS['alice']}"}), "/v2")
    metrics = client.get("/metrics", headers={"Authorization": f"Bearer {KEYS['alice']}"})
    assert_ok(metrics, "/metrics")
    assert "401" in metrics.text


@pytest.mark.parametrize("value", ["Bearer \xe9\xff", "Bearer   ", "Bearer \xe9" + KEYS["alice"], "\xe9"])
def test_odd_authorization_header_bytes(auth_server: ServerProcess, value: str) -> None:
    """Values httpx will not send (latin-1 bytes, trailing spaces): a 401, not a 500."""
    import socket

    request = (
        f"GET /v2 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {value}\r\nConnection: close\r\n\r\n"
    ).encode("latin-1")
    with socket.create_connection(("127.0.0.1", auth_server.port), timeout=10.0) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.split()[1] == b"401", data
    assert b"content-type: application/json\r\n" in head.lower() + b"\r\n"
    assert "error" in json.loads(body)


# -- invalid keys files ------------------------------------------------------------------------------


StartServer = Callable[..., ServerProcess]


def _fails_to_start(start_server: StartServer, args: list[str]) -> str:
    proc = start_server(args, expect_ready=False)
    code = proc.wait(timeout=60)
    assert code != 0
    return proc.stderr() + proc.stdout()


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("alice:a\nthis line has no colon\n", 2),
        ("# keys\n\nalice:a\n:nameless\n", 4),
        ("alice:a\nbob:\n", 2),
        ("alice:a\nbob:b\nalice:c\n", 3),  # a name twice
        ("alice:a\n  # comment\nbob:a\n", 3),  # a key twice
    ],
    ids=["no-colon", "no-name", "no-key", "duplicate-name", "duplicate-key"],
)
def test_invalid_keys_file(start_server: StartServer, model_paths: dict[str, Path], tmp_path: Path, text: str, line: int) -> None:
    path = tmp_path / "keys.txt"
    path.write_text(text, encoding="utf-8")
    output = _fails_to_start(start_server, ["--api-keys-file", str(path), str(model_paths["identity_fp32"])])
    assert f"{path}:{line}" in output, output
    assert "Traceback" not in output, output


def test_keys_file_without_keys(start_server: StartServer, model_paths: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_text("# nothing here\n\n", encoding="utf-8")
    output = _fails_to_start(start_server, ["--api-keys-file", str(path), str(model_paths["identity_fp32"])])
    assert str(path) in output, output
    assert "Traceback" not in output, output


def test_missing_keys_file(start_server: StartServer, model_paths: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "does-not-exist.txt"
    output = _fails_to_start(start_server, ["--api-keys-file", str(path), str(model_paths["identity_fp32"])])
    assert str(path) in output, output
    assert "Traceback" not in output, output


def test_keys_file_from_the_environment(start_server: StartServer, model_paths: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "keys.txt"
    path.write_text("env:env-key\n", encoding="utf-8")
    proc = start_server([str(model_paths["identity_fp32"])], env={"SERVECORE_API_KEYS_FILE": str(path)})
    with httpx.Client(base_url=proc.url, timeout=10.0) as c:
        assert_error(c.get("/v2"), 401)
        assert_ok(c.get("/v2", headers={"Authorization": "Bearer env-key"}), "/v2")
