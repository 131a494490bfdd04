"""The plugin manager and every hook, exercised in-process with plugins defined in the tests.

Each hook has a ``test_hook_<name>`` test (checked by tests/test_meta.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import httpx
import numpy as np
import pluggy
import pytest

import servecore.plugins
from servecore import __version__, hookimpl
from servecore.config import ServeConfig
from servecore.dataplane import DataPlane, demo_model_path
from servecore.errors import AuthenticationError, ConfigError, ModelLoadError
from servecore.http.app import ServecoreApp
from servecore.models import BackendRegistry
from servecore.plugins import (
    DEFAULT_PLUGINS,
    blocked_plugins,
    get_plugin_manager,
    list_plugins,
)
from servecore.types import (
    Backend,
    InferenceRequest,
    InferInput,
    ModelDefinition,
    ModelEvent,
    ModelSettings,
    ModelSource,
    Principal,
    TensorSpec,
)

BUILTINS = [name for name, _ in DEFAULT_PLUGINS]


# -- a third-party backend: a weight matrix saved with numpy.save, served as y = x @ W ----------


class NpyLinearBackend:
    name = "npy-linear"
    platform = "numpy_linear"
    max_batch_size = 0

    def __init__(self, weights: np.ndarray) -> None:
        self.weights = weights
        n_in, n_out = weights.shape
        self.inputs = [TensorSpec("x", "FP32", (-1, n_in))]
        self.outputs = [TensorSpec("y", "FP32", (-1, n_out))]
        self.properties = {"weights": f"{n_in}x{n_out}"}
        self.closed = False

    def infer(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        return {"y": inputs["x"] @ self.weights}

    def close(self) -> None:
        self.closed = True


def load_npy_linear(source: ModelSource, config: ServeConfig) -> NpyLinearBackend:
    weights = np.load(source.path, allow_pickle=False)
    if weights.ndim != 2:
        raise ModelLoadError(f"model {source.name!r}: not a matrix")
    return NpyLinearBackend(weights.astype(np.float32))


class NpyLinearPlugin:
    """Registers the backend under *name* with *priority*; a class instance is a plugin too."""

    def __init__(self, name: str = "npy-linear", priority: int = 0) -> None:
        self.name = name
        self.priority = priority

    @hookimpl
    def servecore_register_backends(self, register: Any) -> None:
        register(self.name, load_npy_linear, suffixes=(".linear.npy",), priority=self.priority)


@pytest.fixture
def weights_file(tmp_path: Path) -> Path:
    path = tmp_path / "weights.linear.npy"
    np.save(path, np.arange(12, dtype=np.float32).reshape(4, 3))
    return path


def _pm(*plugins: tuple[str, object], disabled: tuple[str, ...] = ()) -> pluggy.PluginManager:
    """A manager with the built-ins and *plugins* but no installed entry points (hermetic)."""
    return get_plugin_manager(load_entrypoints=False, extra_plugins=plugins, disabled=disabled)


def _infer(dp: DataPlane, model: str, name: str, array: np.ndarray) -> Any:
    datatype = {np.dtype(np.float32): "FP32"}[array.dtype]
    request = InferenceRequest(model, None, [InferInput(name, datatype, array.shape, array)])
    return asyncio.run(dp.infer(request))


# -- servecore_register_backends ---------------------------------------------------------------


def test_hook_servecore_register_backends(weights_file: Path) -> None:
    pm = _pm(("npy-linear", NpyLinearPlugin()))
    registry = BackendRegistry.from_plugins(pm)
    assert {r.name for r in registry} == {"onnxruntime", "torch", "npy-linear"}
    assert registry.for_path(weights_file).name == "npy-linear"
    assert registry.for_path(Path("model.ONNX")).name == "onnxruntime"
    with pytest.raises(ModelLoadError, match=r"no backend serves 'weights.npy'.*\.linear\.npy"):
        registry.for_path(Path("weights.npy"))

    # served end to end through the data plane, named after the file's stem
    dp = DataPlane(config=ServeConfig(models=(str(weights_file),)), pm=pm)
    dp.load_models()
    try:
        metadata = dp.model_metadata("weights", None)
        assert metadata["platform"] == "numpy_linear"
        digest = hashlib.sha256(weights_file.read_bytes()).hexdigest()
        assert metadata["properties"] == {"backend": "npy-linear", "weights": "4x3", "sha256": digest}
        assert metadata["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
        x = np.ones((2, 4), dtype=np.float32)
        response = _infer(dp, "weights", "x", x)
        [out] = response.outputs
        assert out.name == "y" and out.shape == (2, 3)
        np.testing.assert_array_equal(out.data, x @ np.arange(12, dtype=np.float32).reshape(4, 3))
        backend = dp.model("weights", None).backend
    finally:
        dp.close()
    assert backend.closed


# -- servecore_register_registries -------------------------------------------------------------


class DictRegistry:
    """A registry plugin for ``dict:<model>`` URIs, over an in-memory catalogue of files."""

    def __init__(self, catalogue: dict[str, dict[str, Path]]) -> None:
        self.catalogue = catalogue
        self.calls: list[str] = []

    @hookimpl
    def servecore_register_registries(self, register: Any) -> None:
        register("dict", self.resolve)

    def resolve(self, uri: str, config: ServeConfig) -> list[ModelDefinition]:
        self.calls.append(uri)
        name = uri.split(":", 1)[1]
        if name not in self.catalogue:
            raise ModelLoadError(f"{uri}: no such model")
        return [ModelDefinition(name, self.catalogue[name], ModelSettings(owner="dict-team"), origin=uri)]


def test_hook_servecore_register_registries(weights_file: Path, tmp_path: Path) -> None:
    second = tmp_path / "second.linear.npy"
    np.save(second, np.ones((4, 3), dtype=np.float32))
    registry = DictRegistry({"linear": {"1": weights_file, "2": second}})
    pm = _pm(("npy-linear", NpyLinearPlugin()), ("dict", registry))
    dp = DataPlane(config=ServeConfig(models=("dict:linear",)), pm=pm)
    dp.load_models()
    try:
        assert registry.calls == ["dict:linear"]
        # the default policy serves the latest version only
        assert [m.version for m in dp.models] == ["2"]
        metadata = dp.model_metadata("linear", None)
        assert metadata["properties"]["owner"] == "dict-team"
        response = _infer(dp, "linear", "x", np.ones((1, 4), dtype=np.float32))
        assert response.model_version == "2"
        np.testing.assert_array_equal(response.outputs[0].data, np.full((1, 3), 4, dtype=np.float32))
    finally:
        dp.close()
    # a path is still a path: the file registry takes what no plugin's scheme claims
    dp = DataPlane(config=ServeConfig(models=(str(weights_file),)), pm=pm)
    dp.load_models()
    dp.close()
    with pytest.raises(ModelLoadError, match="no such model"):
        DataPlane(config=ServeConfig(models=("dict:missing",)), pm=pm).load_models()


def test_hook_servecore_register_registries_scheme_twice() -> None:
    pm = _pm(("one", DictRegistry({})), ("two", DictRegistry({})))
    with pytest.raises(ConfigError, match="registered twice"):
        DataPlane(config=ServeConfig(), pm=pm)


def test_hook_servecore_register_backends_priority(weights_file: Path) -> None:
    low, high = NpyLinearPlugin("linear-low", priority=0), NpyLinearPlugin("linear-high", priority=10)
    for order in ([("low", low), ("high", high)], [("high", high), ("low", low)]):
        registry = BackendRegistry.from_plugins(_pm(*order))
        assert registry.for_path(weights_file).name == "linear-high"
    # equal priorities: the alphabetically first name, whatever the registration order
    tie = BackendRegistry.from_plugins(_pm(("b", NpyLinearPlugin("b-linear")), ("a", NpyLinearPlugin("a-linear"))))
    assert tie.for_path(weights_file).name == "a-linear"
    # a plugin can take .onnx files over from the built-in backend
    class OnnxOverride:
        @hookimpl
        def servecore_register_backends(self, register: Any) -> None:
            register("my-onnx", load_npy_linear, suffixes=(".onnx",), priority=1)

    registry = BackendRegistry.from_plugins(_pm(("override", OnnxOverride())))
    assert registry.for_path(Path("m.onnx")).name == "my-onnx"


def test_hook_servecore_register_backends_refuses_duplicate_names() -> None:
    pm = _pm(("a", NpyLinearPlugin("same")), ("b", NpyLinearPlugin("same")))
    with pytest.raises(ConfigError, match="backend 'same' is registered twice"):
        BackendRegistry.from_plugins(pm)
    # clashing with a built-in is refused the same way
    with pytest.raises(ConfigError, match="'onnxruntime' is registered twice"):
        BackendRegistry.from_plugins(_pm(("fake", NpyLinearPlugin("onnxruntime"))))


def test_backend_protocol_is_satisfied_by_third_party_class(weights_file: Path) -> None:
    backend = load_npy_linear(ModelSource("weights", "1", weights_file), ServeConfig())
    assert isinstance(backend, Backend)


def test_a_failing_loader_becomes_a_model_load_error(tmp_path: Path) -> None:
    bad = tmp_path / "vector.linear.npy"
    np.save(bad, np.zeros(3, dtype=np.float32))
    events: list[ModelEvent] = []
    pm = _pm(("npy-linear", NpyLinearPlugin()), ("events", EventRecorder(events)))
    dp = DataPlane(config=ServeConfig(models=(str(bad),)), pm=pm)
    with pytest.raises(ModelLoadError, match="not a matrix"):
        dp.load_models()
    assert [(e.model, e.state) for e in events] == [("vector", "loading"), ("vector", "failed")]
    assert "not a matrix" in events[-1].reason and events[-1].backend == "npy-linear"


# -- servecore_register_authenticators ---------------------------------------------------------


class TokenAuth:
    """Registers an ``X-Token`` authenticator when the config names the token (via model_name here)."""

    def __init__(self, token: str, *, principal: str = "token-user") -> None:
        self.token = token
        self.principal = principal
        self.configs: list[ServeConfig] = []

    @hookimpl
    def servecore_register_authenticators(self, register: Any, config: ServeConfig) -> None:
        self.configs.append(config)

        def authenticate(headers: Mapping[str, str]) -> Principal | None:
            sent = headers.get("x-token")
            if sent is None:
                return None
            if sent != self.token:
                raise AuthenticationError("invalid X-Token")
            return Principal(self.principal, "x-token")

        register(authenticate)


class Anonymous:
    """An authenticator taking only ``register`` (implementations may omit arguments)."""

    @hookimpl
    def servecore_register_authenticators(self, register: Any) -> None:
        register(lambda headers: Principal("anonymous", "none") if "x-anonymous" in headers else None)


def test_hook_servecore_register_authenticators() -> None:
    token = TokenAuth("s3cret")
    config = ServeConfig()
    dp = DataPlane(config=config, pm=_pm(("token", token), ("anonymous", Anonymous())))
    assert token.configs == [config]
    assert dp.requires_auth
    assert dp.authenticate({"x-token": "s3cret"}) == Principal("token-user", "x-token")
    assert dp.authenticate({"x-anonymous": "1"}) == Principal("anonymous", "none")
    with pytest.raises(AuthenticationError, match="invalid X-Token"):
        dp.authenticate({"x-token": "wrong"})
    with pytest.raises(AuthenticationError):
        dp.authenticate({})


def test_hook_servecore_register_authenticators_order() -> None:
    """Asked in the order they were registered, which is pluggy's call order: plugins registered
    later run first (entry points before built-ins) unless tryfirst/trylast say otherwise."""
    early, late = TokenAuth("t", principal="early"), TokenAuth("t", principal="late")
    dp = DataPlane(config=ServeConfig(), pm=_pm(("early", early), ("late", late)))
    assert dp.authenticate({"x-token": "t"}).name == "late"

    class First(TokenAuth):
        @hookimpl(tryfirst=True)
        def servecore_register_authenticators(self, register: Any, config: ServeConfig) -> None:
            super().servecore_register_authenticators(register, config)

    dp = DataPlane(config=ServeConfig(), pm=_pm(("first", First("t", principal="first")), ("late", late)))
    assert dp.authenticate({"x-token": "t"}).name == "first"
    # a bad credential is final: later authenticators are not asked
    dp = DataPlane(config=ServeConfig(), pm=_pm(("anonymous", Anonymous()), ("token", TokenAuth("s3cret"))))
    with pytest.raises(AuthenticationError, match="invalid X-Token"):
        dp.authenticate({"x-token": "wrong", "x-anonymous": "1"})


def test_hook_servecore_register_authenticators_over_http() -> None:
    """The ASGI app asks the authenticators on every endpoint but the health probes."""
    dp = DataPlane(config=ServeConfig(), pm=_pm(("token", TokenAuth("s3cret"))))
    dp.load_models()

    async def run() -> None:
        transport = httpx.ASGITransport(app=ServecoreApp(dp))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/v2/health/live")).status_code == 200
            assert (await client.get("/v2/health/ready")).status_code == 200
            refused = await client.get("/v2/models/mlp")
            assert refused.status_code == 401
            assert refused.headers["www-authenticate"] == "Bearer"
            assert "error" in refused.json()
            assert (await client.get("/v2/models/mlp", headers={"X-Token": "nope"})).status_code == 401
            assert (await client.get("/v2/models/mlp", headers={"X-Token": "s3cret"})).status_code == 200
            body = {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}]}
            ok = await client.post("/v2/models/mlp/infer", json=body, headers={"X-Token": "s3cret"})
            assert ok.status_code == 200, ok.text

    try:
        asyncio.run(run())
    finally:
        dp.close()


def test_no_authenticator_means_an_open_server() -> None:
    dp = DataPlane(config=ServeConfig(), pm=_pm())
    assert not dp.requires_auth
    assert dp.authenticate({}) is None


# -- servecore_on_model_event ------------------------------------------------------------------


class EventRecorder:
    def __init__(self, events: list[ModelEvent]) -> None:
        self.events = events

    @hookimpl
    def servecore_on_model_event(self, event: ModelEvent) -> None:
        self.events.append(event)


class BrokenObserver:
    @hookimpl
    def servecore_on_model_event(self, event: ModelEvent) -> None:
        raise RuntimeError("observer bug")


def test_hook_servecore_on_model_event() -> None:
    events: list[ModelEvent] = []
    dp = DataPlane(config=ServeConfig(), pm=_pm(("recorder", EventRecorder(events))))
    assert events == []
    dp.load_models()
    assert [(e.model, e.version, e.state, e.backend) for e in events] == [
        ("mlp", "1", "loading", "onnxruntime"),
        ("mlp", "1", "warming", "onnxruntime"),
        ("mlp", "1", "ready", "onnxruntime"),
    ]
    assert dp.ready
    dp.close()
    assert [e.state for e in events] == ["loading", "warming", "ready", "unloaded"]
    assert events[-1] == ModelEvent("mlp", "1", "unloaded", backend="onnxruntime")


def test_hook_servecore_on_model_event_observer_errors_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    events: list[ModelEvent] = []
    pm = _pm(("broken", BrokenObserver()), ("recorder", EventRecorder(events)))
    dp = DataPlane(config=ServeConfig(), pm=pm)
    with caplog.at_level(logging.ERROR, logger="servecore"):
        dp.load_models()
    try:
        assert dp.ready, "a broken observer must not break loading"
        assert "servecore_on_model_event" in caplog.text and "observer bug" in caplog.text
    finally:
        dp.close()


# -- the plugin manager ------------------------------------------------------------------------


def test_builtins_are_registered_like_plugins() -> None:
    pm = _pm()
    for name, module in DEFAULT_PLUGINS:
        plugin = pm.get_plugin(name)
        assert plugin is not None and plugin.__name__ == module
        assert pm.get_name(plugin) == name


def test_disable_plugins_argument() -> None:
    pm = _pm(disabled=("onnxruntime",))
    assert pm.is_blocked("onnxruntime")
    assert pm.get_plugin("onnxruntime") is None
    assert [i.name for i in list_plugins(pm)] == [name for name in BUILTINS if name != "onnxruntime"]
    assert blocked_plugins(pm) == ["onnxruntime"]
    with pytest.raises(ModelLoadError, match=r"installed backends take: \.pt, \.pt2$"):
        BackendRegistry.from_plugins(pm).for_path(demo_model_path())


def test_disable_plugins_blocks_extra_plugins_too() -> None:
    pm = _pm(("npy-linear", NpyLinearPlugin()), disabled=("npy-linear",))
    assert pm.get_plugin("npy-linear") is None
    assert [r.name for r in BackendRegistry.from_plugins(pm)] == ["onnxruntime", "torch"]


def test_disable_plugins_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVECORE_DISABLE_PLUGINS", " api-keys , onnxruntime,")
    pm = _pm()
    assert blocked_plugins(pm) == ["api-keys", "onnxruntime"]
    assert [i.name for i in list_plugins(pm)] == [name for name in BUILTINS if name not in ("api-keys", "onnxruntime")]
    # the env var and the argument add up
    monkeypatch.setenv("SERVECORE_DISABLE_PLUGINS", "api-keys")
    pm = _pm(disabled=("onnxruntime",))
    assert blocked_plugins(pm) == ["api-keys", "onnxruntime"]


def test_disabled_authenticator_plugin_leaves_the_server_open(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("alice:k1\n")
    config = ServeConfig(api_keys_file=str(keys))
    assert DataPlane(config=config, pm=_pm()).requires_auth
    assert not DataPlane(config=config, pm=_pm(disabled=("api-keys",))).requires_auth


def test_list_plugins() -> None:
    pm = _pm(("npy-linear", NpyLinearPlugin()), ("recorder", EventRecorder([])))
    infos = {i.name: i for i in list_plugins(pm)}
    assert list(infos) == [*BUILTINS, "npy-linear", "recorder"]
    onnx = infos["onnxruntime"]
    assert (onnx.version, onnx.distribution, onnx.hooks, onnx.builtin) == (
        __version__, "servecore", ("servecore_register_backends",), True,
    )
    assert infos["api-keys"].hooks == ("servecore_register_authenticators",)
    assert infos["api-keys"].builtin
    assert infos["npy-linear"].hooks == ("servecore_register_backends",)
    assert not infos["npy-linear"].builtin
    assert infos["recorder"].hooks == ("servecore_on_model_event",)


def test_check_pending_fails_on_a_misspelled_hook() -> None:
    class Misspelled:
        @hookimpl
        def servecore_register_backend(self, register: Any) -> None:  # missing "s"
            pass

    with pytest.raises(pluggy.PluginValidationError, match="servecore_register_backend"):
        _pm(("misspelled", Misspelled()))


def test_unknown_hook_arguments_are_refused() -> None:
    class WrongArgs:
        @hookimpl
        def servecore_on_model_event(self, model_event: Any) -> None:
            pass

    with pytest.raises(pluggy.PluginValidationError, match="model_event"):
        _pm(("wrong-args", WrongArgs()))


def test_no_global_plugin_manager() -> None:
    recorder = EventRecorder([])
    one = _pm(("recorder", recorder))
    two = _pm()
    assert one is not two
    assert one.get_plugin("recorder") is recorder
    assert two.get_plugin("recorder") is None
    one.set_blocked("api-keys")
    assert two.get_plugin("api-keys") is not None and not two.is_blocked("api-keys")
    # and the module holds none to share
    assert not [v for v in vars(servecore.plugins).values() if isinstance(v, pluggy.PluginManager)]


def test_trace_plugins_env_var(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("SERVECORE_TRACE_PLUGINS", "1")
    pm = _pm(("npy-linear", NpyLinearPlugin()))
    with caplog.at_level(logging.INFO, logger="servecore.plugins"):
        BackendRegistry.from_plugins(pm)
    traced = [r.getMessage() for r in caplog.records if r.name == "servecore.plugins"]
    assert any("servecore_register_backends" in m and "register" in m for m in traced), traced
    assert any(m.strip().startswith("finish servecore_register_backends") for m in traced), traced

    monkeypatch.delenv("SERVECORE_TRACE_PLUGINS")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="servecore.plugins"):
        BackendRegistry.from_plugins(_pm())
    assert not [r for r in caplog.records if r.name == "servecore.plugins"]


# -- servecore_on_drift_alert ------------------------------------------------------------------


class AlertRecorder:
    def __init__(self) -> None:
        self.alerts: list[Any] = []

    @hookimpl
    def servecore_on_drift_alert(self, alert: Any) -> None:
        self.alerts.append(alert)


def test_hook_servecore_on_drift_alert(tmp_path: Path) -> None:
    from servecore.drift.build import profile_model

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "ref.npz", input=rng.standard_normal((2000, 64)).astype(np.float32))
    built, _ = profile_model(demo_model_path(), tmp_path / "ref.npz", bins=16)
    built.save(tmp_path / "profile.json")
    recorder = AlertRecorder()
    config = ServeConfig(reference_profile=str(tmp_path / "profile.json"), drift_window_rows=400, drift_window_seconds=3600)
    dp = DataPlane(config=config, pm=_pm(("alerts", recorder)))
    dp.load_models()
    try:
        monitor = dp.model("mlp", None).monitor
        assert monitor is not None
        for _ in range(3 * 400 // 50):  # three windows shifted by 2 sigma: 2 of 3 drift, alerts open
            _infer(dp, "mlp", "input", (rng.standard_normal((50, 64)) + 2).astype(np.float32))
        monitor.flush()
        opened = [a for a in recorder.alerts if a.open]
        assert {a.feature for a in opened} >= {"input[0]", "input[63]"}
        alert = next(a for a in opened if a.feature == "input[0]")
        assert (alert.model, alert.version) == ("mlp", "1")
        assert alert.statistics["status"] == "drift" and alert.statistics["psi"]["value"] > 0.25
        assert all(not a.open for a in recorder.alerts if a not in opened)  # nothing cleared yet
    finally:
        dp.close()


# -- servecore_register_audit_sinks ------------------------------------------------------------


class ListSink:
    """An audit sink keeping records in memory (a third-party sink would ship them somewhere)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.closed = False

    @property
    def writable(self) -> bool:
        return True

    def ensure_accepting(self) -> None:
        pass

    def submit(self, event: Any) -> None:
        self.events.append(dict(event))

    def submit_durable(self, event: Any) -> Any:
        from concurrent.futures import Future

        self.submit(event)
        done: Future[int] = Future()
        done.set_result(len(self.events) - 1)
        return done

    def close(self, timeout: float | None = None) -> None:
        self.closed = True


class ListSinkPlugin:
    def __init__(self) -> None:
        self.sink = ListSink()

    @hookimpl
    def servecore_register_audit_sinks(self, register: Any, config: ServeConfig) -> None:
        register(self.sink)


def test_hook_servecore_register_audit_sinks(tmp_path: Path) -> None:
    from servecore.audit.keys import keygen

    keygen(tmp_path / "keys")
    plugin = ListSinkPlugin()
    dp = DataPlane(config=ServeConfig(audit_keys=str(tmp_path / "keys")), pm=_pm(("list-sink", plugin)))
    dp.load_models()
    dp.close()
    events = [e["event"] for e in plugin.sink.events]
    assert events == ["startup", "model_load", "model_unload", "shutdown"]
    assert plugin.sink.events[1]["model"]["name"] == "mlp" and plugin.sink.closed
    # a sink without --audit-keys is a configuration error: records are pseudonymised with them
    with pytest.raises(ConfigError, match="--audit-keys"):
        DataPlane(config=ServeConfig(), pm=_pm(("list-sink", ListSinkPlugin())))
