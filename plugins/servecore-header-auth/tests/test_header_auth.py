"""servecore-header-auth, through the plugin contract only: unit tests of the authenticator, the
hook in an in-process plugin manager, and real servers with the installed distribution."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from typing import Callable

import httpx
import pytest
import servecore_header_auth
from servecore_header_auth import ENV_HEADER, HeaderAuthenticator, from_environ

from servecore.config import ServeConfig
from servecore.dataplane import DataPlane
from servecore.errors import AuthenticationError, ConfigError
from servecore.plugins import get_plugin_manager, list_plugins
from servecore.types import Principal

HEADER = "X-Forwarded-User"
INFER = {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}]}


# -- the authenticator ---------------------------------------------------------------------------


def test_authenticates_as_the_header_value() -> None:
    auth = HeaderAuthenticator("x-forwarded-user")
    assert auth({"x-forwarded-user": " alice@example.com "}) == Principal("alice@example.com", "header:x-forwarded-user")
    assert auth({"authorization": "Bearer k"}) is None  # not ours: other authenticators may accept it


@pytest.mark.parametrize("value", ["", "   ", "a\tb", "bad\x00", "x" * 257])
def test_refuses_empty_or_malformed_identities(value: str) -> None:
    with pytest.raises(AuthenticationError, match="x-forwarded-user"):
        HeaderAuthenticator("x-forwarded-user")({"x-forwarded-user": value})


def test_configuration_from_the_environment() -> None:
    assert from_environ({}) is None
    assert from_environ({ENV_HEADER: "  "}) is None
    assert from_environ({ENV_HEADER: "X-Forwarded-User"}) == HeaderAuthenticator("x-forwarded-user")
    for bad in ("X Forwarded User", "X-User:", "Authorization", "cookie"):
        with pytest.raises(ConfigError, match=ENV_HEADER):
            from_environ({ENV_HEADER: bad})


# -- the hook, in-process --------------------------------------------------------------------------


def _dataplane() -> DataPlane:
    pm = get_plugin_manager(load_entrypoints=False, extra_plugins=[("header-auth", servecore_header_auth)])
    return DataPlane(config=ServeConfig(), pm=pm)


def test_registers_nothing_unless_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_HEADER, raising=False)
    assert not _dataplane().requires_auth


def test_registers_the_authenticator_when_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_HEADER, HEADER)
    dp = _dataplane()
    assert dp.requires_auth
    assert dp.authenticate({"x-forwarded-user": "bob"}) == Principal("bob", "header:x-forwarded-user")
    with pytest.raises(AuthenticationError):
        dp.authenticate({})


def test_a_bad_header_name_stops_the_server_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_HEADER, "Authorization")
    with pytest.raises(ConfigError):
        _dataplane()


# -- installed: the entry point, `servecore plugins`, real servers ------------------------------


def test_listed_by_the_plugin_manager(installed: metadata.Distribution) -> None:
    infos = {i.name: i for i in list_plugins(get_plugin_manager())}
    info = infos["header-auth"]
    assert (info.distribution, info.version, info.builtin) == ("servecore-header-auth", installed.version, False)
    assert info.hooks == ("servecore_register_authenticators",)


def test_servecore_plugins_lists_it(installed: metadata.Distribution, run_cli: Callable[..., object]) -> None:
    result = run_cli("plugins")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    entry = f"header-auth {installed.version} (servecore-header-auth)"
    assert entry in lines
    assert lines[lines.index(entry) + 1].strip() == "servecore_register_authenticators"

    result = run_cli("plugins", "--json")
    payload = json.loads(result.stdout)
    [plugin] = [p for p in payload["plugins"] if p["name"] == "header-auth"]
    assert plugin == {
        "name": "header-auth",
        "version": installed.version,
        "distribution": "servecore-header-auth",
        "hooks": ["servecore_register_authenticators"],
        "builtin": False,
    }


def test_servecore_plugins_shows_it_disabled(run_cli: Callable[..., object]) -> None:
    result = run_cli("plugins", "--json", env={"SERVECORE_DISABLE_PLUGINS": "header-auth"})
    payload = json.loads(result.stdout)
    assert "header-auth" not in [p["name"] for p in payload["plugins"]]
    assert payload["disabled"] == ["header-auth"]


def test_a_server_authenticates_through_the_plugin(serve: Callable[..., object]) -> None:
    server = serve(env={ENV_HEADER: HEADER})
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.get("/v2/health/live").status_code == 200
        assert client.get("/v2/health/ready").status_code == 200
        refused = client.post("/v2/models/mlp/infer", json=INFER)
        assert refused.status_code == 401 and "error" in refused.json()
        assert client.get("/v2/models/mlp", headers={HEADER: ""}).status_code == 401
        assert client.get("/v2/models/mlp", headers={HEADER: "alice"}).status_code == 200
        # header names are case-insensitive
        ok = client.post("/v2/models/mlp/infer", json=INFER, headers={HEADER.lower(): "alice"})
        assert ok.status_code == 200, ok.text
        assert ok.json()["outputs"][0]["shape"] == [1, 10]


def test_works_beside_the_built_in_api_keys(serve: Callable[..., object], tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("ci:k-123\n")
    server = serve("--api-keys-file", str(keys), env={ENV_HEADER: HEADER})
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.get("/v2/models/mlp").status_code == 401
        assert client.get("/v2/models/mlp", headers={HEADER: "alice"}).status_code == 200
        assert client.get("/v2/models/mlp", headers={"Authorization": "Bearer k-123"}).status_code == 200
        assert client.get("/v2/models/mlp", headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_disable_plugins_turns_it_off(serve: Callable[..., object]) -> None:
    server = serve(env={ENV_HEADER: HEADER, "SERVECORE_DISABLE_PLUGINS": "header-auth"})
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.get("/v2/models/mlp").status_code == 200  # open again
        assert client.post("/v2/models/mlp/infer", json=INFER).status_code == 200


def test_disable_plugins_option_turns_it_off(serve: Callable[..., object]) -> None:
    server = serve("--disable-plugins", "header-auth", env={ENV_HEADER: HEADER})
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.get("/v2/models/mlp").status_code == 200


def test_a_bad_header_name_is_a_clean_start_up_error(run_cli: Callable[..., object]) -> None:
    result = run_cli("serve", "--port", "0", env={ENV_HEADER: "Not A Header"})
    assert result.returncode != 0
    assert f"error: {ENV_HEADER}=" in result.stderr
    assert "Traceback" not in result.stderr
