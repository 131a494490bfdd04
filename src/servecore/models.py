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
from typing import TYPE_CHECKING, Any, Callable, Iterator

import pluggy

from servecore.batching.runtime import SPIKE_CAP
from servecore.errors import ConfigError, ModelLoadError, ModelNotFoundError, UnavailableError
from servecore.metrics import ModelSeries
from servecore.stats import ModelStats
from servecore.types import Backend, BackendLoader, BackendRegistration, ModelEvent, ModelSource, TensorSpec, version_key

if TYPE_CHECKING:
    from servecore.batching.scheduler import Scheduler
    from servecore.drift.monitor import ModelMonitor
    from servecore.config import ServeConfig

logger = logging.getLogger("servecore.models")

#: runs before an execution-time prediction is trusted, and the smoothing of later runs
WARMUP_RUNS = 3
EWMA_ALPHA = 0.1

#: The states of a model version, in the order it goes through them (or ``failed``).
LOADING = "loading"
WARMING = "warming"
READY = "ready"
DRAINING = "draining"
UNLOADED = "unloaded"
FAILED = "failed"
STATES = (LOADING, WARMING, READY, DRAINING, UNLOADED, FAILED)


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

    def named(self, name: str) -> BackendRegistration:
        """The backend registered as *name* (a model.toml ``backend`` override)."""
        try:
            return self._by_name[name]
        except KeyError:
            raise ModelLoadError(
                f"no backend named {name!r} is installed; installed backends: {', '.join(sorted(self._by_name)) or 'none'}"
            ) from None

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
    #: the server's configuration with this model's model.toml overrides applied
    config: ServeConfig
    stats: ModelStats = field(default_factory=ModelStats)
    state: str = WARMING
    #: what the artefact looked like when loaded (see servecore.lifecycle.fingerprint)
    fingerprint: tuple[Any, ...] = ()
    #: the model's batch scheduler, when it batches
    scheduler: Scheduler | None = None
    #: its metric series (shared by every load of the same name and version)
    series: ModelSeries = field(default_factory=ModelSeries)
    #: requests admitted and not yet answered (a draining version is closed when this reaches 0)
    inflight: int = 0
    #: time.monotonic() of the last request
    last_used: float = field(default_factory=time.monotonic)
    #: unloaded after --idle-unload-seconds without requests; the next request loads it again
    idle: bool = False
    #: class labels from the model's labels file, by index (the classification extension)
    labels: tuple[str, ...] = ()
    #: set when its release has begun (see :func:`release`); cleared when it is opened again
    releasing: bool = False
    #: drift and performance monitoring, when the model has a reference profile
    monitor: ModelMonitor | None = None
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

    @property
    def servable(self) -> bool:
        """Ready, or unloaded while idle (a request loads it again)."""
        return self.state == READY or self.idle


