"""Build the plugin manager: built-ins first, exactly like third-party plugins, then entry points.

There is no global manager: every server and CLI command builds its own with
:func:`get_plugin_manager`.
"""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass
from typing import Any, Iterable

import pluggy

from servecore import hookspecs
from servecore._version import __version__

logger = logging.getLogger("servecore.plugins")

#: Built-in plugins: (name, module). They are registered through :func:`register_plugin`, the same
#: call that registers entry-point plugins, and can be blocked by name like any other.
DEFAULT_PLUGINS: tuple[tuple[str, str], ...] = (
    ("filesystem", "servecore.builtins.filesystem"),
    ("onnxruntime", "servecore.builtins.onnx_backend"),
    ("torch", "servecore.builtins.torch_backend"),
    ("api-keys", "servecore.builtins.api_keys"),
    ("audit-file", "servecore.builtins.audit_file"),
)

ENTRY_POINT_GROUP = hookspecs.PROJECT


def _blocked_from_env() -> frozenset[str]:
    raw = os.environ.get("SERVECORE_DISABLE_PLUGINS", "")
    return frozenset(p.strip() for p in raw.split(",") if p.strip())


def register_plugin(pm: pluggy.PluginManager, plugin: object, name: str) -> None:
    """Register *plugin* under *name* unless that name is blocked."""
    if pm.is_blocked(name):
        logger.debug("plugin %s is disabled", name)
        return
    pm.register(plugin, name=name)


def get_plugin_manager(
    *,
    disabled: Iterable[str] = (),
    load_entrypoints: bool = True,
    extra_plugins: Iterable[tuple[str, object]] = (),
) -> pluggy.PluginManager:
    """A new plugin manager with the hookspecs, built-ins, entry points and *extra_plugins*.

    :param disabled: plugin names to block, in addition to ``SERVECORE_DISABLE_PLUGINS``.
    :param load_entrypoints: load plugins from the ``servecore`` entry-point group.
    :param extra_plugins: (name, plugin) pairs registered last (tests, embedding applications).
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in _blocked_from_env() | frozenset(disabled):
        pm.set_blocked(name)
    for name, module_name in DEFAULT_PLUGINS:
        if not pm.is_blocked(name):
            register_plugin(pm, importlib.import_module(module_name), name)
    if load_entrypoints:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    for name, plugin in extra_plugins:
        register_plugin(pm, plugin, name)
    pm.check_pending()
    if os.environ.get("SERVECORE_TRACE_PLUGINS"):
        pm.trace.root.setwriter(lambda message: logger.info("%s", message.rstrip()))
        pm.enable_tracing()
    return pm


@dataclass(frozen=True)
class PluginInfo:
    """What ``servecore plugins`` shows for one plugin."""

    name: str
    version: str
    distribution: str
    hooks: tuple[str, ...]
    builtin: bool


def list_plugins(pm: pluggy.PluginManager) -> list[PluginInfo]:
    """Every registered plugin with its distribution, version and the hooks it implements."""
    dists: dict[int, Any] = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
    builtin_names = {name for name, _ in DEFAULT_PLUGINS}
    infos = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:  # blocked
            continue
        hooks = tuple(sorted(caller.name for caller in pm.get_hookcallers(plugin) or ()))
        dist = dists.get(id(plugin))
        if dist is not None:
            version, distribution = dist.version, dist.project_name
        else:
            version, distribution = __version__, "servecore"
        infos.append(PluginInfo(name, version, distribution, hooks, name in builtin_names))
    return infos


def blocked_plugins(pm: pluggy.PluginManager) -> list[str]:
    """Names of the plugins blocked in *pm*."""
    return sorted(name for name, plugin in pm.list_name_plugin() if plugin is None)
