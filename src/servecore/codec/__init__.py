"""The protocol's hot loops, compiled or pure-Python.

:func:`load_codec` picks the implementation once per server: the compiled
:mod:`servecore._native.codec` unless *pure_python* is set (``SERVECORE_PURE_PYTHON=1``) or the
extension was not built, else the twin in :mod:`servecore.codec.reference`. Both raise the same
errors from :mod:`servecore.errors`.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
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
    #: a JSON request's numeric tensor data read straight into arrays (:mod:`servecore.codec.jsondata`);
    #: None without the compiled core: orjson alone is faster than any Python scanner, and the
    #: pure-Python twin is the specification the compiled one is tested against
    cut_json_data: Callable[[bytes | memoryview], tuple[bytes, dict[int, tuple[str, np.ndarray]]] | None] | None


def pure_python_requested(environ: dict[str, str] | None = None) -> bool:
    """Whether ``SERVECORE_PURE_PYTHON`` asks for the pure-Python twins."""
    value = (os.environ if environ is None else environ).get("SERVECORE_PURE_PYTHON", "")
    return value.strip().lower() not in ("", "0", "false", "no", "off")


def native_modules(*names: str, pure_python: bool | None) -> tuple[ModuleType, ...] | None:
    """The compiled modules ``servecore._native.<name>``, or None when the pure-Python twins are
    asked for (*pure_python* True, or None and ``SERVECORE_PURE_PYTHON`` set) or one is not built."""
    if pure_python is None:
        pure_python = pure_python_requested()
    if pure_python:
        return None
    try:
        return tuple(importlib.import_module(f"servecore._native.{name}") for name in names)
    except ImportError:
        return None


def load_codec(*, pure_python: bool | None = None) -> Codec:
    """The compiled codec, or its pure-Python twin when asked for or not built.

    :param pure_python: force the twin (True) or prefer the compiled core (False); None reads
        ``SERVECORE_PURE_PYTHON`` from the environment.
    """
    native = native_modules("codec", "jsondata", pure_python=pure_python)
    if native is not None:
        codec, jsondata = native
        return Codec("native", codec.json_to_array, codec.decode_bytes, codec.encode_bytes, jsondata.cut_json_data)
    from servecore.codec import reference

    return Codec("python", reference.json_to_array, reference.decode_bytes, reference.encode_bytes, None)
