"""servecore-mlflow: serve models from an MLflow Model Registry.

Registers the ``mlflow`` URI scheme (hook ``servecore_register_registries``)::

    MLFLOW_TRACKING_URI=http://127.0.0.1:5000 servecore serve mlflow:/models/fraud/champion --model-control poll

A model argument ``mlflow:/models/<name>/<reference>`` (``mlflow:models/...`` and
``mlflow://models/...`` are the same) names a registered model and one of its versions:

* a whole number is that version (``mlflow:/models/fraud/3``);
* ``latest`` is the highest version number whose registration is complete;
* anything else is an alias (``mlflow:/models/fraud/champion``).

The MLflow server is the one MLflow's own clients use: ``MLFLOW_TRACKING_URI`` (and
``MLFLOW_REGISTRY_URI`` when the registry lives elsewhere); the plugin refuses to guess one when
neither is set. Credentials and HTTP settings are MLflow's environment variables too
(``MLFLOW_TRACKING_TOKEN``, ``MLFLOW_TRACKING_USERNAME``/``_PASSWORD``, ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``,
``MLFLOW_HTTP_REQUEST_TIMEOUT``...).

Each resolution (at start-up, and on every poll with ``--model-control poll``) asks the registry
which version the reference stands for now and returns that one version: when an alias moves, the
next poll returns the new version and the server loads it, swaps it in and drains the old one.

A version's artefacts are downloaded once into ``<model cache dir>/mlflow/<name>/<version>``
(``--model-cache-dir``, default ``~/.cache/servecore/models``): into a temporary directory beside it,
renamed into place when complete, so a half-downloaded version is never seen. A cached directory is
used again only if it came from the same registry and the same model source (a marker file,
``.servecore-mlflow.json``, records them); otherwise it is downloaded again and replaced.

The artefact served is the ``model.*`` entry of the downloaded directory (or of its ``data/``
directory): ``model.onnx`` for an MLflow ONNX-flavour model. When there are several, the suffixes of
the built-in backends are preferred in the order of :data:`PREFERRED_SUFFIXES`; a single entry of
another suffix is handed to the server, whose installed backends decide whether they serve it.

``mlflow`` is imported on the first resolution only, so the plugin costs nothing to servers that
do not use the scheme.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from servecore import hookimpl
from servecore.errors import ModelLoadError
from servecore.hookspecs import RegisterRegistry
from servecore.types import ModelDefinition, ModelSettings

if TYPE_CHECKING:
    from servecore.config import ServeConfig

logger = logging.getLogger("servecore.mlflow")

#: The URI scheme this plugin registers.
SCHEME = "mlflow"
#: MLflow's own environment variables naming its tracking server and (optionally) its registry.
ENV_TRACKING_URI = "MLFLOW_TRACKING_URI"
ENV_REGISTRY_URI = "MLFLOW_REGISTRY_URI"
#: The reference that means "the highest version number".
LATEST = "latest"
#: Artefact suffixes preferred, in this order, when a version holds several ``model.*`` entries.
PREFERRED_SUFFIXES = (".onnx", ".pt2", ".pt")
#: The file recording where a cached version came from.
MARKER = ".servecore-mlflow.json"

_USAGE = "expected mlflow:/models/<name>/<version, alias or 'latest'>"


@dataclass(frozen=True)
class ModelReference:
    """A parsed ``mlflow:`` URI: a registered model and a version number, an alias or ``latest``."""

    name: str
    reference: str

    @property
    def is_version(self) -> bool:
        return self.reference.isdigit()

    @property
    def is_latest(self) -> bool:
        return self.reference == LATEST


def parse_uri(uri: str) -> ModelReference:
    """``mlflow:/models/<name>/<ref>`` (also ``mlflow:models/...``, ``mlflow://models/...``)."""
    scheme, colon, rest = uri.partition(":")
    if not colon or scheme.lower() != SCHEME:
        raise ModelLoadError(f"{uri}: not an mlflow: URI; {_USAGE}")
    parts = rest.lstrip("/").split("/")
    if len(parts) != 3 or parts[0] != "models" or not parts[1] or not parts[2]:
        raise ModelLoadError(f"{uri}: {_USAGE}")
    name, reference = parts[1], parts[2]
    if name in (".", "..") or "\\" in name or "\0" in name:
        raise ModelLoadError(f"{uri}: {name!r} cannot be served as a model name")
    if reference.isdigit():
        reference = str(int(reference))
    return ModelReference(name, reference)


def registry_uri(environ: Mapping[str, str] = os.environ) -> str:
    """The MLflow registry to ask: ``MLFLOW_REGISTRY_URI``, else ``MLFLOW_TRACKING_URI``."""
    found = environ.get(ENV_REGISTRY_URI, "").strip() or environ.get(ENV_TRACKING_URI, "").strip()
    if not found:
        raise ModelLoadError(f"{ENV_TRACKING_URI} is not set: set it to the MLflow server (http://host:5000)")
    return found


def find_artefact(directory: Path) -> Path:
    """The ``model.*`` entry of a downloaded version (of its ``data/`` directory if none at the top)."""
    for place in (directory, directory / "data"):
        if not place.is_dir():
            continue
        found = sorted(
            p
            for p in place.iterdir()
            if not p.name.startswith(".") and "." in p.name and p.name.split(".", 1)[0] == "model"
        )
        for suffix in PREFERRED_SUFFIXES:
            preferred = [p for p in found if p.name.lower().endswith(suffix)]
            if preferred:
                return preferred[0]
        if len(found) == 1:
            return found[0]  # the server's backends decide whether they serve it
        if found:
            raise ModelLoadError(
                f"{directory}: several model artefacts ({', '.join(p.name for p in found)}) and none is "
                f"{'/'.join(PREFERRED_SUFFIXES)}"
            )
    listing = ", ".join(sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))) or "nothing"
    raise ModelLoadError(
        f"{directory}: no servable artefact: expected a model.* file such as model.onnx, found {listing}"
    )


