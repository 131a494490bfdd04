"""Model lifecycle: load, warm up, swap in, drain and unload model versions to match the registries.

Every version goes loading -> warming -> ready -> draining -> unloaded, or to failed. Loading and
warmup run on worker threads while the server serves; a version becomes visible only once warm,
in one step on the event-loop thread (:meth:`ModelSet.install`), so unversioned requests move from
the old version to the new one without a gap. A version being replaced or dropped stops taking new
requests, finishes the ones it has (``inflight``) and is then closed and its memory returned.

A load that fails leaves whatever serves untouched; the failure and its reason stay in the
repository index, and the same artefact (same fingerprint) is not tried again until it changes.

Poll mode (``--model-control poll``): the registries are asked every ``--poll-interval`` seconds.
An artefact is loaded only when its fingerprint (size, modification time and inode of the file,
or of every file of an artefact directory) is the same at two polls in a row: a file still being
written changes between polls, so a half-copied artefact is never loaded. The fingerprint also
tells a changed artefact of an existing version, which is then reloaded and swapped the same way.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from servecore.affinity import model_thread_initializer
from servecore.errors import ConfigError, ModelLoadError, ModelNotFoundError, ServecoreError, UnavailableError
from servecore.models import (
    DRAINING,
    FAILED,
    LOADING,
    READY,
    UNLOADED,
    WARMING,
    BackendRegistry,
    ModelSet,
    ModelVersion,
    release,
)
from servecore.registries import Registries
from servecore.types import ModelDefinition, ModelEvent, ModelSource, version_key

if TYPE_CHECKING:
    from servecore.config import ServeConfig

logger = logging.getLogger("servecore.lifecycle")

Fingerprint = tuple[Any, ...]
T = TypeVar("T")

#: the ``reason`` of a ``ready`` event whose version now takes the model's unversioned requests
#: from another one (followed by that version)
SWAP_REASON = "now serving unversioned requests in place of version "


def fingerprint(path: Path) -> Fingerprint:
    """What an artefact looks like on disk: (size, mtime, inode) of each file under *path*."""
    try:
        if path.is_dir():
            return tuple(
                (str(p.relative_to(path)), *_stat(p)) for p in sorted(path.rglob("*")) if p.is_file()
            )
        return _stat(path)
    except OSError:
        return ()


def _stat(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def sha256_of(path: Path) -> str:
    """The artefact's sha256 (of the file; of the sorted files' names and digests for a directory)."""
    digest = hashlib.sha256()
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file():
                digest.update(str(p.relative_to(path)).encode() + b"\0" + sha256_of(p).encode())
        return digest.hexdigest()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class IndexEntry:
    """One line of the repository index."""

    name: str
    version: str
    state: str
    reason: str = ""

    def as_dict(self) -> dict[str, str]:
        """The protocol's form (``version`` left out for a model-level entry, as the protocol allows)."""
        entry = {"name": self.name, "version": self.version, "state": self.state.upper(), "reason": self.reason}
        if not self.version:
            del entry["version"]
        return entry


