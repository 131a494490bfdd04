"""The values that cross layers: tensors, requests, responses, and the plugin-facing protocols.

Nothing here imports a web framework or a backend library.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from servecore.config import ServeConfig

#: Request-level or tensor-level parameters (protocol.md section 4.3): str, int, float or bool values.
Parameters = dict[str, Any]


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A model input or output: V2 datatype and shape, ``-1`` for a dimension of any size.

    A backend that cannot tell an input's datatype and shape from its artefact (a TorchScript file
    without ``model.toml``) declares it *open*: datatype :data:`ANY_DATATYPE` and shape ``()``;
    requests may then send any datatype and shape for it, and metadata shows ``""`` and ``[-1]``
    (unknown rank is not expressible otherwise). A backend with no ``outputs`` at all decides at run
    time and every array it returns is sent.
    """

    name: str
    datatype: str
    shape: tuple[int, ...]

    @property
    def open(self) -> bool:
        return self.datatype == ANY_DATATYPE

    def as_metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": [-1] if self.open else list(self.shape)}


#: The datatype of an open :class:`TensorSpec`: anything a request sends is accepted.
ANY_DATATYPE = ""


@dataclass(slots=True)
class InferInput:
    """One decoded request tensor; ``data`` is already reshaped to ``shape``."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray
    parameters: Parameters = field(default_factory=dict)


@dataclass(slots=True)
class RequestedOutput:
    """An entry of the request's ``outputs``: ``binary`` None means "the request's default"."""

    name: str
    binary: bool | None = None
    class_count: int = 0
    parameters: Parameters = field(default_factory=dict)


@dataclass(slots=True)
class InferenceRequest:
    """A transport-independent inference request."""

    model_name: str
    model_version: str | None
    inputs: list[InferInput]
    outputs: list[RequestedOutput] | None = None
    id: str | None = None
    parameters: Parameters = field(default_factory=dict)
    binary_output_default: bool = False
    principal: Principal | None = None
    #: set by a transport that can tell when its client goes away: called when the request starts
    #: waiting in a queue, it returns the function to call when the wait is over
    on_wait: Callable[[], Callable[[], None]] | None = None


@dataclass(slots=True)
class InferOutput:
    """One response tensor; ``binary`` says how the transport should send it."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray
    binary: bool = False


@dataclass(slots=True)
class InferenceResponse:
    model_name: str
    model_version: str
    outputs: list[InferOutput]
    id: str | None = None
    parameters: Parameters | None = None


@dataclass(frozen=True, slots=True)
class Principal:
    """Who sent a request: ``name`` as the authenticator knows it, ``method`` how it was proven."""

    name: str
    method: str


@dataclass(frozen=True, slots=True)
class VersionPolicy:
    """Which of a model's versions are served: the ``latest`` N, ``all``, or ``specific`` ones."""

    kind: str = "latest"
    count: int = 1
    versions: tuple[str, ...] = ()

    def select(self, available: Iterable[str]) -> list[str]:
        """The versions of *available* this policy serves, in ascending version order."""
        ordered = sorted(set(available), key=version_key)
        if self.kind == "all":
            return ordered
        if self.kind == "specific":
            return [v for v in ordered if v in self.versions]
        return ordered[-self.count:] if self.count > 0 else []


def version_key(version: str) -> tuple[int, int | str]:
    """Sort key of version names: numbers numerically, then other names alphabetically."""
    return (0, int(version)) if version.isdigit() else (1, version)


