"""Built-in registry plugin: model files and repository directories on the local file system.

* A file is one model, version ``1``, named after the file's stem (or ``--model-name``).
* A directory holding ``model.toml`` or numbered version directories is one model, named after
  the directory.
* Any other directory is a repository: each sub-directory is a model laid out as
  ``<model>/<version>/model.<suffix>`` with an optional ``<model>/model.toml``
  (see :mod:`servecore.modeltoml`). Version directories are whole numbers; hidden entries and
  files ending in ``.tmp``, ``.part`` or ``~`` are ignored, so copy an artefact under such a name
  and rename it for an atomic hand-over.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from servecore.errors import ConfigError, ModelLoadError
from servecore.hookspecs import RegisterRegistry, hookimpl
from servecore.modeltoml import FILENAME, load_model_toml
from servecore.types import ModelDefinition, ModelSettings

if TYPE_CHECKING:
    from servecore.config import ServeConfig

logger = logging.getLogger("servecore.repository")

ARTEFACT_STEM = "model"
_PARTIAL_SUFFIXES = (".tmp", ".part", "~")


def _visible(path: Path) -> bool:
    return not path.name.startswith(".") and not path.name.endswith(_PARTIAL_SUFFIXES)


def _artefact(version_dir: Path) -> Path | None:
    """The ``model.*`` entry of a version directory (a file, or a directory artefact)."""
    found = sorted(
        p for p in version_dir.iterdir() if _visible(p) and p.name.split(".", 1)[0] == ARTEFACT_STEM and "." in p.name
    )
    if len(found) > 1:
        logger.warning("%s holds several artefacts (%s): serving %s", version_dir, ", ".join(p.name for p in found), found[0].name)
    return found[0] if found else None


def is_model_dir(path: Path) -> bool:
    """Whether *path* is one model's directory rather than a repository of them."""
    return (path / FILENAME).is_file() or any(p.is_dir() and p.name.isdigit() for p in path.iterdir())


def read_model_dir(path: Path, name: str | None = None) -> ModelDefinition:
    """The model in directory *path*: its settings and the artefact of each version present."""
    name = name or path.name
    settings = ModelSettings()
    toml = path / FILENAME
    if toml.is_file():
        try:
            settings = load_model_toml(toml)
        except ConfigError as exc:
            return ModelDefinition(name, {}, origin=str(path), error=exc.message)
    versions: dict[str, Path] = {}
    for entry in sorted(path.iterdir()):
        if not entry.is_dir() or not _visible(entry):
            continue
        if not entry.name.isdigit():
            logger.debug("%s: %s is not a version number, ignored", path, entry.name)
            continue
        artefact = _artefact(entry)
        if artefact is not None:
            versions[str(int(entry.name))] = artefact
    return ModelDefinition(name, versions, settings, origin=str(path))


def resolve_path(uri: str, config: ServeConfig) -> list[ModelDefinition]:
    """A file, a model directory or a repository directory (``file:`` URIs too)."""
    path = Path(uri.removeprefix("file://") if uri.startswith("file://") else uri.removeprefix("file:"))
    if path.is_file():
        return [ModelDefinition(config.model_name or path.name.split(".", 1)[0], {"1": path}, origin=str(path))]
    if not path.is_dir():
        raise ModelLoadError(f"{path}: no such model file or directory")
    if is_model_dir(path):
        return [read_model_dir(path, config.model_name)]
    return [read_model_dir(entry) for entry in sorted(path.iterdir()) if entry.is_dir() and _visible(entry)]


@hookimpl
def servecore_register_registries(register: RegisterRegistry) -> None:
    register("file", resolve_path)