class ModelManager:
    """Keeps the served model versions in step with the registries.

    :param prepare: called on the loading thread with a loaded version, before it is ready: it
        builds the scheduler and runs the warmup (raising ModelLoadError to fail the version).
    :param on_cold_start: told the seconds a request waited for an idle model to load again.
    """

    def __init__(
        self,
        *,
        config: ServeConfig,
        registries: Registries,
        backends: BackendRegistry,
        models: ModelSet,
        notify: Callable[[ModelEvent], None],
        prepare: Callable[[ModelVersion], None],
        on_cold_start: Callable[[ModelVersion, float], None] = lambda model, seconds: None,
    ) -> None:
        self.config = config
        self.registries = registries
        self.backends = backends
        self.models = models
        self._notify = notify
        self._prepare = prepare
        self._on_cold_start = on_cold_start
        #: versions not (or no longer) in the model set: loading, warming, draining, unloaded, failed
        self._others: dict[tuple[str, str], IndexEntry] = {}
        #: models a registry could not describe (a bad model.toml), by name
        self._problems: dict[str, str] = {}
        #: fingerprint of each version's artefact at the last poll, and of those that failed to load
        self._seen: dict[tuple[str, str], Fingerprint] = {}
        self._failed: dict[tuple[str, str], Fingerprint] = {}
        self._draining: dict[ModelVersion, asyncio.Task[None]] = {}
        self._waking: dict[ModelVersion, asyncio.Future[None]] = {}
        self._lock: asyncio.Lock | None = None
        # the loader runs on the model CPUs too: threads a backend starts while loading inherit them
        self._loader = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="servecore-loader", initializer=model_thread_initializer(config.model_cpus)
        )

    # -- what to serve ---------------------------------------------------------------------------

    def uris(self) -> list[str]:
        from servecore.dataplane import demo_model_path

        return list(self.config.models) or [str(demo_model_path())]

    def resolve(self) -> list[ModelDefinition]:
        """Every model the configured URIs stand for now (blocks: registries may download)."""
        return self.registries.resolve_all(self.uris(), self.config)

    def start(self) -> None:
        """Load what the registries describe, before the server takes requests.

        With ``--model-control none`` the first failure raises (the server does not start with a
        model missing); otherwise failures are reported in the index and the server starts.
        """
        strict = self.config.model_control == "none"
        for definition in self.resolve():
            if definition.error:
                if strict:
                    raise ModelLoadError(f"model {definition.name!r}: {definition.error}")
                self._problem(definition.name, definition.error)
                continue
            wanted = definition.settings.version_policy.select(definition.versions)
            if not wanted and strict:
                raise ModelLoadError(f"model {definition.name!r}: no version to serve in {definition.origin}")
            for version in wanted:
                path = definition.versions[version]
                fp = fingerprint(path)
                self._seen[(definition.name, version)] = fp
                try:
                    model = self._load(definition, version, path, fp)
                except ModelLoadError:
                    if strict:
                        raise
                    continue
                self._install(model)

    # -- loading (worker thread) -----------------------------------------------------------------

    def _load(self, definition: ModelDefinition, version: str, path: Path, fp: Fingerprint) -> ModelVersion:
        """Load, prepare and warm one version; raises ModelLoadError (recorded as failed)."""
        name = definition.name
        key = (name, version)
        settings = definition.settings
        backend_name = settings.backend or ""
        try:
            registration = self.backends.named(settings.backend) if settings.backend else self.backends.for_path(path)
            backend_name = registration.name
            self._set(key, LOADING, backend=backend_name)
            try:
                config = self.config.replace(**settings.overrides)
            except ConfigError as exc:
                raise ModelLoadError(f"model {name!r}: model.toml: {exc.message}") from None
            sha256 = sha256_of(path) if path.is_file() else ""
            expected = settings.expected_sha256(version)
            if expected and sha256 != expected:
                raise ModelLoadError(
                    f"model {name!r} version {version}: {path.name} has sha256 {sha256}, model.toml expects {expected}"
                )
            source = ModelSource(name, version, path, settings, sha256, verified=bool(expected))
            model = self._open(source, registration.name, registration.loader, config)
            model.fingerprint = fp
            self._set(key, WARMING, backend=backend_name)
            try:
                self._prepare(model)
            except BaseException:
                release(model, 0, lambda event: None)
                raise
        except ModelLoadError as exc:
            self._fail(key, fp, exc.message, backend_name)
            raise
        except Exception as exc:
            message = f"model {name!r} version {version}: backend {backend_name!r} failed to load {path}: {exc}"
            self._fail(key, fp, message, backend_name)
            raise ModelLoadError(message) from exc
        self._failed.pop(key, None)
        return model

    @staticmethod
    def _open(source: ModelSource, backend_name: str, loader: Any, config: ServeConfig) -> ModelVersion:
        backend = loader(source, config)
        executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"servecore-{source.name}", initializer=model_thread_initializer(config.model_cpus)
        )
        return ModelVersion(source, backend, backend_name, executor, config)

    def _fail(self, key: tuple[str, str], fp: Fingerprint, message: str, backend: str) -> None:
        logger.error("%s", message)
        self._failed[key] = fp
        self._set(key, FAILED, message, backend)

    def _set(self, key: tuple[str, str], state: str, reason: str = "", backend: str = "") -> None:
        self._others[key] = IndexEntry(key[0], key[1], state, reason)
        self._notify(ModelEvent(key[0], key[1], state, reason, backend))

    def _problem(self, name: str, error: str) -> None:
        if self._problems.get(name) != error:
            logger.error("model %s: %s", name, error)
            self._notify(ModelEvent(name, "", FAILED, error))
        self._problems[name] = error

    # -- swapping (event-loop thread) ------------------------------------------------------------

    def _install(self, model: ModelVersion) -> ModelVersion | None:
        """Make *model* serve; the version it replaces (same name and version) starts draining."""
        before = self.models.latest(model.name)
        replaced = self.models.install(model)
        self._others.pop((model.name, model.version), None)
        swapped = before is not None and before is not model and self.models.latest(model.name) is model
        reason = f"{SWAP_REASON}{before.version}" if swapped and before is not None else ""
        self._notify(ModelEvent(model.name, model.version, READY, reason, backend=model.backend_name))
        logger.info(
            "serving model %s version %s (%s%s)", model.name, model.version, model.backend_name,
            f", {model.backend.properties['providers']}" if "providers" in model.backend.properties else "",
        )
        if replaced is not None:
            self._start_drain(replaced, "replaced by a new artefact")
        return replaced

    def _start_drain(self, model: ModelVersion, reason: str) -> None:
        """Stop routing to *model*; close it once its in-flight requests are answered."""
        self.models.remove(model)
        closed = model.state == UNLOADED  # idle-unloaded: nothing left to release
        model.state = UNLOADED if closed else DRAINING
        key = (model.name, model.version)
        if self.models.find(model.name, model.version) is None:
            self._others[key] = IndexEntry(model.name, model.version, DRAINING, reason)
        if closed:
            self._others[key] = IndexEntry(model.name, model.version, UNLOADED, reason)
            return
        self._notify(ModelEvent(model.name, model.version, DRAINING, reason, model.backend_name))
        self._draining[model] = asyncio.get_running_loop().create_task(self._drain(model, reason))

    async def _drain(self, model: ModelVersion, reason: str) -> None:
        while model.inflight > 0:
            await asyncio.sleep(0.005)
        await self._on_loader(release, model, None, self._notify, reason)
        self._draining.pop(model, None)
        key = (model.name, model.version)
        if self.models.find(model.name, model.version) is None:
            self._others[key] = IndexEntry(model.name, model.version, UNLOADED, reason)

    async def _on_loader(self, fn: Callable[..., T], *args: Any) -> T:
        """Run *fn* on the one loader thread: sessions are created and freed on the same thread,
        so the allocator reuses one heap and a closed version's memory goes back (see
        :func:`servecore.models.release`) instead of staying behind in per-thread arenas."""
        return await asyncio.get_running_loop().run_in_executor(self._loader, functools.partial(fn, *args))

    def _lock_for_loop(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def sync(self, definitions: list[ModelDefinition], *, stable_only: bool, complete: bool) -> None:
        """Load, swap and unload so that the served versions match *definitions*.

        :param stable_only: load an artefact only if it looks the same as at the previous call.
        :param complete: *definitions* are all the models: served models missing from them go.
        """
        async with self._lock_for_loop():
            for definition in definitions:
                await self._sync_model(definition, stable_only)
            if complete:
                names = {d.name for d in definitions}
                for name in self.models.names():
                    if name not in names:
                        for model in self.models.versions(name):
                            self._start_drain(model, "no longer in the repository")
                for name in list(self._problems):
                    if name not in names:
                        del self._problems[name]

    async def _sync_model(self, definition: ModelDefinition, stable_only: bool) -> None:
        name = definition.name
        if definition.error:
            self._problem(name, definition.error)
            return  # keep serving what serves
        self._problems.pop(name, None)
        candidates: dict[str, Fingerprint] = {}
        for version, path in definition.versions.items():
            key = (name, version)
            fp = await asyncio.to_thread(fingerprint, path)
            previous = self._seen.get(key)
            self._seen[key] = fp
            if not fp or (stable_only and fp != previous):
                continue  # still being written (or gone): look again at the next poll
            if self._failed.get(key) == fp:
                continue  # this very artefact failed already
            candidates[version] = fp
        for version in definition.settings.version_policy.select(candidates):
            current = self.models.find(name, version)
            if current is not None and current.fingerprint == candidates[version]:
                continue
            try:
                model = await self._on_loader(
                    self._load, definition, version, definition.versions[version], candidates[version]
                )
            except ModelLoadError:
                continue
            self._install(model)
        # what the policy serves among what could be served; the rest drains
        policy = definition.settings.version_policy
        serving = [m for m in self.models.versions(name) if m.servable]
        servable = [m.version for m in serving if m.version in definition.versions]
        keep = set(policy.select(servable))
        drop = [m for m in serving if m.version not in keep]
        # A version the policy wants may still be settling (its artefact not yet stable) or
        # loading: until one is in, the versions serving now keep serving, even those that left
        # the registry (an alias that moved), so that there is never a moment with none.
        alive = [v for v in definition.versions if self._failed.get((name, v)) != self._seen.get((name, v))]
        waiting = [v for v in policy.select(alive) if v not in servable]
        if waiting and len(drop) == len(serving):
            return
        for model in drop:
            why = "no longer selected by the version policy" if model.version in definition.versions else "removed from the repository"
            self._start_drain(model, why)

    # -- the repository API (explicit mode) ------------------------------------------------------

    async def load(self, name: str) -> None:
        """Load (or reload) model *name* from the registries; raises ModelLoadError saying why."""
        definitions = await asyncio.to_thread(self.resolve)
        found = [d for d in definitions if d.name == name]
        if not found:
            raise ModelNotFoundError(f"model {name!r} is not in the model repository")
        definition = found[0]
        for version in definition.versions:
            self._failed.pop((name, version), None)  # an explicit load tries again
        await self.sync(found, stable_only=False, complete=False)
        if definition.error:
            raise ModelLoadError(f"failed to load model {name!r}: {definition.error}")
        # cleared above: what failed now failed in this load
        failed = [key for key in self._failed if key[0] == name]
        if failed or not any(m.ready for m in self.models.versions(name)):
            reasons = [self._others[key].reason for key in failed if key in self._others]
            serving = [m.version for m in self.models.versions(name) if m.ready]
            still = f" (still serving version {', '.join(serving)})" if serving else ""
            raise ModelLoadError(f"failed to load model {name!r}: {'; '.join(reasons) or 'no version to serve'}{still}")

    async def unload(self, name: str) -> None:
        """Stop serving every version of *name*; each finishes its in-flight requests first."""
        async with self._lock_for_loop():
            versions = self.models.versions(name)
            if not versions:
                raise ModelNotFoundError(f"model {name!r} is not loaded")
            for model in versions:
                self._start_drain(model, "unloaded through the repository API")
        await asyncio.gather(*(self._draining[m] for m in versions if m in self._draining))

    def index(self, *, ready_only: bool = False) -> list[IndexEntry]:
        """Every version known: serving ones, and those loading, warming, draining, unloaded or failed."""
        entries = {(m.name, m.version): IndexEntry(m.name, m.version, UNLOADED if m.idle else m.state, "idle" if m.idle else "") for m in self.models}
        for key, entry in self._others.items():
            entries.setdefault(key, entry)
        for name, error in self._problems.items():
            entries[(name, "")] = IndexEntry(name, "", FAILED, error)
        ordered = sorted(entries.values(), key=lambda e: (e.name, version_key(e.version)))
        return [e for e in ordered if e.state == READY] if ready_only else ordered

    # -- background tasks ------------------------------------------------------------------------

    async def poll_forever(self) -> None:
        """Poll mode: look at the registries every poll interval and follow them."""
        while True:
            await asyncio.sleep(self.config.poll_interval)
            try:
                definitions = await asyncio.to_thread(self.resolve)
            except ServecoreError as exc:
                logger.warning("model poll failed, serving what was loaded: %s", exc.message)
                continue
            except Exception:
                logger.exception("model poll failed, serving what was loaded")
                continue
            await self.sync(definitions, stable_only=True, complete=True)

    async def unload_idle_forever(self) -> None:
        """Free models without a request for ``--idle-unload-seconds``."""
        limit = self.config.idle_unload_seconds
        while True:
            await asyncio.sleep(min(max(limit / 4, 0.05), 1.0))
            now = time.monotonic()
            for model in list(self.models):
                if model.ready and model.inflight == 0 and now - model.last_used >= limit:
                    self._sleep(model)

    def _sleep(self, model: ModelVersion) -> None:
        model.idle = True
        model.state = DRAINING
        reason = f"idle for {self.config.idle_unload_seconds:g} s"
        logger.info("model %s version %s unloaded: %s", model.name, model.version, reason)
        self._draining[model] = asyncio.get_running_loop().create_task(self._release_idle(model, reason))

    async def _release_idle(self, model: ModelVersion, reason: str) -> None:
        await self._on_loader(release, model, None, self._notify, reason)
        self._draining.pop(model, None)

    async def wake(self, model: ModelVersion) -> None:
        """Load an idle-unloaded *model* again (once, however many requests wait for it)."""
        waiting = self._waking.get(model)
        if waiting is None:
            waiting = self._waking[model] = asyncio.get_running_loop().create_future()
            try:
                started = time.perf_counter()
                unloading = self._draining.get(model)
                if unloading is not None:
                    await unloading
                if self.models.find(model.name, model.version) is not model:
                    raise ModelLoadError("it was replaced or removed while idle")
                await self._on_loader(self._reopen, model)
                model.idle = False
                model.last_used = time.monotonic()
                self.models.install(model)
                self._notify(ModelEvent(model.name, model.version, READY, "loaded again on demand", model.backend_name))
                seconds = time.perf_counter() - started
                self._on_cold_start(model, seconds)
                logger.info("model %s version %s loaded again in %.3f s", model.name, model.version, seconds)
                waiting.set_result(None)
            except BaseException as exc:
                waiting.set_exception(exc)
                waiting.exception()  # retrieved: the waiters (if any) get it too
            finally:
                del self._waking[model]
        try:
            await asyncio.shield(waiting)
        except ServecoreError as exc:
            raise UnavailableError(f"model {model.name!r} version {model.version} could not be loaded again: {exc.message}") from exc

    def _reopen(self, model: ModelVersion) -> None:
        """Worker thread: give an idle model a fresh backend, workers and scheduler."""
        source = model.source
        registration = (
            self.backends.named(source.settings.backend) if source.settings.backend else self.backends.for_path(source.path)
        )
        self._notify(ModelEvent(model.name, model.version, LOADING, "loading again on demand", registration.name))
        fresh = self._open(source, registration.name, registration.loader, model.config)
        model.backend, model.executor, model.scheduler = fresh.backend, fresh.executor, None
        model.releasing = False
        model.state = WARMING
        self._notify(ModelEvent(model.name, model.version, WARMING, backend=registration.name))
        try:
            self._prepare(model)
        except BaseException:
            release(model, 0, lambda event: None)  # stays idle: the next request tries again
            raise

    def close(self, timeout: float | None) -> int:
        """At shutdown: release the versions still draining; returns how many were abandoned."""
        abandoned = 0
        for model in list(self._draining):
            if not release(model, timeout, self._notify, "shutdown"):
                abandoned += 1
        self._draining.clear()
        self._loader.shutdown(wait=False)
        return abandoned