@dataclass(frozen=True, slots=True)
class ModelSettings:
    """What a model's ``model.toml`` (or a registry plugin) says about it; every field is optional.

    ``overrides`` holds :class:`~servecore.config.ServeConfig` fields that apply to this model only
    (batching settings, ``instances``, ``providers``, ``pad_inputs``...): a backend loader receives the
    server's configuration with them applied. ``inputs``/``outputs`` declare a signature for backends
    that cannot read one from the artefact. ``sha256`` maps a version (or ``"*"``) to the artefact's
    expected digest; a mismatch fails the load.
    """

    backend: str | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    #: None: as ``--warmup`` says
    warmup: bool | None = None
    #: run generated inputs (zeros, one run per batch size) as well as the samples
    warmup_generate: bool = True
    warmup_samples: tuple[Path, ...] = ()
    version_policy: VersionPolicy = VersionPolicy()
    reference_profile: Path | None = None
    owner: str = ""
    description: str = ""
    labels_file: Path | None = None
    sha256: Mapping[str, str] = field(default_factory=dict)
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()

    def expected_sha256(self, version: str) -> str | None:
        return self.sha256.get(version) or self.sha256.get("*")


@dataclass(frozen=True, slots=True)
class ModelSource:
    """Where a model version comes from: handed to a backend's loader.

    ``sha256`` is the artefact's digest as the server computed it before loading (empty for a
    directory artefact); ``verified`` is true when it matched a digest pinned in the settings.
    """

    name: str
    version: str
    path: Path
    settings: ModelSettings = ModelSettings()
    sha256: str = ""
    verified: bool = False


@dataclass(frozen=True, slots=True)
class ModelDefinition:
    """A model as a registry describes it: its settings and the artefact of each available version.

    The server applies ``settings.version_policy`` to ``versions`` and loads what it selects;
    ``origin`` (a directory, a URI) is shown in messages. A definition with an ``error`` is reported
    as failed; the versions already serving keep serving.
    """

    name: str
    versions: Mapping[str, Path]
    settings: ModelSettings = ModelSettings()
    origin: str = ""
    #: why the model cannot be served as it stands (a bad model.toml); its versions are then empty
    error: str = ""


#: Resolves a model URI to the models it stands for, called as ``registry(uri, config)`` at start-up
#: and, with ``--model-control poll``, on every poll (on a worker thread, never the event loop).
#: Raise :class:`servecore.errors.ModelLoadError` when the URI cannot be resolved.
ModelRegistry = Callable[[str, "ServeConfig"], "list[ModelDefinition]"]


@dataclass(frozen=True, slots=True)
class ModelEvent:
    """A model version changed state: ``loading``, ``warming``, ``ready``, ``draining``, ``unloaded``
    or ``failed``."""

    model: str
    version: str
    state: str
    reason: str = ""
    backend: str = ""


@runtime_checkable
class Backend(Protocol):
    """A loaded model version, ready to execute whole batches.

    ``infer`` runs on a worker thread, never on the event loop; it receives arrays already
    validated against ``inputs`` and returns a dict holding at least the requested outputs.
    """

    #: backend name, e.g. ``onnxruntime``
    name: str
    #: V2 platform string, e.g. ``onnxruntime_onnx``
    platform: str
    inputs: Sequence[TensorSpec]
    outputs: Sequence[TensorSpec]
    #: largest batch the model takes along its first dimension; 0 if it has no batch dimension
    max_batch_size: int
    #: free-form facts shown in model metadata ``properties`` (providers, opset, sha256, ...)
    properties: Mapping[str, str]

    def infer(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]) -> Mapping[str, np.ndarray]: ...

    def close(self) -> None: ...


#: Builds a :class:`Backend` for a model source; may raise :class:`servecore.errors.ModelLoadError`.
BackendLoader = Callable[["ModelSource", "ServeConfig"], Backend]


@dataclass(frozen=True, slots=True)
class BackendRegistration:
    """A backend plugin's entry: which files it takes and how it loads them."""

    name: str
    loader: BackendLoader
    suffixes: tuple[str, ...]
    priority: int = 0


class Authenticator(Protocol):
    """Identifies the caller of a request from its headers (lower-case names).

    Return a :class:`Principal`, None when the request carries nothing this authenticator
    understands, or raise :class:`servecore.errors.AuthenticationError` for bad credentials.
    """

    def __call__(self, headers: Mapping[str, str]) -> Principal | None: ...