def resolve(uri: str, config: ServeConfig) -> list[ModelDefinition]:
    """The registry servecore calls for ``mlflow:`` URIs: the one version *uri* stands for now."""
    ref = parse_uri(uri)
    try:
        server = registry_uri()
    except ModelLoadError as exc:
        raise ModelLoadError(f"{uri}: {exc.message}") from None
    try:
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException
    except ImportError as exc:  # pragma: no cover - a dependency of this distribution
        raise ModelLoadError(f"{uri}: the mlflow package cannot be imported: {exc}") from None

    tracking = os.environ.get(ENV_TRACKING_URI, "").strip() or server
    client = MlflowClient(tracking_uri=tracking, registry_uri=server)
    where = f"MLflow registry {server}"
    try:
        try:
            registered = client.get_registered_model(ref.name)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                raise ModelLoadError(f"{uri}: {where} has no registered model {ref.name!r}") from None
            raise
        version = _model_version(client, ref, registered, uri, where)
        try:
            directory = _download(client, tracking, ref.name, version, server, config.resolved_model_cache_dir)
        except Exception as exc:  # noqa: BLE001 - MlflowException, OSError, an artifact store's own errors
            message = (
                exc.message if isinstance(exc, (MlflowException, ModelLoadError)) else f"{type(exc).__name__}: {exc}"
            )
            raise ModelLoadError(
                f"{uri}: cannot download model {ref.name!r} version {version.version}: {message}"
            ) from None
    except MlflowException as exc:
        raise ModelLoadError(f"{uri}: {where}: {exc.message}") from None
    try:
        artefact = find_artefact(directory)
    except ModelLoadError as exc:
        raise ModelLoadError(f"{uri}: model {ref.name!r} version {version.version}: {exc.message}") from None
    tags: Mapping[str, str] = version.tags or {}
    model_tags: Mapping[str, str] = registered.tags or {}
    settings = ModelSettings(
        description=version.description or registered.description or "",
        owner=tags.get("owner") or model_tags.get("owner") or version.user_id or "",
    )
    name = config.model_name or ref.name
    return [ModelDefinition(name, {str(version.version): artefact}, settings, origin=uri)]


