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
from typing import TYPE_CHECKING, Any, Coroutine, Mapping, Sequence

import numpy as np

from servecore import demo
from servecore.affinity import model_thread_initializer
from servecore._version import __version__
from servecore.batching import BatchingCore, load_batching
from servecore.batching.policy import Batch, BatchSettings, BatchSettingsError
from servecore.batching.scheduler import BatchTiming, Scheduler, SchedulerEvents
from servecore.codec import Codec, load_codec
from servecore.datatypes import NUMPY_DTYPES, config_datatype, v2_datatype
from servecore.errors import (
    AuthenticationError,
    BackendError,
    ForbiddenError,
    ModelNotFoundError,
    InvalidInputError,
    ModelLoadError,
    ServecoreError,
    UnavailableError,
)
from servecore.auditing import Auditor
from servecore.lifecycle import ModelManager
from servecore.metrics import Metrics, ModelSeries
from servecore.models import READY, BackendRegistry, ModelSet, ModelVersion
from servecore.registries import Registries
from servecore.types import (
    Authenticator,
    Backend,
    InferenceRequest,
    InferenceResponse,
    InferOutput,
    InferInput,
    ModelEvent,
    Principal,
    TensorSpec,
)
from servecore.warmup import WarmupRun, batch_sizes, generated_feeds, run_warmup, sample_inputs

if TYPE_CHECKING:
    import pluggy

    from servecore.drift.monitor import Alert, ModelMonitor

    from servecore.config import ServeConfig

logger = logging.getLogger("servecore")

SERVER_NAME = "servecore"
#: Protocol extensions this server implements (and nothing it does not).
EXTENSIONS = (
    "binary_tensor_data", "classification", "model_configuration", "model_repository",
    "model_repository(unload_dependents)", "parameters", "statistics",
)
DEFAULT_VERSION = "1"
#: stands for "every output the backend returns" when a backend declares none (see TensorSpec)
ALL_OUTPUTS = "*"


