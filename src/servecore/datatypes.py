"""The V2 datatypes and their numpy and model-config equivalents.

One table, read by the codec, the backends and the metadata endpoints.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from servecore.errors import InvalidInputError

#: V2 datatype -> numpy dtype. BYTES is an object array of ``bytes``; BF16 is held as its raw
#: 16-bit patterns (the upper two bytes of a float32), exactly as it travels on the wire.
NUMPY_DTYPES: Final[dict[str, np.dtype]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
    "BF16": np.dtype(np.uint16),
}

#: Bytes per element on the wire (binary extension); BYTES is variable.
WIRE_ITEMSIZE: Final[dict[str, int]] = {
    name: dt.itemsize for name, dt in NUMPY_DTYPES.items() if name != "BYTES"
}

_DTYPE_TO_V2: Final[dict[np.dtype, str]] = {
    dt: name for name, dt in NUMPY_DTYPES.items() if name not in ("BF16", "BYTES")
}


def v2_datatype(dtype: np.dtype) -> str:
    """The V2 datatype of a numpy array's dtype (object and string arrays are BYTES)."""
    if dtype.kind in "OSU":
        return "BYTES"
    try:
        return _DTYPE_TO_V2[dtype]
    except KeyError:
        raise InvalidInputError(f"numpy dtype {dtype} has no V2 datatype") from None


def config_datatype(datatype: str) -> str:
    """The Triton model-config name of a V2 datatype (``TYPE_FP32``; BYTES is ``TYPE_STRING``)."""
    if not datatype:  # an open input (see TensorSpec)
        return "TYPE_INVALID"
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


def bf16_to_float32(bits: np.ndarray) -> np.ndarray:
    """Widen raw BF16 patterns (uint16) to float32 values."""
    return (bits.astype(np.uint32) << 16).view(np.float32)