class ModelSet:
    """The model versions of one server, by name and version."""

    def __init__(self, *, notify: Callable[[ModelEvent], None]) -> None:
        self._models: dict[str, dict[str, ModelVersion]] = {}
        #: the version an unversioned request gets, per name; rebuilt whenever versions change
        self._latest: dict[str, ModelVersion] = {}
        self._notify = notify

    def _refresh(self, name: str) -> None:
        ready = [v for v in self._models.get(name, {}).values() if v.servable]
        if ready:
            self._latest[name] = max(ready, key=lambda v: version_key(v.version))
        else:
            self._latest.pop(name, None)

    def install(self, model: ModelVersion) -> ModelVersion | None:
        """Serve *model* (now ready) in place of the same version; returns the one it replaces.

        Call on the event-loop thread (or before it runs): unversioned requests switch to the
        highest ready version at once, without a moment where none is served.
        """
        versions = self._models.setdefault(model.name, {})
        replaced = versions.get(model.version)
        model.state = READY
        versions[model.version] = model
        self._refresh(model.name)
        return replaced if replaced is not model else None

    def remove(self, model: ModelVersion) -> None:
        """Stop routing to *model* (it may still finish what it runs)."""
        versions = self._models.get(model.name, {})
        if versions.get(model.version) is model:
            del versions[model.version]
            if not versions:
                del self._models[model.name]
        self._refresh(model.name)

    def names(self) -> list[str]:
        return sorted(self._models)

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

    def latest(self, name: str) -> ModelVersion | None:
        """The version unversioned requests for *name* get now (None when none is servable)."""
        return self._latest.get(name)

    def find(self, name: str, version: str) -> ModelVersion | None:
        """The version *version* of *name* in this set, whatever its state; None when absent."""
        return self._models.get(name, {}).get(version)

    def versions(self, name: str) -> list[ModelVersion]:
        return sorted(self._models.get(name, {}).values(), key=lambda v: version_key(v.version))

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
            wait = None if deadline is None else max(deadline - time.monotonic(), _MIN_WAIT)
            if not release(model, wait, self._notify):
                abandoned += 1
        self._models.clear()
        self._latest.clear()
        return abandoned


def release(model: ModelVersion, timeout: float | None, notify: Callable[[ModelEvent], None], reason: str = "") -> bool:
    """Stop *model*'s scheduler and worker threads (after their current call) and close its backend.

    Waits at most *timeout* seconds (None: as long as it takes) for a call still running; when
    one still runs then, the backend is left open for it and False is returned (abandoned).
    Blocks: call it on a worker thread once the server is running.
    """
    if model.state == UNLOADED or model.releasing:
        return True
    model.releasing = True  # once: a version can be dropped for several reasons at once
    deadline = None if timeout is None else time.monotonic() + timeout
    executors = [model.executor] + ([model.scheduler.executor] if model.scheduler is not None else [])
    # each runs once its worker's current call returns
    idles = [executor.submit(_idle) for executor in executors]
    if model.scheduler is not None:
        model.scheduler.close()
    for executor, idle in zip(executors, idles):
        executor.shutdown(wait=False)
        wait = None if deadline is None else max(deadline - time.monotonic(), _MIN_WAIT)
        try:
            idle.result(wait)
        except FutureTimeoutError:
            model.state = UNLOADED
            why = "abandoned: a request was still running at shutdown"
            logger.warning("model %s version %s %s", model.name, model.version, why)
            notify(ModelEvent(model.name, model.version, UNLOADED, why, model.backend_name))
            return False
        executor.shutdown(wait=True)
    if model.monitor is not None and not model.idle:  # an idle model keeps its windows for when it wakes
        model.monitor.close()
    try:
        model.backend.close()
    finally:
        model.state = UNLOADED
        notify(ModelEvent(model.name, model.version, UNLOADED, reason, backend=model.backend_name))
    return_freed_memory()
    return True


#: glibc's mallopt parameter number for the mmap threshold
_M_MMAP_THRESHOLD = -3


def _glibc() -> Any:
    """glibc, for its allocator controls; None elsewhere."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def pin_mmap_threshold(size: int = 128 * 1024) -> None:
    """Keep every allocation of *size* bytes and more in its own mmap (glibc).

    glibc raises its mmap threshold each time a large mmapped block is freed, after which model
    weights and buffers of the next load come from the heap, where freeing them leaves holes: a
    server that loads and unloads models grows. A fixed threshold returns each such block to the
    operating system when it is freed. Call once, at server start.
    """
    libc = _glibc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, size)


def return_freed_memory() -> None:
    """Give the heap's free pages back to the operating system (glibc's ``malloc_trim``): a closed
    session's buffers are freed but would otherwise stay in the process's resident memory."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


#: Shortest wait for an idle worker to acknowledge, even when the shutdown deadline has passed.
_MIN_WAIT = 0.1


def _idle() -> None:
    """Submitted at close: done as soon as the worker has finished what it was running."""
