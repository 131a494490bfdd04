"""Time the codec on typical request shapes: compiled core vs pure-Python twin vs plain numpy.

Run after building the extension in place::

    python setup.py build_ext --inplace
    PYTHONPATH=src python benchmarks/bench_codec.py [--repeat 7] [--min-time 0.2]

For each case it prints the best time per call (µs) of the pure-Python reference, the compiled
module and, for JSON data, the naive ``np.array(data, dtype=...)`` baseline, which checks nothing
(element types, ranges, depth, count): the gap between it and the compiled column is what the
validation costs. ``speed-up`` is python / native.

A second table times whole JSON request bodies through ``v2.parse_request`` with the compiled
codec, with and without ``cut_json_data`` (numeric data read straight into arrays, orjson on the
rest) against orjson on the whole body followed by ``json_to_array``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import timeit
from dataclasses import dataclass
from typing import Callable

import numpy as np

from servecore.codec import load_codec, reference
from servecore.datatypes import NUMPY_DTYPES
from servecore.http import v2

try:
    from servecore._native import codec as native
except ImportError:  # pragma: no cover - the point of the script is the comparison
    sys.exit("servecore._native.codec is not built: run `python setup.py build_ext --inplace`")


@dataclass(frozen=True)
class Case:
    """One row of the table: the same call through each implementation."""

    label: str
    python: Callable[[], object]
    native: Callable[[], object]
    baseline: Callable[[], object] | None = None


def _json_case(label: str, data: object, datatype: str, count: int) -> Case:
    dtype = NUMPY_DTYPES[datatype]
    expected = reference.json_to_array(data, datatype, count, "x")
    got = native.json_to_array(data, datatype, count, "x")
    assert got.dtype == expected.dtype and np.array_equal(got, expected), label
    return Case(
        label,
        lambda: reference.json_to_array(data, datatype, count, "x"),
        lambda: native.json_to_array(data, datatype, count, "x"),
        lambda: np.array(data, dtype=dtype).reshape(-1),
    )


def _cases() -> list[Case]:
    rng = random.Random(0)
    floats64 = [rng.uniform(-1.0, 1.0) for _ in range(64)]
    floats4k = [rng.uniform(-1.0, 1.0) for _ in range(4096)]
    token_ids = [rng.randrange(50_000) for _ in range(1000)]
    ints1k = [rng.randrange(-(2**62), 2**62) for _ in range(1000)]
    strings = [f"item-{i}-{rng.randrange(10**6)}" for i in range(1000)]
    array = np.array([s.encode() for s in strings], dtype=object)
    blob = reference.encode_bytes(array)
    assert native.encode_bytes(array) == blob
    assert native.decode_bytes(blob, 1000, "x").tolist() == array.tolist()
    return [
        _json_case("FP32 flat [64]", floats64, "FP32", 64),
        _json_case("FP32 nested [1][64]", [floats64], "FP32", 64),
        _json_case("FP32 flat [4096]", floats4k, "FP32", 4096),
        _json_case("FP64 flat [4096]", floats4k, "FP64", 4096),
        _json_case("INT64 [1000] token ids", token_ids, "INT64", 1000),
        _json_case("INT64 [1000] ±2**62", ints1k, "INT64", 1000),
        _json_case("BYTES json [1000 str]", strings, "BYTES", 1000),
        Case(
            "BYTES decode [1000]",
            lambda: reference.decode_bytes(blob, 1000, "x"),
            lambda: native.decode_bytes(blob, 1000, "x"),
        ),
        Case(
            "BYTES encode [1000]",
            lambda: reference.encode_bytes(array),
            lambda: native.encode_bytes(array),
        ),
    ]


def _bodies() -> list[tuple[str, bytes]]:
    """JSON request bodies as clients send them (json.dumps of Python lists)."""
    rng = np.random.default_rng(0)

    def request(datatype: str, shape: list[int], data: list[object]) -> bytes:
        doc = {"inputs": [{"name": "x", "shape": shape, "datatype": datatype, "data": data}]}
        return json.dumps(doc).encode()

    normal = rng.standard_normal(8 * 4096)
    return [
        ("FP32 [1,512] float32 values", request("FP32", [1, 512], normal[:512].astype(np.float32).tolist())),
        ("FP32 [1,64] 2 decimals", request("FP32", [1, 64], [round(float(v), 2) for v in normal[:64]])),
        ("FP32 [8,4096] float32", request("FP32", [8, 4096], normal.astype(np.float32).tolist())),
        ("FP64 [1,4096]", request("FP64", [1, 4096], normal[:4096].tolist())),
        ("INT64 [1,1000] token ids", request("INT64", [1, 1000], rng.integers(0, 50_000, 1000).tolist())),
    ]


def _bodies_table(repeat: int, min_time: float) -> None:
    codec = load_codec(pure_python=False)
    if codec.cut_json_data is None:
        print("\n(servecore._native.jsondata is not built: no body table)")
        return
    plain = dataclasses.replace(codec, cut_json_data=None)
    header = f"{'JSON body':<30}{'bytes':>8}{'orjson µs':>11}{'cut µs':>9}{'speed-up':>10}"
    print("\n" + header)
    print("-" * len(header))
    for label, raw in _bodies():
        with_cut = v2.parse_request(raw, None, model_name="m", model_version=None, codec=codec)
        without = v2.parse_request(raw, None, model_name="m", model_version=None, codec=plain)
        assert with_cut.inputs[0].data.tobytes() == without.inputs[0].data.tobytes(), label
        old = _best_us(lambda: v2.parse_request(raw, None, model_name="m", model_version=None, codec=plain), repeat, min_time)
        new = _best_us(lambda: v2.parse_request(raw, None, model_name="m", model_version=None, codec=codec), repeat, min_time)
        print(f"{label:<30}{len(raw):>8}{old:>11.2f}{new:>9.2f}{old / new:>9.1f}x")
    print("\nv2.parse_request, compiled codec: orjson.loads + json_to_array, against cut_json_data + orjson on the rest.")


def _best_us(fn: Callable[[], object], repeat: int, min_time: float) -> float:
    """Best of *repeat* timings of a loop of at least *min_time* seconds, in µs per call."""
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    per_loop = max(1, int(number * min_time / 0.2))
    return min(timer.repeat(repeat=repeat, number=per_loop)) / per_loop * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="timings per cell (best is kept)")
    parser.add_argument("--min-time", type=float, default=0.2, help="seconds per timing")
    args = parser.parse_args(argv)

    header = f"{'case':<24}{'python µs':>12}{'native µs':>12}{'np.array µs':>13}{'speed-up':>10}"
    print(header)
    print("-" * len(header))
    for case in _cases():
        py = _best_us(case.python, args.repeat, args.min_time)
        c = _best_us(case.native, args.repeat, args.min_time)
        base = (
            f"{_best_us(case.baseline, args.repeat, args.min_time):>13.2f}"
            if case.baseline is not None
            else f"{'-':>13}"
        )
        print(f"{case.label:<24}{py:>12.2f}{c:>12.2f}{base}{py / c:>9.1f}x")
    print(
        "\nnp.array: np.array(data, dtype=...), which checks nothing (for BYTES it keeps the str"
        "\nobjects, without UTF-8 encoding). Best of --repeat timings; speed-up = python / native."
    )
    _bodies_table(args.repeat, args.min_time)


if __name__ == "__main__":
    main()
