"""The values that cross layers: tensors, requests, responses, and the plugin-facing protocols.

Nothing here imports a web framework or a backend library.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from servecore.config import ServeConfig

#: Request-level or tensor-level parameters (protocol.md section 4.3): str, int, float or bool values.
Parameters = dict[str, Any]


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A model input or output: V2 datatype and shape, ``-1`` for a dimension of any size."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def as_metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


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
class ModelSource:
    """Where a model version comes from: handed to a backend's loader."""

    name: str
    version: str
    path: Path


@dataclass(frozen=True, slots=True)
class ModelEvent:
    """A model version changed state: ``loading``, ``ready``, ``failed`` or ``unloaded``."""

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
