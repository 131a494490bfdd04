"""Model registries: from the model arguments (paths, URIs) to the models they stand for.

Registries are plugins (``servecore_register_registries``), keyed by URI scheme; an argument with
no registered scheme is a path, resolved by the built-in ``filesystem`` registry.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Iterator

import pluggy

from servecore.errors import ConfigError, ModelLoadError
from servecore.types import ModelDefinition, ModelRegistry

if TYPE_CHECKING:
    from servecore.config import ServeConfig

#: the scheme of paths and ``file:`` URIs
FILE_SCHEME = "file"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")


class Registries:
    """The registries plugins registered, by scheme."""

    def __init__(self) -> None:
        self._by_scheme: dict[str, ModelRegistry] = {}

    @classmethod
    def from_plugins(cls, pm: pluggy.PluginManager) -> Registries:
        registries = cls()
        pm.hook.servecore_register_registries(register=registries.add)
        return registries

    def add(self, scheme: str, registry: ModelRegistry) -> None:
        scheme = scheme.lower()
        if not _SCHEME.match(scheme + ":"):
            raise ConfigError(f"{scheme!r} is not a URI scheme")
        if scheme in self._by_scheme:
            raise ConfigError(f"model registry scheme {scheme!r} is registered twice")
        self._by_scheme[scheme] = registry

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._by_scheme))

    def scheme_of(self, uri: str) -> str:
        """The registry scheme of *uri*: its own when registered, else ``file`` (a path)."""
        found = _SCHEME.match(uri)
        if found and found.group(1).lower() in self._by_scheme:
            return found.group(1).lower()
        return FILE_SCHEME

    def resolve(self, uri: str, config: ServeConfig) -> list[ModelDefinition]:
        """The models *uri* stands for now; raises ModelLoadError."""
        scheme = self.scheme_of(uri)
        registry = self._by_scheme.get(scheme)
        if registry is None:
            raise ModelLoadError(f"no model registry takes {uri!r} (registered schemes: {', '.join(self) or 'none'})")
        definitions = registry(uri, config)
        for definition in definitions:
            if not definition.name or "/" in definition.name:
                raise ModelLoadError(f"{uri}: registry {scheme!r} named a model {definition.name!r}")
        return definitions

    def resolve_all(self, uris: list[str], config: ServeConfig) -> list[ModelDefinition]:
        """Every model of every URI; two URIs naming the same model is an error."""
        found: dict[str, ModelDefinition] = {}
        for uri in uris:
            for definition in self.resolve(uri, config):
                other = found.get(definition.name)
                if other is not None:
                    raise ModelLoadError(
                        f"model {definition.name!r} is found twice: in {other.origin or '?'} and {definition.origin or uri}"
                    )
                found[definition.name] = definition
        return list(found.values())
