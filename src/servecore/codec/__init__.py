"""The protocol's hot loops, compiled or pure-Python.

:func:`load_codec` picks the implementation once per server: the compiled
:mod:`servecore._native.codec` unless *pure_python* is set (``SERVECORE_PURE_PYTHON=1``) or the
extension was not built, else the twin in :mod:`servecore.codec.reference`. Both raise the same
errors from :mod:`servecore.errors`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np

Implementation = Literal["native", "python"]


@dataclass(frozen=True, slots=True)
class Codec:
    """One implementation of the codec functions (see :mod:`servecore.codec.reference`)."""

    implementation: Implementation
    json_to_array: Callable[[object, str, int, str], np.ndarray]
    decode_bytes: Callable[[bytes | memoryview, int, str], np.ndarray]
    encode_bytes: Callable[[np.ndarray], bytes]


def pure_python_requested(environ: dict[str, str] | None = None) -> bool:
    """Whether ``SERVECORE_PURE_PYTHON`` asks for the pure-Python twins."""
    value = (os.environ if environ is None else environ).get("SERVECORE_PURE_PYTHON", "")
    return value.strip().lower() not in ("", "0", "false", "no", "off")


def load_codec(*, pure_python: bool | None = None) -> Codec:
    """The compiled codec, or its pure-Python twin when asked for or not built.

    :param pure_python: force the twin (True) or prefer the compiled core (False); None reads
        ``SERVECORE_PURE_PYTHON`` from the environment.
    """
    if pure_python is None:
        pure_python = pure_python_requested()
    if not pure_python:
        try:
            from servecore._native import codec as native
        except ImportError:
            pass
        else:
            return Codec("native", native.json_to_array, native.decode_bytes, native.encode_bytes)
    from servecore.codec import reference

    return Codec("python", reference.json_to_array, reference.decode_bytes, reference.encode_bytes)