def demo_model_path() -> Path:
    """The small MLP that ships inside the package, served when no model is given."""
    return Path(demo.__file__).with_name("mlp.onnx")


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
        self._batching: BatchingCore | None = None
        self.manager = ModelManager(
            config=config,
            registries=Registries.from_plugins(pm),
            backends=self.backends,
            models=self.models,
            notify=self._notify,
            prepare=self._prepare,
            on_cold_start=lambda model, seconds: self.metrics.observe_cold_start(model.name, model.version, seconds),
        )
        self.metrics.set_model_states(lambda: [(e.name, e.version, e.state) for e in self.manager.index()])
        self.metrics.monitors = lambda: [m.monitor for m in self.models if m.monitor is not None]
        #: the audit log(s), when an audit sink is configured (--audit-dir)
        self.auditor = Auditor.from_plugins(pm, config)

    # -- life cycle ---------------------------------------------------------------------------

    def load_models(self) -> None:
        """Load every configured model (raises ModelLoadError on a failure with --model-control none)."""
        if self.auditor is not None:
            self.auditor.startup(__version__)
        self.manager.start()

    def background_tasks(self) -> list[Coroutine[Any, Any, None]]:
        """What runs beside the server: the repository poll, the idle unloader (as configured)."""
        tasks: list[Coroutine[Any, Any, None]] = []
        if self.config.model_control == "poll":
            tasks.append(self.manager.poll_forever())
        if self.config.idle_unload_seconds > 0:
            tasks.append(self.manager.unload_idle_forever())
        return tasks

    def _prepare(self, model: ModelVersion) -> None:
        """Loading thread: give *model* its scheduler and metric series, then warm it up."""
        model.series = self.metrics.series(model.name, model.version)
        settings = model.source.settings
        if settings.labels_file is not None:
            try:
                model.labels = tuple(settings.labels_file.read_text(encoding="utf-8").splitlines())
            except OSError as exc:
                raise ModelLoadError(f"model {model.name!r}: cannot read labels {settings.labels_file}: {exc.strerror}") from exc
        self._start_batching(model)
        if model.monitor is None:
            model.monitor = self._monitor(model)
        if not (self.config.warmup if settings.warmup is None else settings.warmup):
            return
        runs: list[WarmupRun] = []
        scheduler = model.scheduler
        sizes = batch_sizes(scheduler.settings.max_batch_size, scheduler.settings.preferred_batch_sizes) if scheduler else [1]
        for rows in sizes if settings.warmup_generate else ():
            feeds = generated_feeds(model.backend.inputs, rows, model.batched)
            if feeds is None:
                logger.info("model %s version %s: inputs of unknown signature, no generated warmup", model.name, model.version)
                break
            runs.append((f"generated inputs of {rows} row(s)", feeds))
        for path in settings.warmup_samples:
            inputs = sample_inputs(path, self.codec, model.name)
            try:
                runs.append((f"sample {path.name}", self._feeds(model, inputs)))
            except InvalidInputError as exc:
                raise ModelLoadError(f"model {model.name!r}: warmup sample {path}: {exc.message}") from None
        names = [spec.name for spec in model.backend.outputs]
        report = run_warmup(runs, lambda feeds: model.backend.infer(feeds, names), model.name)
        logger.info(
            "model %s version %s warmed up: %d run(s) in %.3f s", model.name, model.version, report.runs, report.seconds
        )

    def _monitor(self, model: ModelVersion) -> ModelMonitor | None:
        """Drift monitoring for *model* when it has a reference profile. A profile that cannot be
        used disables monitoring with an error in the log; it never stops the model serving."""
        settings, config = model.source.settings, model.config
        path = settings.reference_profile or (Path(config.reference_profile) if config.reference_profile else None)
        if path is None:
            return None
        from servecore.drift import load_drift
        from servecore.drift.errors import ProfileError
        from servecore.drift.monitor import ModelMonitor
        from servecore.drift.profile import ReferenceProfile

        try:
            profile = ReferenceProfile.load(path)
        except ProfileError as exc:
            logger.error("model %s version %s: drift monitoring is off: %s", model.name, model.version, exc.message)
            self._notify(ModelEvent(model.name, model.version, "monitoring_disabled", exc.message, model.backend_name))
            return None
        from servecore.drift.monitor import unmatched_features

        tensors = [spec.name for spec in (*model.backend.inputs, *model.backend.outputs)]
        unmatched = unmatched_features(profile.names, tensors)
        if len(unmatched) == len(profile.names):
            message = (
                f"the reference profile {path} does not match the model: its features come from "
                f"{', '.join(sorted({f.split('[')[0] for f in unmatched})[:5])}, the model's tensors are {', '.join(tensors)}"
            )
            logger.error("model %s version %s: drift monitoring is off: %s", model.name, model.version, message)
            self._notify(ModelEvent(model.name, model.version, "monitoring_disabled", message, model.backend_name))
            return None
        if unmatched:
            logger.warning(
                "model %s version %s: %d profile features match no tensor of the model (%s...): they are "
                "counted as missing columns in every window", model.name, model.version, len(unmatched), unmatched[0],
            )
        monitor = ModelMonitor(
            model=model.name, version=model.version, profile=profile,
            core=load_drift(pure_python=config.pure_python),
            window_seconds=config.drift_window_seconds, window_rows=config.drift_window_rows,
            queue_rows=config.drift_queue_rows, task=config.monitor_task, prediction=config.monitor_prediction,
            positive_class=config.positive_class, feedback_ttl_s=config.feedback_ttl_seconds,
            feedback_max_pending=config.feedback_max_pending, on_alert=self._alert,
        )
        logger.info(
            "model %s version %s: drift monitoring against %s (%d features, profile %s)",
            model.name, model.version, path, len(profile.features), profile.sha256[:12],
        )
        return monitor

    def _alert(self, alert: Alert) -> None:
        if self.auditor is not None:
            self.auditor.drift_alert(alert)
        try:
            self.pm.hook.servecore_on_drift_alert(alert=alert)
        except Exception:  # a broken observer must not break monitoring
            logger.exception("a servecore_on_drift_alert implementation failed for %s", alert)

    def _batching_core(self) -> BatchingCore:
        if self._batching is None:
            self._batching = load_batching(pure_python=self.config.pure_python)
        return self._batching

    def _start_batching(self, model: ModelVersion) -> None:
        """Give *model* a scheduler when batching is configured and its inputs have a batch dimension."""
        config = model.config
        if config.max_batch_size <= 0:
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
            raise ModelLoadError(f"model {model.name!r}: {exc}") from None
        pad_values = config.pad_values
        unknown = sorted(set(pad_values) - set(model.inputs_by_name))
        if unknown and len(self.config.models) <= 1:
            raise ModelLoadError(f"model {model.name!r} has no input {', '.join(unknown)} (--pad-inputs)")
        pad_values = {name: value for name, value in pad_values.items() if name in model.inputs_by_name}
        masks = {name: mask for name, mask in config.pad_masks.items() if name in pad_values and mask in pad_values}
        model.generated_inputs = frozenset(masks.values())
        series = model.series
        series.batching = True
        stats = model.stats

        def on_batch(batch: Batch, input_ns: int, infer_ns: int, output_ns: int) -> None:
            stats.record_batch(batch.rows, input_ns, infer_ns, output_ns)
            series.observe_batch(batch.rows, batch.reason, infer_ns / 1e9)
            series.compute.observe(infer_ns / 1e9)

        def on_rejected(reason: str) -> None:
            series.rejected_by_reason[reason] += 1

        batching = self._batching_core()
        model.scheduler = Scheduler(
            model.name, model.version, model.backend, settings, batching,
            inline_ns=self.inline_ns,
            events=SchedulerEvents(
                on_batch=on_batch, on_rejected=on_rejected, on_expired=series.expired.inc,
                on_padding=series.padding_elements.inc,
            ),
            pad_values=pad_values,
            pad_masks=masks,
            thread_initializer=model_thread_initializer(self.config.model_cpus),
        )
        logger.info(
            "model %s version %s: dynamic batching up to %d rows (%s core)",
            model.name, model.version, settings.max_batch_size, batching.implementation,
        )

    def close(self, *, timeout: float | None = None) -> int:
        """Unload the models; returns how many were abandoned mid-call (see :meth:`ModelSet.close`)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        abandoned = self.manager.close(timeout)
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        abandoned += self.models.close(timeout=left)
        if self.auditor is not None:
            self.auditor.close("shutdown" if not abandoned else f"shutdown, {abandoned} model call(s) abandoned")
        return abandoned

    def _notify(self, event: ModelEvent) -> None:
        if self.auditor is not None:
            self.auditor.model_event(event)
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
        return not self.shutting_down and len(self.models) > 0 and all(m.servable for m in self.models)

    def model_ready(self, name: str, version: str | None) -> bool:
        try:
            model = self.models.get(name, version)
        except UnavailableError:
            return False
        return model.servable and not self.shutting_down

    def model(self, name: str, version: str | None) -> ModelVersion:
        return self.models.get(name, version)

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}

    def model_metadata(self, name: str, version: str | None) -> dict[str, Any]:
        model = self.models.get(name, version)
        backend = model.backend
        settings = model.source.settings
        about = {"owner": settings.owner, "description": settings.description, "sha256": model.source.sha256}
        return {
            "name": model.name,
            "versions": [v.version for v in self.models.versions(name) if v.servable],
            "platform": backend.platform,
            "inputs": [s.as_metadata() for s in backend.inputs],
            "outputs": [s.as_metadata() for s in backend.outputs],
            "properties": {"backend": model.backend_name, **backend.properties, **{k: v for k, v in about.items() if v}},
        }

    def model_config(self, name: str, version: str | None) -> dict[str, Any]:
        model = self.models.get(name, version)
        backend = model.backend
        scheduler = model.scheduler
        batch = _config_batch_size(model)

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
                    "default_timeout_microseconds": model.config.default_timeout_us,
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
            if not model.idle:
                raise UnavailableError(f"model {model.name!r} version {model.version} is not ready")
            model.inflight += 1  # held while it loads again: it is not unloaded under this request
            try:
                await self.manager.wake(model)
            finally:
                model.inflight -= 1
        # No await between the lookup and this count: a version being swapped out waits for it.
        model.inflight += 1
        try:
            return await self._infer_on(model, request, start)
        finally:
            model.inflight -= 1
            model.last_used = time.monotonic()

    async def _infer_on(self, model: ModelVersion, request: InferenceRequest, start: int) -> InferenceResponse:
        try:
            feeds = self._feeds(model, request.inputs)
            wanted = self._requested_outputs(model, request)
        except InvalidInputError:
            self.metrics.count_rejected(model.name, model.version, "invalid")
            raise
        names = [name for name, _, _ in wanted if name != ALL_OUTPUTS]
        monitor = model.monitor
        if monitor is not None:
            names = [spec.name for spec in model.backend.outputs]  # the monitor watches every output
        series = model.series
        # rows in this request: the leading dimension when the model batches (checked by _feeds)
        rows = request.inputs[0].shape[0] if model.batched else 1
        scheduler = model.scheduler if rows > 0 else None
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
        if monitor is not None:
            self._observe(monitor, request.id, feeds, result, rows)
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
        timeout_us, priority = self.batch_parameters(request, rows)
        inflight = self.metrics.inflight
        inflight.inc()
        try:
            result, timing = await scheduler.submit(
                feeds, rows, timeout_us=timeout_us, priority=priority, on_wait=request.on_wait
            )
        except ServecoreError:
            self._failed(model, series, start)
            raise
        finally:
            inflight.dec()
        return self.batched_response(model, request.id, feeds, wanted, rows, start, result, timing)

    def batch_parameters(self, request: InferenceRequest, rows: int) -> tuple[int, int]:
        """The request's ``timeout`` (µs, the configured default when absent) and ``priority``;
        InvalidInputError unless every input has *rows* rows, or for a bad parameter."""
        if any(tensor.shape[0] != rows for tensor in request.inputs):
            raise InvalidInputError(
                "every input of a batched model needs the same first dimension (rows); got "
                + ", ".join(f"{t.name} {t.shape[0]}" for t in request.inputs)
            )
        return (
            _uint_parameter(request.parameters, "timeout", self.config.default_timeout_us),
            _uint_parameter(request.parameters, "priority", 0),
        )

    def batched_response(
        self, model: ModelVersion, request_id: str | None, feeds: Mapping[str, np.ndarray],
        wanted: list[tuple[str, bool, int]], rows: int, start: int,
        result: Mapping[str, np.ndarray], timing: BatchTiming,
    ) -> InferenceResponse:
        """The response to the request *request_id* from its share of a batch's outputs, counted in the model's
        statistics, metrics and monitor (raises ServecoreError, counted as a failure, when the
        outputs cannot be shaped)."""
        try:
            outputs = self._outputs(model, result, wanted)
        except ServecoreError:
            self._failed(model, model.series, start)
            raise
        if model.monitor is not None:
            self._observe(model.monitor, request_id, feeds, result, rows)
        request_ns = time.perf_counter_ns() - start
        model.stats.record_request(rows, request_ns, timing.queue_ns, timing.input_ns, timing.infer_ns, timing.output_ns)
        series = model.series
        series.success.inc()
        series.request.observe(request_ns / 1e9)
        series.queue.observe(timing.queue_ns / 1e9)
        return InferenceResponse(model.name, model.version, outputs, id=request_id)

    # -- monitoring ----------------------------------------------------------------------------

    @staticmethod
    def _observe(
        monitor: ModelMonitor, request_id: str | None, feeds: Mapping[str, np.ndarray],
        result: Mapping[str, np.ndarray], rows: int,
    ) -> None:
        monitor.observe({**feeds, **result}, rows)
        if request_id:
            monitor.record_prediction(request_id, result)

    def _monitored(self, name: str, version: str | None) -> ModelMonitor:
        model = self.models.get(name, version)
        if model.monitor is None:
            raise ModelNotFoundError(
                f"model {name!r} version {model.version} is not monitored (give it a reference profile: "
                "--reference-profile or reference_profile in model.toml)"
            )
        return model.monitor

    def drift_report(self, name: str, version: str | None) -> dict[str, Any]:
        return self._monitored(name, version).report()

    def feedback(self, name: str, version: str | None, items: list[tuple[str, Any]]) -> dict[str, Any]:
        """Join labels to the predictions of earlier requests (by request id)."""
        monitor = self._monitored(name, version)
        outcomes = monitor.feedback(items)
        if self.auditor is not None:
            self.auditor.feedback(name, monitor.version, [request_id for request_id, _ in items], outcomes)
        return {"model_name": name, "model_version": monitor.version, "received": len(items), "outcomes": outcomes}

    # -- the repository extension ----------------------------------------------------------------

    def repository_index(self, *, ready_only: bool = False) -> list[dict[str, str]]:
        return [entry.as_dict() for entry in self.manager.index(ready_only=ready_only)]

    def _may_manage(self, principal: Principal | None) -> None:
        if self.config.model_control != "explicit":
            raise InvalidInputError(
                f"models cannot be loaded or unloaded through the API with --model-control {self.config.model_control} "
                "(start the server with --model-control explicit)"
            )
        if self.requires_auth and (principal is None or principal.name not in self.config.model_admin_names):
            who = principal.name if principal else "this caller"
            raise ForbiddenError(f"{who} may not load or unload models (see --model-admins)")

    async def load_model(self, name: str, principal: Principal | None) -> None:
        """Load or reload *name* from the repositories; 400 naming the reason when it fails."""
        self._may_manage(principal)
        try:
            await self.manager.load(name)
        except ModelLoadError as exc:
            raise InvalidInputError(exc.message) from None

    async def unload_model(self, name: str, principal: Principal | None) -> None:
        """Unload every version of *name* once their in-flight requests are answered."""
        self._may_manage(principal)
        await self.manager.unload(name)

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
            return _classification(
                name, array, class_count, batched=_config_batch_size(model) > 0,
                binary=binary, labels=model.labels,
            )
        return InferOutput(name, datatype, array.shape, array, binary)


def _config_batch_size(model: ModelVersion) -> int:
    """The ``max_batch_size`` the model config shows: the scheduler's, else the backend's."""
    return model.scheduler.settings.max_batch_size if model.scheduler is not None else model.backend.max_batch_size


def _classification(
    name: str, array: np.ndarray, k: int, *, batched: bool, binary: bool, labels: Sequence[str] = ()
) -> InferOutput:
    """Replace an output by its top-*k* ``"value:index"`` strings (the classification extension),
    ``"value:index:label"`` when the model has a labels file (line *index* is the label)."""
    if array.dtype.kind not in "biuf":
        raise InvalidInputError(f"output {name!r}: classification needs a numeric output, not {v2_datatype(array.dtype)}")
    # explicit widths: reshape(n, -1) cannot infer the width of an empty batch
    if batched and array.ndim > 1:
        rows = array.reshape(array.shape[0], int(np.prod(array.shape[1:])))
    else:
        rows = array.reshape(1, array.size)
    names = list(labels)
    k = min(k, rows.shape[1])
    order = np.argsort(-rows.astype(np.float64), axis=1, kind="stable")[:, :k]
    texts = np.empty((rows.shape[0], k), dtype=object)
    for r in range(rows.shape[0]):
        for j, index in enumerate(order[r]):
            label = f":{names[index]}" if index < len(names) else ""
            texts[r, j] = f"{float(rows[r, index]):f}:{int(index)}{label}".encode()
    shape = texts.shape if batched and array.ndim > 1 else (k,)
    return InferOutput(name, "BYTES", shape, texts.reshape(shape), binary)


def create_dataplane(config: ServeConfig, pm: pluggy.PluginManager) -> DataPlane:
    """A data plane with every configured model loaded."""
    dataplane = DataPlane(config=config, pm=pm)
    dataplane.load_models()
    return dataplane
