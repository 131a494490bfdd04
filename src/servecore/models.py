"""Loaded models: which backend serves which file, and the versions being served.

A :class:`ModelVersion` owns its backend, a worker thread for execution (so inference never runs
on the event loop) and its statistics. :class:`ModelSet` indexes them by name and version.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeoutError
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import pluggy

from servecore.batching.runtime import SPIKE_CAP
from servecore.errors import ConfigError, ModelLoadError, ModelNotFoundError, UnavailableError
from servecore.stats import ModelStats
from servecore.types import Backend, BackendLoader, BackendRegistration, ModelEvent, ModelSource, TensorSpec

if TYPE_CHECKING:
    from servecore.config import ServeConfig

logger = logging.getLogger("servecore.models")

#: runs before an execution-time prediction is trusted, and the smoothing of later runs
WARMUP_RUNS = 3
EWMA_ALPHA = 0.1

READY = "ready"
LOADING = "loading"
FAILED = "failed"
UNLOADED = "unloaded"


class BackendRegistry:
    """The backends plugins registered, looked up by artefact suffix."""

    def __init__(self) -> None:
        self._by_name: dict[str, BackendRegistration] = {}

    @classmethod
    def from_plugins(cls, pm: pluggy.PluginManager) -> BackendRegistry:
        """Collect every backend registered through ``servecore_register_backends``."""
        registry = cls()

        def register(
            name: str, loader: BackendLoader, *, suffixes: tuple[str, ...] | list[str], priority: int = 0
        ) -> None:
            registry.add(BackendRegistration(name, loader, tuple(suffixes), priority))

        pm.hook.servecore_register_backends(register=register)
        return registry

    def add(self, registration: BackendRegistration) -> None:
        if registration.name in self._by_name:
            raise ConfigError(f"backend {registration.name!r} is registered twice")
        self._by_name[registration.name] = registration

    def __iter__(self) -> Iterator[BackendRegistration]:
        return iter(sorted(self._by_name.values(), key=lambda r: (-r.priority, r.name)))

    def for_path(self, path: Path) -> BackendRegistration:
        """The highest-priority backend claiming *path*'s suffix."""
        name = path.name.lower()
        for registration in self:
            if any(name.endswith(s.lower()) for s in registration.suffixes):
                return registration
        known = sorted({s for r in self for s in r.suffixes})
        raise ModelLoadError(
            f"no backend serves {path.name!r}; installed backends take: {', '.join(known) or 'nothing'}"
        )


@dataclass(eq=False)
class ModelVersion:
    """One served model version."""

    source: ModelSource
    backend: Backend
    backend_name: str
    executor: ThreadPoolExecutor
    stats: ModelStats = field(default_factory=ModelStats)
    state: str = READY
    inputs_by_name: dict[str, TensorSpec] = field(init=False)
    outputs_by_name: dict[str, TensorSpec] = field(init=False)
    #: whether every input has a variable leading (batch) dimension
    batched: bool = field(init=False)
    #: inputs a request may leave out because the server fills them in (padding masks)
    generated_inputs: frozenset[str] = frozenset()
    name: str = field(init=False)
    version: str = field(init=False)

    def __post_init__(self) -> None:
        self.inputs_by_name = {s.name: s for s in self.backend.inputs}
        self.outputs_by_name = {s.name: s for s in self.backend.outputs}
        inputs = self.backend.inputs
        self.batched = bool(inputs) and all(s.shape and s.shape[0] < 0 for s in inputs)
        self.name = self.source.name
        self.version = self.source.version

    #: smoothed execution time per batch row, learned from every run (None until measured)
    ns_per_row: float | None = None
    _runs: int = 0

    def observe_compute(self, ns: int, rows: int) -> None:
        """Learn from one execution of *rows* rows that took *ns* nanoseconds."""
        per_row = ns / max(rows, 1)
        self._runs += 1
        if self.ns_per_row is None or self._runs <= WARMUP_RUNS:
            self.ns_per_row = per_row  # the first runs are slow: let the later ones set the level
        else:
            # one preempted run must not flip the inline decision (the cap the batcher's model uses)
            self.ns_per_row += EWMA_ALPHA * (min(per_row, SPIKE_CAP * self.ns_per_row) - self.ns_per_row)

    def predicted_ns(self, rows: int) -> float | None:
        """Expected execution time for *rows* rows, or None before the model has run enough."""
        if self.ns_per_row is None or self._runs <= WARMUP_RUNS:
            return None
        return self.ns_per_row * max(rows, 1)

    @property
    def ready(self) -> bool:
        return self.state == READY


