"""The transport-agnostic core: authentication, model lookup, validation, execution, metadata.

Transports (``servecore.http``) parse bytes into :class:`~servecore.types.InferenceRequest` and
serialise what comes back; everything in between happens here, and this is the only caller of
per-request plugin code (the authenticators).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from servecore import demo
from servecore._version import __version__
from servecore.batching import load_batching
from servecore.batching.policy import Batch, BatchSettings, BatchSettingsError
from servecore.batching.scheduler import Scheduler, SchedulerEvents
from servecore.codec import Codec, load_codec
from servecore.datatypes import NUMPY_DTYPES, config_datatype, v2_datatype
from servecore.errors import (
    AuthenticationError,
    BackendError,
    ConfigError,
    InvalidInputError,
    ServecoreError,
    UnavailableError,
)
from servecore.metrics import Metrics, ModelSeries
from servecore.models import READY, BackendRegistry, ModelSet, ModelVersion
from servecore.types import (
    Authenticator,
    Backend,
    InferenceRequest,
    InferenceResponse,
    InferOutput,
    InferInput,
    ModelEvent,
    ModelSource,
    Principal,
    TensorSpec,
)

if TYPE_CHECKING:
    import pluggy

    from servecore.config import ServeConfig

logger = logging.getLogger("servecore")

SERVER_NAME = "servecore"
#: Protocol extensions this server implements (and nothing it does not).
EXTENSIONS = ("binary_tensor_data", "classification", "model_configuration", "parameters", "statistics")
DEFAULT_VERSION = "1"
#: stands for "every output the backend returns" when a backend declares none (see TensorSpec)
ALL_OUTPUTS = "*"


def demo_model_path() -> Path:
    """The small MLP that ships inside the package, served when no model is given."""
    return Path(demo.__file__).with_name("mlp.onnx")


def model_sources(config: ServeConfig) -> list[ModelSource]:
    """The models a config asks for: each file named after its stem (or --model-name), version 1."""
    paths = [Path(p) for p in config.models] or [demo_model_path()]
    sources = []
    for path in paths:
        stem = path.name.split(".", 1)[0]
        name = config.model_name or stem
        sources.append(ModelSource(name=name, version=DEFAULT_VERSION, path=path))
    names = [s.name for s in sources]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InvalidInputError(f"several model files would be served as {', '.join(duplicates)}")
    return sources


def _run(backend: Backend, feeds: Mapping[str, np.ndarray], names: Sequence[str]) -> tuple[Any, int, int]:
    """Worker-thread body: run the backend and time it."""
    start = time.perf_counter_ns()
    result = backend.infer(feeds, names)
    return result, start, time.perf_counter_ns()


def _uint_parameter(parameters: Mapping[str, Any], name: str, default: int) -> int:
    """A request parameter that must be a non-negative integer (``timeout``, ``priority``)."""
    value = parameters.get(name)
    if value is None:
        return default
    if type(value) is not int or value < 0:
        raise InvalidInputError(f"parameter {name!r} must be a non-negative integer, not {value!r}")
    return value


def _shape_matches(shape: tuple[int, ...], spec: tuple[int, ...]) -> bool:
    if len(shape) != len(spec):
        return False
    for got, want in zip(shape, spec):
        if want >= 0 and want != got:
            return False
    return True


class DataPlane:
    """Everything a transport can ask a servecore server."""

    def __init__(
        self,
        *,
        config: ServeConfig,
        pm: pluggy.PluginManager,
        metrics: Metrics | None = None,
        codec: Codec | None = None,
    ) -> None:
        self.config = config
        self.pm = pm
        self.codec = codec or load_codec(pure_python=config.pure_python)
        self.metrics = metrics or Metrics()
        self.metrics.set_build_info(__version__, self.codec.implementation)
        self.backends = BackendRegistry.from_plugins(pm)
        self.models = ModelSet(notify=self._notify)
        self.authenticators: list[Authenticator] = []
        pm.hook.servecore_register_authenticators(register=self.authenticators.append, config=config)
        self.shutting_down = False
        self.inline_ns = config.inline_compute_us * 1000
        self._series: dict[ModelVersion, ModelSeries] = {}
        self.batching = load_batching(pure_python=config.pure_python) if config.max_batch_size > 0 else None
        self.schedulers: dict[ModelVersion, Scheduler] = {}

    # -- life cycle ---------------------------------------------------------------------------

    def load_models(self) -> None:
        """Load every model the configuration names (raises ModelLoadError on the first failure)."""
        for source in model_sources(self.config):
            model = self.models.load(source, self.backends, self.config)
            logger.info(
                "serving model %s version %s (%s, %s)",
                model.name, model.version, model.backend_name, model.backend.properties.get("providers", ""),
            )
            self._start_batching(model)

    def _start_batching(self, model: ModelVersion) -> None:
        """Give *model* a scheduler when batching is configured and its inputs have a batch dimension."""
        config = self.config
        if self.batching is None:
            return
        if not model.batched:
            logger.info("model %s version %s has no variable first dimension: not batched", model.name, model.version)
            return
        try:
            settings = BatchSettings(
                max_batch_size=config.max_batch_size,
                max_queue_delay_ns=config.max_queue_delay_us * 1000,
                preferred_batch_sizes=tuple(s for s in config.preferred_batch_list if s <= config.max_batch_size),
                max_queue_rows=config.max_queue_size,
                instances=config.instances,
            )
        except BatchSettingsError as exc:
            raise ConfigError(f"model {model.name!r}: {exc}") from None
        pad_values = config.pad_values
        unknown = sorted(set(pad_values) - set(model.inputs_by_name))
        if unknown and len(self.config.models) <= 1:
            raise ConfigError(f"model {model.name!r} has no input {', '.join(unknown)} (--pad-inputs)")
        pad_values = {name: value for name, value in pad_values.items() if name in model.inputs_by_name}
        masks = {name: mask for name, mask in config.pad_masks.items() if name in pad_values and mask in pad_values}
        model.generated_inputs = frozenset(masks.values())
        series = self._model_series(model)
        series.batching = True
        stats = model.stats

        def on_batch(batch: Batch, input_ns: int, infer_ns: int, output_ns: int) -> None:
            stats.record_batch(batch.rows, input_ns, infer_ns, output_ns)
            series.observe_batch(batch.rows, batch.reason, infer_ns / 1e9)
            series.compute.observe(infer_ns / 1e9)

        def on_rejected(reason: str) -> None:
            series.rejected_by_reason[reason] += 1

        self.schedulers[model] = Scheduler(
            model.name, model.version, model.backend, settings, self.batching,
            inline_ns=self.inline_ns,
            events=SchedulerEvents(
                on_batch=on_batch, on_rejected=on_rejected, on_expired=series.expired.inc,
                on_padding=series.padding_elements.inc,
            ),
            pad_values=pad_values,
            pad_masks=masks,
        )
        logger.info(
            "model %s version %s: dynamic batching up to %d rows (%s core)",
            model.name, model.version, settings.max_batch_size, self.batching.implementation,
        )

    def close(self, *, timeout: float | None = None) -> int:
        """Unload the models; returns how many were abandoned mid-call (see :meth:`ModelSet.close`)."""
        for scheduler in self.schedulers.values():
            scheduler.close()
        self.schedulers.clear()
        return self.models.close(timeout=timeout)

    def _model_series(self, model: ModelVersion) -> ModelSeries:
        series = self._series.get(model)
        if series is None:
            series = self._series[model] = self.metrics.series(model.name, model.version)
        return series

    def _notify(self, event: ModelEvent) -> None:
        try:
            self.pm.hook.servecore_on_model_event(event=event)
        except Exception:  # a broken observer must not break model loading
            logger.exception("a servecore_on_model_event implementation failed for %s", event)

    # -- requests -----------------------------------------------------------------------------

    @property
    def requires_auth(self) -> bool:
        return bool(self.authenticators)

    def authenticate(self, headers: Mapping[str, str]) -> Principal | None:
        """The caller's principal; raises AuthenticationError when authentication is required but fails."""
        if not self.authenticators:
            return None
        for authenticator in self.authenticators:
            principal = authenticator(headers)
            if principal is not None:
                return principal
        raise AuthenticationError("authentication required: send 'Authorization: Bearer <key>'")

    @property
    def live(self) -> bool:
        return True

    @property
    def ready(self) -> bool:
        return not self.shutting_down and len(self.models) > 0 and all(m.ready for m in self.models)

    def model_ready(self, name: str, version: str | None) -> bool:
        try:
            model = self.models.get(name, version)
        except UnavailableError:
            return False
        return model.ready and not self.shutting_down

    def model(self, name: str, version: str | None) -> ModelVersion:
        return self.models.get(name, version)

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}

    def model_metadata(self, name: str, version: str | None) -> dict[str, Any]:
        model = self.models.get(name, version)
        backend = model.backend
        return {
            "name": model.name,
            "versions": [v.version for v in self.models.versions(name)],
            "platform": backend.platform,
            "inputs": [s.as_metadata() for s in backend.inputs],
            "outputs": [s.as_metadata() for s in backend.outputs],
            "properties": {"backend": model.backend_name, **backend.properties},
        }

    def model_config(self, name: str, version: str | None) -> dict[str, Any]:
        model = self.models.get(name, version)
        backend = model.backend
        scheduler = self.schedulers.get(model)
        batch = scheduler.settings.max_batch_size if scheduler else backend.max_batch_size

        def tensor(spec: TensorSpec) -> dict[str, Any]:
            dims = list(spec.shape[1:] if batch > 0 else spec.shape)
            return {"name": spec.name, "data_type": config_datatype(spec.datatype), "dims": dims}

        config: dict[str, Any] = {
            "name": model.name,
            "platform": backend.platform,
            "backend": model.backend_name,
            "max_batch_size": batch,
            "input": [{**tensor(s), "format": "FORMAT_NONE"} for s in backend.inputs],
            "output": [tensor(s) for s in backend.outputs],
            "version_policy": {"specific": {"versions": [int(v.version) for v in self.models.versions(name) if v.version.isdigit()]}},
            "model_transaction_policy": {"decoupled": False},
            "parameters": {k: {"string_value": v} for k, v in backend.properties.items()},
        }
        if scheduler is not None:
            settings = scheduler.settings
            config["dynamic_batching"] = {
                "max_queue_delay_microseconds": settings.max_queue_delay_ns // 1000,
                "preferred_batch_size": list(settings.preferred_batch_sizes),
                "default_queue_policy": {
                    "max_queue_size": settings.max_queue_rows,
                    "default_timeout_microseconds": self.config.default_timeout_us,
                    "allow_timeout_override": True,
                },
            }
            config["instance_group"] = [{"count": settings.instances, "kind": "KIND_AUTO"}]
        return config

    def statistics(self, name: str | None = None, version: str | None = None) -> dict[str, Any]:
        if name is None:
            models = list(self.models)
        elif version:
            models = [self.models.get(name, version)]
        else:
            self.models.get(name)  # 404 for an unknown model
            models = self.models.versions(name)
        return {"model_stats": [m.stats.as_dict(m.name, m.version) for m in models]}

    async def infer(self, request: InferenceRequest) -> InferenceResponse:
        """Validate *request* against its model, run it off the event loop, shape the response."""
        start = time.perf_counter_ns()
        if self.shutting_down:
            raise UnavailableError("the server is shutting down")
        model = self.models.get(request.model_name, request.model_version)
        if model.state != READY:
            raise UnavailableError(f"model {model.name!r} version {model.version} is not ready")
        try:
            feeds = self._feeds(model, request.inputs)
            wanted = self._requested_outputs(model, request)
        except InvalidInputError:
            self.metrics.count_rejected(model.name, model.version, "invalid")
            raise
        names = [name for name, _, _ in wanted if name != ALL_OUTPUTS]
        series = self._series.get(model) or self._model_series(model)
        # rows in this request: the leading dimension when the model batches (checked by _feeds)
        rows = request.inputs[0].shape[0] if model.batched else 1
        scheduler = self.schedulers.get(model) if rows > 0 else None
        if scheduler is None and len(feeds) != len(model.inputs_by_name):
            raise InvalidInputError(f"model {model.name!r} needs inputs that are missing: {', '.join(model.generated_inputs)}")
        if scheduler is not None:
            return await self._infer_batched(model, request, scheduler, feeds, wanted, rows, series, start)
        inflight = self.metrics.inflight
        inflight.inc()
        submitted = time.perf_counter_ns()
        try:
            predicted = model.predicted_ns(rows)
            if predicted is not None and predicted <= self.inline_ns:
                # Cheaper than the hand-off to the worker thread, and short enough not to hold up
                # other requests or the health probes (see --inline-compute-us).
                result, began, ended = _run(model.backend, feeds, names)
            else:
                loop = asyncio.get_running_loop()
                result, began, ended = await loop.run_in_executor(model.executor, _run, model.backend, feeds, names)
            model.observe_compute(ended - began, rows)
            outputs = self._outputs(model, result, wanted)
        except ServecoreError:
            self._failed(model, series, start)
            raise
        except Exception as exc:
            self._failed(model, series, start)
            raise BackendError(f"model {model.name!r} version {model.version}: {exc}") from exc
        finally:
            inflight.dec()
        done = time.perf_counter_ns()
        request_ns = done - start
        model.stats.record_success(rows, request_ns, began - submitted, submitted - start, ended - began, done - ended)
        series.success.inc()
        series.request.observe(request_ns / 1e9)
        series.queue.observe((began - submitted) / 1e9)
        series.compute.observe((ended - began) / 1e9)
        return InferenceResponse(model.name, model.version, outputs, id=request.id)

    async def _infer_batched(
        self, model: ModelVersion, request: InferenceRequest, scheduler: Scheduler, feeds: dict[str, np.ndarray],
        wanted: list[tuple[str, bool, int]], rows: int, series: ModelSeries, start: int,
    ) -> InferenceResponse:
        """Run *request* through its model's batch scheduler."""
        if any(tensor.shape[0] != rows for tensor in request.inputs):
            raise InvalidInputError(
                "every input of a batched model needs the same first dimension (rows); got "
                + ", ".join(f"{t.name} {t.shape[0]}" for t in request.inputs)
            )
        timeout_us = _uint_parameter(request.parameters, "timeout", self.config.default_timeout_us)
        priority = _uint_parameter(request.parameters, "priority", 0)
        inflight = self.metrics.inflight
        inflight.inc()
        try:
            result, timing = await scheduler.submit(
                feeds, rows, timeout_us=timeout_us, priority=priority, on_wait=request.on_wait
            )
            outputs = self._outputs(model, result, wanted)
        except ServecoreError:
            self._failed(model, series, start)
            raise
        finally:
            inflight.dec()
        request_ns = time.perf_counter_ns() - start
        model.stats.record_request(rows, request_ns, timing.queue_ns, timing.input_ns, timing.infer_ns, timing.output_ns)
        series.success.inc()
        series.request.observe(request_ns / 1e9)
        series.queue.observe(timing.queue_ns / 1e9)
        return InferenceResponse(model.name, model.version, outputs, id=request.id)

    def _failed(self, model: ModelVersion, series: Any, start: int) -> None:
        elapsed = time.perf_counter_ns() - start
        model.stats.record_failure(elapsed)
        series.failure.inc()
        series.request.observe(elapsed / 1e9)

    # -- validation ---------------------------------------------------------------------------

    @staticmethod
    def _feeds(model: ModelVersion, inputs: list[InferInput]) -> dict[str, np.ndarray]:
        specs = model.inputs_by_name
        feeds: dict[str, np.ndarray] = {}
        for tensor in inputs:
            spec = specs.get(tensor.name)
            if spec is None:
                raise InvalidInputError(
                    f"model {model.name!r} has no input {tensor.name!r}; its inputs are {', '.join(specs)}"
                )
            if tensor.name in feeds:
                raise InvalidInputError(f"input {tensor.name!r} appears more than once")
            if spec.open:
                feeds[tensor.name] = tensor.data
                continue
            if tensor.datatype != spec.datatype:
                raise InvalidInputError(
                    f"input {tensor.name!r}: datatype {tensor.datatype} does not match the model's {spec.datatype}"
                )
            if not _shape_matches(tensor.shape, spec.shape):
                raise InvalidInputError(
                    f"input {tensor.name!r}: shape {list(tensor.shape)} does not match the model's {list(spec.shape)}"
                )
            feeds[tensor.name] = tensor.data
        if len(feeds) != len(specs):
            missing = [name for name in specs if name not in feeds and name not in model.generated_inputs]
            if missing:
                raise InvalidInputError(f"model {model.name!r} needs inputs that are missing: {', '.join(missing)}")
        return feeds

    @staticmethod
    def _requested_outputs(model: ModelVersion, request: InferenceRequest) -> list[tuple[str, bool, int]]:
        default = request.binary_output_default
        if request.outputs is None:
            return [(spec.name, default, 0) for spec in model.backend.outputs] or [(ALL_OUTPUTS, default, 0)]
        wanted: list[tuple[str, bool, int]] = []
        seen: set[str] = set()
        for out in request.outputs:
            if model.outputs_by_name and out.name not in model.outputs_by_name:
                raise InvalidInputError(
                    f"model {model.name!r} has no output {out.name!r}; its outputs are {', '.join(model.outputs_by_name)}"
                )
            if out.name in seen:
                raise InvalidInputError(f"output {out.name!r} is requested more than once")
            seen.add(out.name)
            wanted.append((out.name, default if out.binary is None else out.binary, out.class_count))
        return wanted

    @classmethod
    def _outputs(
        cls, model: ModelVersion, result: Mapping[str, np.ndarray], wanted: list[tuple[str, bool, int]]
    ) -> list[InferOutput]:
        if len(wanted) == 1 and wanted[0][0] == ALL_OUTPUTS:  # a backend that names its outputs at run time
            binary = wanted[0][1]
            return [cls._output(model, name, result, binary, 0) for name in result]
        return [cls._output(model, name, result, binary, class_count) for name, binary, class_count in wanted]

    @staticmethod
    def _output(model: ModelVersion, name: str, result: Mapping[str, np.ndarray], binary: bool, class_count: int) -> InferOutput:
        try:
            array = np.asarray(result[name])
        except KeyError:
            raise BackendError(f"model {model.name!r}: backend {model.backend_name!r} returned no output {name!r}") from None
        spec = model.outputs_by_name.get(name)
        datatype = spec.datatype if spec is not None and not spec.open else v2_datatype(array.dtype)
        if datatype != "BF16" and array.dtype != NUMPY_DTYPES[datatype]:  # trust the array over the spec
            datatype = v2_datatype(array.dtype)
        if class_count:
            return _classification(name, array, class_count, batched=model.backend.max_batch_size > 0, binary=binary)
        return InferOutput(name, datatype, array.shape, array, binary)


