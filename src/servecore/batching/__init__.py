"""Dynamic batching: the batch policy and the input gather / output scatter, compiled or pure-Python.

:func:`load_batching` picks the implementation once per server, like :func:`servecore.codec.load_codec`:
the compiled :mod:`servecore._native.batching` and :mod:`servecore._native.gather` unless
*pure_python* is set (``SERVECORE_PURE_PYTHON=1``) or they were not built, else the twins in
:mod:`servecore.batching.policy` and :mod:`servecore.batching.gather`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from servecore.codec import Implementation, native_modules


@dataclass(frozen=True, slots=True)
class BatchingCore:
    """One implementation of the batch policy and of gather/scatter."""

    implementation: Implementation
    #: the policy class: ``BatchPolicy(settings)`` (see :class:`servecore.batching.policy.BatchPolicyPy`)
    BatchPolicy: Callable[..., Any]
    #: ``gather(arrays, out, pad_value=0)`` (see :func:`servecore.batching.gather.gather`)
    gather: Callable[..., None]
    #: ``scatter(array, rows, tails=None)`` (see :func:`servecore.batching.gather.scatter`)
    scatter: Callable[..., list[Any]]


def load_batching(*, pure_python: bool | None = None) -> BatchingCore:
    """The compiled batching core, or its pure-Python twin when asked for or not built."""
    native = native_modules("batching", "gather", pure_python=pure_python)
    if native is not None:
        native_policy, native_gather = native
        return BatchingCore("native", native_policy.BatchPolicy, native_gather.gather, native_gather.scatter)
    from servecore.batching import gather, policy

    return BatchingCore("python", policy.BatchPolicyPy, gather.gather, gather.scatter)