def _model_version(client: Any, ref: ModelReference, registered: Any, uri: str, where: str) -> Any:
    """The model version *ref* stands for now; raises ModelLoadError when there is none."""
    from mlflow.exceptions import MlflowException

    if ref.is_latest:
        versions: list[Any] = []
        token: str | None = None
        while True:
            page = client.search_model_versions(f"name = {_quote(ref.name)}", page_token=token)
            versions.extend(v for v in page if v.status == "READY")
            token = page.token
            if not token:
                break
        if not versions:
            raise ModelLoadError(f"{uri}: model {ref.name!r} has no version ready in {where}")
        return max(versions, key=lambda v: int(v.version))
    try:
        if ref.is_version:
            version = client.get_model_version(ref.name, ref.reference)
        else:
            version = client.get_model_version_by_alias(ref.name, ref.reference)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
        if ref.is_version:
            raise ModelLoadError(f"{uri}: model {ref.name!r} has no version {ref.reference} in {where}") from None
        aliases = dict(getattr(registered, "aliases", None) or {})
        known = ", ".join(f"{a} -> {v}" for a, v in sorted(aliases.items())) or "none"
        raise ModelLoadError(
            f"{uri}: model {ref.name!r} has no alias {ref.reference!r} in {where} (aliases: {known})"
        ) from None
    if version.status != "READY":
        raise ModelLoadError(
            f"{uri}: model {ref.name!r} version {version.version} is {version.status}"
            + (f": {version.status_message}" if version.status_message else "")
        )
    return version


def _quote(value: str) -> str:
    """A string literal for an MLflow search filter."""
    return '"' + value + '"' if "'" in value else "'" + value + "'"


def _download(client: Any, tracking: str, name: str, version: Any, server: str, cache_root: Path) -> Path:
    """The local directory holding *version*'s artefacts, downloaded unless already cached."""
    import mlflow.artifacts

    number = str(version.version)
    final = cache_root / "mlflow" / name / number
    origin = {
        "registry": server,
        "name": name,
        "version": number,
        "source": version.source or "",
        "run_id": version.run_id or "",
    }
    if final.is_dir() and _same_origin(final, origin):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{number}-", suffix=".part", dir=final.parent))
    try:
        logger.info("downloading MLflow model %s version %s from %s", name, number, server)
        source = client.get_model_version_download_uri(name, number)
        # the artefacts land in partial itself or in a directory inside it named after the source
        local = Path(
            mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(partial), tracking_uri=tracking)
        )
        if not local.is_dir():
            raise ModelLoadError(f"its source {source} is a file, not a model directory")
        (local / MARKER).write_text(json.dumps(origin, indent=2) + "\n")
        if final.exists():  # another registry's or another source's download: replace it
            stale = final.with_name(f".{number}-{uuid.uuid4().hex}.stale")
            os.rename(final, stale)
            os.rename(local, final)
            shutil.rmtree(stale, ignore_errors=True)
        else:
            try:
                os.rename(local, final)
            except OSError:
                if not (final.is_dir() and _same_origin(final, origin)):
                    raise
                # another process finished the same download first: use theirs
        logger.info("MLflow model %s version %s is in %s", name, number, final)
        return final
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _same_origin(directory: Path, origin: Mapping[str, str]) -> bool:
    try:
        recorded = json.loads((directory / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(recorded, dict) and all(
        recorded.get(k) == origin[k] for k in ("registry", "name", "version", "source")
    )


@hookimpl
def servecore_register_registries(register: RegisterRegistry) -> None:
    register(SCHEME, resolve)
