"""servecore-mlflow against a real MLflow server: URI parsing, the registry function in-process
(resolution, download cache, errors), and real servecore servers following versions and aliases."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import pytest
from mlflow_support import Registry, Server, free_port
from servecore.config import ServeConfig
from servecore.errors import ModelLoadError
from servecore.plugins import get_plugin_manager, list_plugins
from servecore.registries import Registries

import servecore_mlflow
from servecore_mlflow import MARKER, ModelReference, parse_uri, resolve

DISTRIBUTION = "servecore-mlflow"
X = [0.0, 1.0, 2.0, 3.0]
INFER = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": X}]}


def answer(client: httpx.Client, name: str) -> tuple[str, int]:
    """(model_version, the constant the answering version adds) of one unversioned request."""
    response = client.post(f"/v2/models/{name}/infer", json=INFER)
    assert response.status_code == 200, response.text
    body = response.json()
    [output] = body["outputs"]
    added = {round(y - x, 3) for x, y in zip(X, output["data"], strict=True)}
    assert len(added) == 1, output
    return body["model_version"], int(added.pop())


def index(client: httpx.Client, name: str) -> dict[str, str]:
    """version -> state of model *name* in the repository index."""
    response = client.post("/v2/repository/index", json={})
    assert response.status_code == 200, response.text
    return {e["version"]: e["state"] for e in response.json() if e["name"] == name}


def config(tmp_path: Path) -> ServeConfig:
    return ServeConfig(model_cache_dir=str(tmp_path / "cache"))


# -- URIs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("mlflow:/models/fraud/3", ModelReference("fraud", "3")),
        ("mlflow:models/fraud/03", ModelReference("fraud", "3")),
        ("mlflow://models/fraud/champion", ModelReference("fraud", "champion")),
        ("MLFLOW:/models/fraud-detector_v2/latest", ModelReference("fraud-detector_v2", "latest")),
    ],
)
def test_parses_model_uris(uri: str, expected: ModelReference) -> None:
    assert parse_uri(uri) == expected


@pytest.mark.parametrize(
    "uri",
    ["mlflow:/models/fraud", "mlflow:/models/fraud/1/extra", "mlflow:/runs/abc/model", "mlflow:/models//1", "file:/x"],
)
def test_refuses_other_uris(uri: str) -> None:
    with pytest.raises(ModelLoadError, match="mlflow:/models/<name>/"):
        parse_uri(uri)


def test_needs_a_tracking_uri(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    with pytest.raises(ModelLoadError, match="mlflow:/models/fraud/1: MLFLOW_TRACKING_URI is not set"):
        resolve("mlflow:/models/fraud/1", config(tmp_path))
    assert not (tmp_path / "cache").exists()


# -- the plugin ----------------------------------------------------------------------------------


def test_registers_the_mlflow_scheme(installed: metadata.Distribution) -> None:
    pm = get_plugin_manager()
    info = {i.name: i for i in list_plugins(pm)}["mlflow"]
    assert (info.distribution, info.version, info.builtin) == (DISTRIBUTION, installed.version, False)
    assert info.hooks == ("servecore_register_registries",)
    registries = Registries.from_plugins(pm)
    assert "mlflow" in registries
    assert registries.scheme_of("mlflow:/models/fraud/1") == "mlflow"
    assert pm.get_plugin("mlflow") is servecore_mlflow


# -- the registry function, in-process -------------------------------------------------------------


def test_resolves_versions_aliases_and_latest(registry: Registry, tmp_path: Path) -> None:
    one = registry.register("resolve-demo", 1)
    two = registry.register("resolve-demo", 2)
    registry.client.set_registered_model_alias("resolve-demo", "champion", one)
    registry.client.update_registered_model("resolve-demo", description="a model")
    registry.client.set_model_version_tag("resolve-demo", two, "owner", "risk-team")
    cfg = config(tmp_path)

    [d] = resolve("mlflow:/models/resolve-demo/champion", cfg)
    assert (d.name, list(d.versions), d.origin) == ("resolve-demo", [one], "mlflow:/models/resolve-demo/champion")
    assert d.versions[one] == cfg.resolved_model_cache_dir / "mlflow" / "resolve-demo" / one / "model.onnx"
    assert (d.settings.description, d.settings.owner) == ("a model", "")

    [d] = resolve("mlflow:/models/resolve-demo/latest", cfg)
    assert list(d.versions) == [two]
    assert (d.settings.description, d.settings.owner) == ("a model", "risk-team")
    [d] = resolve(f"mlflow://models/resolve-demo/{two}", cfg)
    assert list(d.versions) == [two]

    # downloaded whole, then renamed: nothing partial is left beside the versions
    assert sorted(p.name for p in (cfg.resolved_model_cache_dir / "mlflow" / "resolve-demo").iterdir()) == [one, two]
    marker = json.loads((d.versions[two].parent / MARKER).read_text())
    assert (marker["registry"], marker["name"], marker["version"]) == (registry.url, "resolve-demo", two)

    # --model-name serves it under another name
    [d] = resolve(
        "mlflow:/models/resolve-demo/champion", ServeConfig(model_cache_dir=cfg.model_cache_dir, model_name="fraud")
    )
    assert d.name == "fraud"


def test_downloads_each_version_once(registry: Registry, tmp_path: Path) -> None:
    version = registry.register("cache-demo", 1)
    cfg = config(tmp_path)
    [first] = resolve(f"mlflow:/models/cache-demo/{version}", cfg)
    artefact = first.versions[version]
    before = artefact.stat()
    [again] = resolve(f"mlflow:/models/cache-demo/{version}", cfg)
    after = again.versions[version].stat()
    # the same file, untouched: what the server fingerprints stays stable from poll to poll
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (before.st_ino, before.st_mtime_ns, before.st_size)


def test_a_cached_version_of_another_origin_is_downloaded_again(registry: Registry, tmp_path: Path) -> None:
    version = registry.register("origin-demo", 1)
    cfg = config(tmp_path)
    [d] = resolve(f"mlflow:/models/origin-demo/{version}", cfg)
    directory = d.versions[version].parent
    marker = json.loads((directory / MARKER).read_text())
    (directory / MARKER).write_text(json.dumps({**marker, "registry": "http://elsewhere:5000"}))
    (directory / "model.onnx").write_bytes(b"not the model")
    [d] = resolve(f"mlflow:/models/origin-demo/{version}", cfg)
    assert d.versions[version].read_bytes() != b"not the model"
    assert json.loads((directory / MARKER).read_text()) == marker
    assert sorted(p.name for p in directory.parent.iterdir()) == [version]


def test_errors_name_what_is_missing(registry: Registry, tmp_path: Path) -> None:
    version = registry.register("errors-demo", 1)
    registry.client.set_registered_model_alias("errors-demo", "champion", version)
    cfg = config(tmp_path)
    with pytest.raises(ModelLoadError, match="has no registered model 'no-such-model'"):
        resolve("mlflow:/models/no-such-model/1", cfg)
    with pytest.raises(ModelLoadError, match="model 'errors-demo' has no version 99"):
        resolve("mlflow:/models/errors-demo/99", cfg)
    with pytest.raises(
        ModelLoadError, match=r"model 'errors-demo' has no alias 'staging' .*\(aliases: champion -> 1\)"
    ):
        resolve("mlflow:/models/errors-demo/staging", cfg)


def test_an_unreachable_server_is_a_model_load_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail at once rather than back off for minutes
    with pytest.raises(ModelLoadError, match=f"MLflow registry {url}"):
        resolve("mlflow:/models/fraud/1", config(tmp_path))


def test_a_version_without_a_servable_artefact(registry: Registry, tmp_path: Path) -> None:
    import mlflow

    with mlflow.start_run() as run:
        mlflow.log_text("not a model", "notes/README.txt")
    registry.client.create_registered_model("no-artefact-demo")
    version = registry.client.create_model_version(
        "no-artefact-demo", f"runs:/{run.info.run_id}/notes", run.info.run_id
    )
    with pytest.raises(ModelLoadError, match=r"no servable artefact: expected a model\.\* file .* found README\.txt"):
        resolve(f"mlflow:/models/no-artefact-demo/{version.version}", config(tmp_path))


# -- real servers --------------------------------------------------------------------------------


def test_serves_a_model_version(registry: Registry, serve: Callable[..., Server]) -> None:
    version = registry.register("fraud", 1)
    registry.client.update_model_version("fraud", version, description="adds one")
    registry.client.set_model_version_tag("fraud", version, "owner", "risk-team")
    server = serve(f"mlflow:/models/fraud/{version}")
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert answer(client, "fraud") == (version, 1)
        metadata_ = client.get("/v2/models/fraud").json()
        assert metadata_["versions"] == [version]
        assert metadata_["platform"] == "onnxruntime_onnx"
        assert metadata_["properties"]["description"] == "adds one"
        assert metadata_["properties"]["owner"] == "risk-team"
        assert client.get(f"/v2/models/fraud/versions/{version}/ready").status_code == 200


def test_follows_an_alias_when_it_moves(registry: Registry, serve: Callable[..., Server]) -> None:
    one = registry.register("router", 1)
    two = registry.register("router", 2)
    registry.client.set_registered_model_alias("router", "champion", one)
    server = serve("mlflow:/models/router/champion", "--model-control", "poll", "--poll-interval", "0.3")
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert answer(client, "router") == (one, 1)
        assert client.get("/v2/models/router").json()["versions"] == [one]
        assert index(client, "router") == {one: "READY"}

        outcomes: Counter[Any] = Counter()
        stop = threading.Event()

        def traffic() -> None:  # unversioned requests all through the move
            with httpx.Client(base_url=server.url, timeout=30) as c:
                while not stop.is_set():
                    try:
                        r = c.post("/v2/models/router/infer", json=INFER)
                    except httpx.TransportError as exc:
                        outcomes[type(exc).__name__] += 1
                        continue
                    outcomes[r.json()["model_version"] if r.status_code == 200 else r.status_code] += 1
                    time.sleep(0.01)

        sender = threading.Thread(target=traffic)
        sender.start()
        try:
            registry.client.set_registered_model_alias("router", "champion", two)
            deadline = time.monotonic() + 30
            while answer_or_none(client) != (two, 2):
                assert time.monotonic() < deadline, f"still not answering as version {two}:\n{server.output()}"
                time.sleep(0.1)
            deadline = time.monotonic() + 30
            while client.get("/v2/models/router").json()["versions"] != [two]:
                assert time.monotonic() < deadline, f"version {one} still listed:\n{server.output()}"
                time.sleep(0.1)
            deadline = time.monotonic() + 30
            while outcomes[two] == 0:  # the traffic, too, has met the new version
                assert time.monotonic() < deadline, f"the traffic never met version {two}: {dict(outcomes)}"
                time.sleep(0.05)
        finally:
            stop.set()
            sender.join()
        states = index(client, "router")
        assert states[two] == "READY"
        assert states.get(one, "UNLOADED") in ("DRAINING", "UNLOADED")
        assert answer(client, "router") == (two, 2)
        assert client.get(f"/v2/models/router/versions/{one}").status_code == 404
        assert outcomes[one] > 0 and outcomes[two] > 0, outcomes
        # the old version serves until the new one is in: no request meets a model without one
        failed = {k: n for k, n in outcomes.items() if k not in (one, two)}
        assert not failed, f"requests failed while the alias moved: {failed} (answered: {dict(outcomes)})"


def answer_or_none(client: httpx.Client) -> tuple[str, int] | None:
    try:
        return answer(client, "router")
    except AssertionError:
        return None


def test_an_unknown_model_stops_the_server(run_cli: Callable[..., Any], tmp_path: Path) -> None:
    result = run_cli(
        "serve", "--port", str(free_port()), "--model-cache-dir", str(tmp_path), "mlflow:/models/no-such-model/1"
    )
    assert result.returncode != 0
    assert "no registered model 'no-such-model'" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_an_unknown_alias_stops_the_server(registry: Registry, run_cli: Callable[..., Any], tmp_path: Path) -> None:
    registry.register("alias-errors", 1)
    result = run_cli(
        "serve", "--port", str(free_port()), "--model-cache-dir", str(tmp_path), "mlflow:/models/alias-errors/nope"
    )
    assert result.returncode != 0
    assert "model 'alias-errors' has no alias 'nope'" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