def _classification(name: str, array: np.ndarray, k: int, *, batched: bool, binary: bool) -> InferOutput:
    """Replace an output by its top-*k* ``"value:index"`` strings (the classification extension)."""
    if array.dtype.kind not in "biuf":
        raise InvalidInputError(f"output {name!r}: classification needs a numeric output, not {v2_datatype(array.dtype)}")
    # explicit widths: reshape(n, -1) cannot infer the width of an empty batch
    if batched and array.ndim > 1:
        rows = array.reshape(array.shape[0], int(np.prod(array.shape[1:])))
    else:
        rows = array.reshape(1, array.size)
    k = min(k, rows.shape[1])
    order = np.argsort(-rows.astype(np.float64), axis=1, kind="stable")[:, :k]
    labels = np.empty((rows.shape[0], k), dtype=object)
    for r in range(rows.shape[0]):
        for j, index in enumerate(order[r]):
            labels[r, j] = f"{float(rows[r, index]):f}:{int(index)}".encode()
    shape = labels.shape if batched and array.ndim > 1 else (k,)
    return InferOutput(name, "BYTES", shape, labels.reshape(shape), binary)


def create_dataplane(config: ServeConfig, pm: pluggy.PluginManager) -> DataPlane:
    """A data plane with every configured model loaded."""
    dataplane = DataPlane(config=config, pm=pm)
    dataplane.load_models()
    return dataplane
