"""The plugin contract: every hook servecore calls, typed and documented.

Plugins implement these with the :data:`hookimpl` marker (``from servecore import hookimpl``)
and are found through the ``servecore`` entry-point group. ``docs/plugin_hooks.md`` documents each
hook with an example; ``tests/test_meta.py`` fails when a hook lacks documentation or a test.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import pluggy

if TYPE_CHECKING:
    from servecore.config import ServeConfig
    from servecore.audit.events import AuditSink
    from servecore.drift.monitor import Alert
    from servecore.types import Authenticator, ModelEvent, ModelRegistry

PROJECT = "servecore"

hookspec = pluggy.HookspecMarker(PROJECT)
#: Marker for hook implementations: ``@hookimpl def servecore_register_backends(register): ...``
hookimpl = pluggy.HookimplMarker(PROJECT)

#: ``register(name, loader, *, suffixes, priority=0)``, handed to :func:`servecore_register_backends`.
RegisterBackend = Callable[..., None]
#: ``register(authenticator)``, handed to :func:`servecore_register_authenticators`.
RegisterAuthenticator = Callable[["Authenticator"], None]
#: ``register(sink)``, handed to :func:`servecore_register_audit_sinks`.
RegisterAuditSink = Callable[["AuditSink"], None]
#: ``register(scheme, registry)``, handed to :func:`servecore_register_registries`.
RegisterRegistry = Callable[[str, "ModelRegistry"], None]


# ---------------------------------------------------------------------------------------------
# Start-up: collection hooks, called once when a server (or a CLI command) builds its plugins.
# ---------------------------------------------------------------------------------------------


@hookspec
def servecore_register_backends(register: RegisterBackend) -> None:
    """Register model backends.

    Call ``register(name, loader, *, suffixes, priority=0)`` once per backend:

    :param register: the callback. ``name`` is the backend's name (``onnxruntime``); ``loader`` is a
        :data:`servecore.types.BackendLoader`, called as ``loader(source, config)`` with a
        :class:`~servecore.types.ModelSource` and the :class:`~servecore.config.ServeConfig`, returning
        a :class:`~servecore.types.Backend`; ``suffixes`` are the artefact file suffixes it serves
        (``(".onnx",)``); when several backends claim a suffix the highest ``priority`` wins, and a
        name registered twice is an error.

    Called once per server start and by ``servecore info`` / ``servecore plugins``.

    .. versionadded:: 0.1
    """


@hookspec
def servecore_register_registries(register: RegisterRegistry) -> None:
    """Register model registries: where model URIs of a scheme are resolved.

    :param register: call ``register(scheme, registry)`` once per URI scheme. ``scheme`` is the part
        before the first ``:`` of a model argument (``mlflow`` for ``mlflow:/models/fraud/3``);
        ``registry`` is a :data:`servecore.types.ModelRegistry`, called as ``registry(uri, config)``
        with the whole URI and the :class:`~servecore.config.ServeConfig`. It returns a list of
        :class:`~servecore.types.ModelDefinition`, each naming a model, the local artefact path of
        every version it has (download remote artefacts first, writing to a temporary name and
        renaming, so a half-written file is never seen) and its settings. It runs on a worker thread
        at start-up and, with ``--model-control poll``, on every poll: return what is current now
        and the server loads, swaps and unloads versions to match. Raise
        :class:`~servecore.errors.ModelLoadError` when the URI cannot be resolved.

    Arguments without a registered scheme are paths, resolved by the built-in ``filesystem``
    registry (a model file, or a repository directory ``DIR/<model>/<version>/<artefact>``).
    A scheme registered twice is an error. Called once per server start.

    .. versionadded:: 0.2
    """


@hookspec
def servecore_register_audit_sinks(register: RegisterAuditSink, config: ServeConfig) -> None:
    """Register audit sinks: where the audit records of this server go.

    :param register: call ``register(sink)`` with a :class:`~servecore.audit.events.AuditSink`:
        an object with ``writable`` (a property), ``ensure_accepting()`` (raise
        :class:`~servecore.audit.errors.AuditUnavailableError` when a record could not be taken
        now: the inference is then answered 503 under fail-closed), ``submit(event)`` (queue one
        record, never blocking), ``submit_durable(event)`` (a ``concurrent.futures.Future``
        resolved once the record is durable) and ``close(timeout)``.
    :param config: the server's configuration; register nothing when your sink is not configured.

    Records are plain JSON mappings built by :mod:`servecore.audit.events` with the caller's
    principal already pseudonymised and inputs and outputs as keyed digests (the keys come from
    ``--audit-keys``), so every sink receives the same privacy-preserving record. The built-in
    ``audit-file`` plugin registers the tamper-evident file log of ``--audit-dir``. Called once
    per server start; sinks are closed at shutdown.

    .. versionadded:: 0.2
    """


@hookspec
def servecore_register_authenticators(register: RegisterAuthenticator, config: ServeConfig) -> None:
    """Register request authenticators for this server's configuration.

    :param register: call ``register(authenticator)`` with a :class:`~servecore.types.Authenticator`,
        a callable taking the request's headers (lower-case names) and returning a
        :class:`~servecore.types.Principal`, None to pass, or raising
        :class:`~servecore.errors.AuthenticationError`.
    :param config: the server's configuration; register nothing when your plugin is not configured.

    When at least one authenticator is registered, every endpoint except the health probes requires
    one of them to return a principal; otherwise the request is answered 401 ``{"error": ...}``.
    Authenticators are asked in registration order; the first principal wins. With none registered
    the server is open. Called once per server start.

    .. versionadded:: 0.1
    """


# ---------------------------------------------------------------------------------------------
# Notifications: called as things happen; implementations must be quick and must not raise.
# ---------------------------------------------------------------------------------------------


@hookspec
def servecore_on_model_event(event: ModelEvent) -> None:
    """A model version changed state.

    :param event: a :class:`~servecore.types.ModelEvent` naming the model, version, new ``state``
        (``loading``, ``warming``, ``ready``, ``draining``, ``unloaded`` or ``failed``), the backend
        and a ``reason``. A version that fails leaves any other version of the model serving.

    Called on the thread that loads or unloads the model, in the order the transitions happen.
    An exception raised by an implementation is logged and otherwise ignored.

    .. versionadded:: 0.1
    """


@hookspec
def servecore_on_drift_alert(alert: Alert) -> None:
    """A drift alert opened or cleared.

    :param alert: a :class:`~servecore.drift.monitor.Alert` naming the model, version and
        feature, whether the alert is now ``open``, the ``window`` id that decided it, and the
        feature's ``statistics`` in that window (PSI, Jensen-Shannon, KS or chi-square p-value,
        Wasserstein over the reference sigma, missing rate, counts) as JSON-ready data.

    An alert opens when k of the last m evaluated windows of a feature drifted (significant after
    the Bonferroni correction AND an effect size above its threshold) and clears when fewer do.
    Called on the model's monitoring thread, once per change; an exception raised by an
    implementation is logged and otherwise ignored.

    .. versionadded:: 0.2
    """
