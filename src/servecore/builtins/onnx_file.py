"""Read the header facts of an ONNX file (IR version, opsets) without the ``onnx`` package.

An ONNX file is a protobuf ``ModelProto``; its top-level fields are read one by one and large
ones (the graph) are skipped with a seek, so a multi-gigabyte model costs a few reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_IR_VERSION, _OPSET_IMPORT = 1, 8


class OnnxFileError(ValueError):
    """The file is not a readable ONNX protobuf."""


@dataclass
class OnnxHeader:
    ir_version: int = 0
    #: opset version by domain; the default domain is ``""`` (``ai.onnx``)
    opsets: dict[str, int] = field(default_factory=dict)


def _varint(read: BinaryIO) -> int:
    shift = result = 0
    while True:
        byte = read.read(1)
        if not byte:
            raise OnnxFileError("truncated varint")
        result |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return result
        shift += 7
        if shift > 63:
            raise OnnxFileError("varint too long")


def _varint_bytes(data: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if pos >= len(data):
            raise OnnxFileError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _opset(data: bytes) -> tuple[str, int]:
    """Decode an ``OperatorSetIdProto`` (domain = 1, version = 2)."""
    pos, domain, version = 0, "", 0
    while pos < len(data):
        key, pos = _varint_bytes(data, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _varint_bytes(data, pos)
            if number == 2:
                version = value
        elif wire == _LEN:
            size, pos = _varint_bytes(data, pos)
            if number == 1:
                domain = data[pos : pos + size].decode("utf-8", "replace")
            pos += size
        elif wire == _I64:
            pos += 8
        elif wire == _I32:
            pos += 4
        else:
            raise OnnxFileError(f"unexpected wire type {wire}")
    return domain, version


def read_header(path: Path) -> OnnxHeader:
    """IR version and opset imports of the ONNX file at *path*."""
    header = OnnxHeader()
    size = path.stat().st_size
    with path.open("rb") as handle:
        while handle.tell() < size:
            key = _varint(handle)
            number, wire = key >> 3, key & 7
            if wire == _VARINT:
                value = _varint(handle)
                if number == _IR_VERSION:
                    header.ir_version = value
            elif wire == _LEN:
                length = _varint(handle)
                if number == _OPSET_IMPORT:
                    domain, version = _opset(handle.read(length))
                    header.opsets[domain or "ai.onnx"] = version
                else:
                    handle.seek(length, 1)
            elif wire == _I64:
                handle.seek(8, 1)
            elif wire == _I32:
                handle.seek(4, 1)
            else:
                raise OnnxFileError(f"{path} is not an ONNX model (wire type {wire})")
    return header