def _version_key(version: str) -> tuple[int, int | str]:
    return (0, int(version)) if version.isdigit() else (1, version)


class ModelSet:
    """The model versions of one server, by name and version."""

    def __init__(self, *, notify: Callable[[ModelEvent], None]) -> None:
        self._models: dict[str, dict[str, ModelVersion]] = {}
        #: the version an unversioned request gets, per name; rebuilt whenever versions change
        self._latest: dict[str, ModelVersion] = {}
        self._notify = notify

    def _refresh(self, name: str) -> None:
        ready = [v for v in self._models.get(name, {}).values() if v.ready]
        if ready:
            self._latest[name] = max(ready, key=lambda v: _version_key(v.version))
        else:
            self._latest.pop(name, None)

    def load(self, source: ModelSource, registry: BackendRegistry, config: ServeConfig) -> ModelVersion:
        """Load *source* with the backend that claims its file; raises ModelLoadError."""
        registration = registry.for_path(source.path)
        self._notify(ModelEvent(source.name, source.version, LOADING, backend=registration.name))
        try:
            backend = registration.loader(source, config)
        except ModelLoadError as exc:
            self._notify(ModelEvent(source.name, source.version, FAILED, str(exc), registration.name))
            raise
        except Exception as exc:
            message = f"model {source.name!r}: backend {registration.name!r} failed to load {source.path}: {exc}"
            self._notify(ModelEvent(source.name, source.version, FAILED, message, registration.name))
            raise ModelLoadError(message) from exc
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"servecore-{source.name}")
        model = ModelVersion(source, backend, registration.name, executor)
        self._models.setdefault(source.name, {})[source.version] = model
        self._refresh(source.name)
        self._notify(ModelEvent(source.name, source.version, READY, backend=registration.name))
        return model

    def get(self, name: str, version: str | None = None) -> ModelVersion:
        """The version asked for, or the highest ready one; 404 when unknown, 503 when not ready."""
        if not version:
            latest = self._latest.get(name)
            if latest is not None:
                return latest
        versions = self._models.get(name)
        if not versions:
            raise ModelNotFoundError(f"model {name!r} is not served here")
        if not version:
            raise UnavailableError(f"model {name!r} has no ready version")
        model = versions.get(version)
        if model is None:
            raise ModelNotFoundError(f"model {name!r} has no version {version!r}")
        return model

    def versions(self, name: str) -> list[ModelVersion]:
        return sorted(self._models.get(name, {}).values(), key=lambda v: _version_key(v.version))

    def __iter__(self) -> Iterator[ModelVersion]:
        for name in sorted(self._models):
            yield from self.versions(name)

    def __len__(self) -> int:
        return sum(len(v) for v in self._models.values())

    def close(self, *, timeout: float | None = None) -> int:
        """Unload everything: stop the workers (after their current call) and free the backends.

        Waits at most *timeout* seconds in all (None: as long as it takes) for calls still running.
        A model whose call is still running then is abandoned: its backend is left open (the call
        still uses it) and its worker thread keeps running. Returns the number abandoned; the
        process should then exit without joining threads (see ``servecore.cli``).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        abandoned = 0
        for model in list(self):
            idle = model.executor.submit(_idle)  # runs once the worker's current call returns
            model.executor.shutdown(wait=False)
            wait = None if deadline is None else max(deadline - time.monotonic(), _MIN_WAIT)
            try:
                idle.result(wait)
            except FutureTimeoutError:
                abandoned += 1
                model.state = UNLOADED
                reason = "abandoned: a request was still running at shutdown"
                logger.warning("model %s version %s %s", model.name, model.version, reason)
                self._notify(ModelEvent(model.name, model.version, UNLOADED, reason, model.backend_name))
                continue
            model.executor.shutdown(wait=True)
            try:
                model.backend.close()
            finally:
                model.state = UNLOADED
                self._notify(ModelEvent(model.name, model.version, UNLOADED, backend=model.backend_name))
        self._models.clear()
        self._latest.clear()
        return abandoned


#: Shortest wait for an idle worker to acknowledge, even when the shutdown deadline has passed.
_MIN_WAIT = 0.1


def _idle() -> None:
    """Submitted at close: done as soon as the worker has finished what it was running."""
