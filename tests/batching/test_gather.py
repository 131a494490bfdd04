"""Gather/scatter of batch tensors: the compiled twin (``servecore._native.gather``) and its spec.

Unit tests run on both implementations (the ``impl`` fixture, ids ``py`` and ``c``) and state the
expected results; the hypothesis tests feed the same random batches to both and require identical
outcomes (the same bytes in ``out``, or the same exception type and message), and that
``scatter`` undoes ``gather`` exactly.
"""

from __future__ import annotations

import re
import sys
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from servecore.batching import gather as reference
from servecore.batching import load_batching

try:
    from servecore._native import gather as native
except ImportError:  # not built: the "c" cases are skipped
    native = None  # type: ignore[assignment]

needs_native = pytest.mark.skipif(native is None, reason="servecore._native.gather is not built")


@pytest.fixture(
    params=[pytest.param(reference, id="py"), pytest.param(native, id="c", marks=needs_native)]
)
def impl(request: pytest.FixtureRequest) -> ModuleType:
    """Each implementation of gather/scatter in turn."""
    return request.param


#: Every numeric dtype a V2 tensor can have (BF16 travels as uint16), and BOOL.
NUMERIC = [
    np.int8, np.int16, np.int32, np.int64,
    np.uint8, np.uint16, np.uint32, np.uint64,
    np.float16, np.float32, np.float64,
]
ALL_DTYPES = [*NUMERIC, np.bool_]


def msg(text: str) -> str:
    """An exact-match pattern for ``pytest.raises(match=...)``."""
    return "^" + re.escape(text) + "$"


def sample(shape: tuple[int, ...], dtype: Any, start: int = 1) -> np.ndarray:
    """Distinct small values (0/1 for bool) of *dtype*."""
    n = int(np.prod(shape))
    values = np.arange(start, start + n) % (2 if dtype is np.bool_ else 100)
    return values.astype(dtype).reshape(shape)


def same_bytes(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


# --------------------------------------------------------------------------------------------
# gather: results


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=lambda d: np.dtype(d).name)
def test_unpadded_rows_follow_each_other(impl: ModuleType, dtype: Any) -> None:
    arrays = [sample((1, 4), dtype, 1), sample((3, 4), dtype, 5), sample((2, 4), dtype, 17)]
    out = np.empty((6, 4), dtype=dtype)
    assert impl.gather(arrays, out) is None
    assert same_bytes(out, np.concatenate(arrays))


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=lambda d: np.dtype(d).name)
def test_padding_in_the_last_dimension(impl: ModuleType, dtype: Any) -> None:
    pad = True if dtype is np.bool_ else 7
    a, b = sample((1, 2), dtype, 1), sample((2, 3), dtype, 3)
    out = np.empty((3, 3), dtype=dtype)
    impl.gather([a, b], out, pad_value=pad)
    expected = np.full((3, 3), pad, dtype=dtype)
    expected[:1, :2] = a
    expected[1:, :3] = b
    assert same_bytes(out, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.uint8, np.bool_])
def test_padding_in_several_trailing_dimensions(impl: ModuleType, dtype: Any) -> None:
    arrays = [
        sample((2, 1, 3, 2), dtype, 1),  # padded in dims 1 and 2, dim 3 equal
        sample((1, 3, 1, 4), dtype, 20),  # padded in dims 2 only... and 1 equal
        sample((1, 2, 4, 1), dtype, 40),  # padded in dims 1 and 3
        sample((1, 3, 4, 4), dtype, 60),  # not padded
        sample((1, 0, 4, 4), dtype, 0),  # nothing but padding
    ]
    out = np.empty((6, 3, 4, 4), dtype=dtype)
    impl.gather(arrays, out, pad_value=1)
    expected = np.ones((6, 3, 4, 4), dtype=dtype)
    row = 0
    for a in arrays:
        expected[(slice(row, row + a.shape[0]), *(slice(0, d) for d in a.shape[1:]))] = a
        row += a.shape[0]
    assert same_bytes(out, expected)


def test_zero_pad_is_the_default(impl: ModuleType) -> None:
    out = np.full((2, 3), 9, dtype=np.int32)
    impl.gather([np.ones((1, 1), np.int32), np.ones((1, 3), np.int32)], out)
    assert out.tolist() == [[1, 0, 0], [1, 1, 1]]


def test_pad_value_is_converted_like_numpy_assignment(impl: ModuleType) -> None:
    out = np.empty((1, 3), dtype=np.int16)
    impl.gather([np.ones((1, 1), np.int16)], out, pad_value=2.75)
    assert out.tolist() == [[1, 2, 2]]
    flags = np.empty((1, 2), dtype=np.bool_)
    impl.gather([np.zeros((1, 1), np.bool_)], flags, pad_value=5)
    assert flags.tolist() == [[False, True]]


def test_fp16_values_and_pad_are_copied_bit_for_bit(impl: ModuleType) -> None:
    special = np.array([[np.nan, -0.0, np.inf, -np.inf, 6.1e-5, 65504.0]], dtype=np.float16)
    payload = np.array([[0x7E01, 0x8001]], dtype=np.uint16).view(np.float16)  # NaN payload
    out = np.empty((2, 6), dtype=np.float16)
    impl.gather([special, payload], out, pad_value=-0.0)
    assert out[0].tobytes() == special.tobytes()
    assert out[1, :2].tobytes() == payload.tobytes()
    assert out[1, 2:].view(np.uint16).tolist() == [0x8000] * 4  # -0.0, not 0.0


def test_fp32_nan_pad(impl: ModuleType) -> None:
    out = np.empty((1, 2), dtype=np.float32)
    impl.gather([np.ones((1, 1), np.float32)], out, pad_value=float("nan"))
    assert out[0, 0] == 1.0 and np.isnan(out[0, 1])


def test_bytes_objects_are_copied_as_references(impl: ModuleType) -> None:
    values = [bytes([i]) * (i + 1) for i in range(5)] + ["text"]  # fresh objects, none immortal
    a = np.array([values[:2]], dtype=object)
    b = np.array([values[2:4], values[4:]], dtype=object)
    out = np.empty((3, 2), dtype=object)  # filled with None
    before = [sys.getrefcount(v) for v in values]
    impl.gather([a, b], out, pad_value=0)
    after = [sys.getrefcount(v) for v in values]
    assert [n - m for n, m in zip(after, before)] == [1] * 6  # one more: out's slot
    assert all(got is want for got, want in zip(out.ravel(), values))


def test_overwritten_objects_are_released(impl: ModuleType) -> None:
    class Token:
        pass

    old = [Token(), Token()]
    out = np.array([[old[0]], [old[1]]], dtype=object)
    base = [sys.getrefcount(t) for t in old]
    impl.gather([np.array([[b"x"], [b"y"]], dtype=object)], out)
    assert [sys.getrefcount(t) for t in old] == [n - 1 for n in base]
    assert out.tolist() == [[b"x"], [b"y"]]


def test_structured_dtype_with_objects(impl: ModuleType) -> None:
    dt = np.dtype([("id", np.int32), ("tag", object)])
    a = np.array([(1, "a"), (2, "b")], dtype=dt)
    b = np.array([(3, "c")], dtype=dt)
    out = np.zeros(3, dtype=dt)
    impl.gather([a, b], out)
    assert out.tolist() == [(1, "a"), (2, "b"), (3, "c")]


def test_zero_row_arrays_and_empty_batches(impl: ModuleType) -> None:
    out = np.empty((2, 3), dtype=np.float32)
    empty = np.empty((0, 3), np.float32)
    impl.gather([empty, np.ones((1, 3), np.float32), np.empty((0, 1), np.float32),
                 np.full((1, 2), 2, np.float32)], out, pad_value=-1)
    assert out.tolist() == [[1, 1, 1], [2, 2, -1]]
    nothing = np.empty((0, 3), np.float32)
    impl.gather([], nothing)
    impl.gather([empty], nothing)


def test_zero_sized_trailing_dimensions(impl: ModuleType) -> None:
    out = np.empty((3, 0), dtype=np.int64)
    impl.gather([np.empty((1, 0), np.int64), np.empty((2, 0), np.int64)], out)
    out2 = np.empty((2, 2, 0), dtype=np.int8)
    impl.gather([np.empty((2, 1, 0), np.int8)], out2, pad_value=3)


def test_one_dimensional_arrays(impl: ModuleType) -> None:
    out = np.empty(5, dtype=np.uint32)
    impl.gather([np.array([1, 2], np.uint32), np.array([3, 4, 5], np.uint32)], out)
    assert out.tolist() == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda x: np.asfortranarray(x), id="fortran"),
        pytest.param(lambda x: x[::-1], id="reversed-rows"),
        pytest.param(lambda x: x[:, ::-1], id="reversed-columns"),
        pytest.param(lambda x: np.repeat(x, 2, axis=1)[:, ::2], id="strided"),
        pytest.param(lambda x: np.broadcast_to(x[:1], x.shape), id="broadcast"),
    ],
)
def test_non_contiguous_inputs(impl: ModuleType, make: Any) -> None:
    x = sample((3, 4), np.float64, 1)
    y = make(x)
    assert not y.flags.c_contiguous
    out = np.empty((5, 5), dtype=np.float64)
    impl.gather([y, make(x[:2, :3].copy())], out, pad_value=-1.5)
    expected = np.full((5, 5), -1.5)
    expected[:3, :4] = y
    expected[3:, :3] = make(x[:2, :3].copy())
    assert same_bytes(out, expected)


def test_arrays_may_be_any_iterable(impl: ModuleType) -> None:
    out = np.empty((2, 1), dtype=np.int8)
    impl.gather((np.full((1, 1), i, np.int8) for i in range(2)), out)
    assert out.tolist() == [[0], [1]]


def test_equivalent_dtype_objects_match(impl: ModuleType) -> None:
    out = np.empty((1, 2), dtype=np.dtype("=f4"))
    impl.gather([np.ones((1, 2), dtype=np.dtype("<f4").newbyteorder("=") )], out)
    assert out.tolist() == [[1.0, 1.0]]


# --------------------------------------------------------------------------------------------
# gather: errors (out is left untouched)


def expect_error(impl: ModuleType, arrays: Any, out: Any, error: type, text: str, **kw: Any) -> None:
    before = out.copy() if isinstance(out, np.ndarray) else None
    with pytest.raises(error, match=msg(text)):
        impl.gather(arrays, out, **kw)
    if before is not None:
        assert same_bytes(out, before)


def test_dtype_mismatch(impl: ModuleType) -> None:
    out = np.zeros((2, 2), np.float32)
    expect_error(
        impl, [np.ones((1, 2), np.float32), np.ones((1, 2), np.float64)], out, ValueError,
        "arrays[1] has dtype float64, but out has dtype float32",
    )


def test_rank_mismatch(impl: ModuleType) -> None:
    out = np.zeros((2, 2), np.int32)
    expect_error(
        impl, [np.ones((2,), np.int32)], out, ValueError,
        "arrays[0] has 1 dimensions (shape (2,)), but out has 2 (shape (2, 2))",
    )


def test_tail_larger_than_out(impl: ModuleType) -> None:
    out = np.zeros((2, 2, 3), np.int32)
    expect_error(
        impl, [np.ones((1, 2, 3), np.int32), np.ones((1, 1, 4), np.int32)], out, ValueError,
        "arrays[1] has trailing dimensions (1, 4), larger than out's (2, 3)",
    )


def test_rows_mismatch(impl: ModuleType) -> None:
    out = np.zeros((4, 2), np.int32)
    expect_error(
        impl, [np.ones((1, 2), np.int32), np.ones((2, 1), np.int32)], out, ValueError,
        "the arrays hold 3 rows in all, but out has 4",
    )


def test_object_arrays_cannot_be_padded(impl: ModuleType) -> None:
    out = np.full((2, 2), None, dtype=object)
    expect_error(
        impl, [np.array([[b"a", b"b"]], object), np.array([[b"c"]], object)], out, ValueError,
        "arrays[1] holds Python objects (BYTES) and cannot be padded: its trailing dimensions "
        "(1,) must equal out's (2,)",
    )


def test_not_arrays(impl: ModuleType) -> None:
    expect_error(impl, [], [[1.0]], TypeError, "out must be a numpy array, not list")
    out = np.zeros((1, 1), np.float64)
    expect_error(
        impl, [[[1.0]]], out, TypeError, "arrays[0] must be a numpy array, not list"
    )


def test_unusable_out(impl: ModuleType) -> None:
    expect_error(
        impl, [], np.zeros((), np.int8), ValueError,
        "out must have at least one dimension (the batch rows)",
    )
    expect_error(impl, [], np.zeros((2, 2), np.int8).T, ValueError, "out must be C-contiguous")
    frozen = np.zeros((1, 2), np.int8)
    frozen.flags.writeable = False
    expect_error(impl, [np.ones((1, 2), np.int8)], frozen, ValueError, "out is read-only")


def test_pad_value_that_does_not_fit(impl: ModuleType) -> None:
    out = np.zeros((1, 2), np.uint8)
    with pytest.raises(ValueError, match=r"^pad_value -1 cannot be stored as uint8: ") as info:
        impl.gather([np.ones((1, 1), np.uint8)], out, pad_value=-1)
    assert isinstance(info.value.__cause__, OverflowError)
    assert out.tolist() == [[0, 0]]
    with pytest.raises(ValueError, match=r"^pad_value nan cannot be stored as int32: "):
        impl.gather([np.ones((1, 1), np.int32)], np.zeros((1, 2), np.int32), float("nan"))


def test_pad_value_unused_without_padding(impl: ModuleType) -> None:
    out = np.zeros((1, 2), np.uint8)
    impl.gather([np.ones((1, 2), np.uint8)], out, pad_value=-1)
    assert out.tolist() == [[1, 1]]


def test_first_error_wins(impl: ModuleType) -> None:
    out = np.zeros((9, 2), np.int32)
    arrays = [np.ones((1, 3), np.int32), np.ones((1, 2), np.int64)]
    expect_error(impl, arrays, out, ValueError,
                 "arrays[0] has trailing dimensions (3,), larger than out's (2,)")


# --------------------------------------------------------------------------------------------
# scatter


def test_scatter_splits_into_views(impl: ModuleType) -> None:
    batch = np.arange(12, dtype=np.float32).reshape(4, 3)
    pieces = impl.scatter(batch, [1, 0, 3])
    assert [p.shape for p in pieces] == [(1, 3), (0, 3), (3, 3)]
    assert pieces[0].tolist() == [[0, 1, 2]]
    assert pieces[2].tolist() == [[3, 4, 5], [6, 7, 8], [9, 10, 11]]
    for p in (pieces[0], pieces[2]):
        assert np.shares_memory(p, batch)
        assert p.dtype == batch.dtype


def test_scatter_undoes_padding(impl: ModuleType) -> None:
    batch = np.arange(24, dtype=np.int64).reshape(3, 2, 4)
    pieces = impl.scatter(batch, [2, 1], [(1, 3), (2, 4)])
    assert pieces[0].tolist() == [[[0, 1, 2]], [[8, 9, 10]]]
    assert pieces[1].tolist() == batch[2:].tolist()
    assert all(np.shares_memory(p, batch) for p in pieces)


def test_scatter_accepts_integer_like_values(impl: ModuleType) -> None:
    batch = np.zeros((3, 2))
    pieces = impl.scatter(batch, (np.int64(2), np.uint8(1)), [(np.int32(1),), [2]])
    assert [p.shape for p in pieces] == [(2, 1), (1, 2)]
    assert impl.scatter(np.zeros((0, 5)), []) == []


def test_scatter_errors(impl: ModuleType) -> None:
    batch = np.zeros((3, 2))
    cases: list[tuple[Any, Any, Any, type, str]] = [
        ([[1.0]], [1], None, TypeError, "array must be a numpy array, not list"),
        (np.float64(1.0), [1], None, TypeError, "array must be a numpy array, not float64"),
        (np.zeros(()), [], None, ValueError, "array must have at least one dimension (the batch rows)"),
        (batch, [2, -1, 2], None, ValueError, "rows[1] is -1; row counts must not be negative"),
        (batch, [2, 2], None, ValueError, "rows add up to 4, but the array has 3"),
        (batch, [3], [(2,), (2,)], ValueError, "2 tails given for 1 row counts"),
        (batch, [1, 2], [(2,), (3,)], ValueError,
         "tails[1] is (3,); it must have 1 dimensions, each from 0 to the array's (2,)"),
        (batch, [1, 2], [(2,), (1, 1)], ValueError,
         "tails[1] is (1, 1); it must have 1 dimensions, each from 0 to the array's (2,)"),
        (batch, [3], [(-1,)], ValueError,
         "tails[0] is (-1,); it must have 1 dimensions, each from 0 to the array's (2,)"),
    ]
    for array, rows, tails, error, text in cases:
        with pytest.raises(error, match=msg(text)):
            impl.scatter(array, rows, tails)
    with pytest.raises(TypeError):
        impl.scatter(batch, [1.5, 1.5])
    with pytest.raises(TypeError):
        impl.scatter(batch, [3], [(1.0,)])


def test_load_batching_carries_scatter() -> None:
    core = load_batching(pure_python=True)
    assert core.gather is reference.gather and core.scatter is reference.scatter


# --------------------------------------------------------------------------------------------
# parity (hypothesis): same bytes or same exception, and scatter(gather(x)) == x

DTYPES = [np.dtype(d) for d in ALL_DTYPES] + [np.dtype(object), np.dtype(">i4")]
PADS = [0, 1, -1, 7, 300, 0.5, -0.0, float("nan"), True, False]


def random_array(rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    n = int(np.prod(shape))
    if dtype == object:
        flat = np.empty(n, dtype=object)
        flat[:] = [bytes(rng.integers(0, 256, rng.integers(0, 4)).astype(np.uint8)) for _ in range(n)]
        return flat.reshape(shape)
    if dtype == np.bool_:
        return rng.integers(0, 2, n).astype(np.bool_).reshape(shape)
    raw = rng.integers(0, 256, n * dtype.itemsize, dtype=np.uint8)
    return raw.view(dtype).reshape(shape)


def relayout(rng: np.random.Generator, a: np.ndarray, how: int) -> np.ndarray:
    """The same values as *a* in another memory layout."""
    if how == 1:
        return np.asfortranarray(a)
    if how == 2 and a.ndim:  # a strided view of a bigger array
        big = np.empty((a.shape[0] * 2, *a.shape[1:]), dtype=a.dtype)
        big[::2] = a
        return big[::2]
    if how == 3:  # rows reversed twice: a negative-stride view with a's values
        return a[::-1].copy()[::-1]
    return a


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[Any], np.ndarray, Any, list[int], list[tuple[int, ...]]]:
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    dtype = draw(st.sampled_from(DTYPES))
    ndim = draw(st.integers(1, 4))
    out_tail = tuple(draw(st.lists(st.integers(0, 4), min_size=ndim - 1, max_size=ndim - 1)))
    pad_all = dtype == object and draw(st.booleans())  # mostly unpadded object arrays
    n = draw(st.integers(0, 5))
    arrays: list[Any] = []
    rows: list[int] = []
    tails: list[tuple[int, ...]] = []
    for _ in range(n):
        r = draw(st.integers(0, 3))
        if dtype == object and not pad_all:
            tail = out_tail
        else:
            tail = tuple(draw(st.integers(0, d)) for d in out_tail)
        a = random_array(rng, (r, *tail), dtype)
        arrays.append(relayout(rng, a, draw(st.integers(0, 3))))
        rows.append(r)
        tails.append(tail)
    out_rows = sum(rows)
    # Now and then, something wrong.
    fault = draw(st.sampled_from(["none"] * 6 + ["dtype", "rank", "large", "rows", "type", "out"]))
    if fault == "dtype" and arrays:
        i = draw(st.integers(0, len(arrays) - 1))
        other = np.float64 if dtype != np.float64 else np.float32
        arrays[i] = np.zeros(arrays[i].shape, other)
    elif fault == "rank" and arrays:
        i = draw(st.integers(0, len(arrays) - 1))
        arrays[i] = arrays[i].reshape(*arrays[i].shape, 1)
    elif fault == "large" and arrays and ndim > 1:
        i = draw(st.integers(0, len(arrays) - 1))
        shape = list(arrays[i].shape)
        shape[draw(st.integers(1, ndim - 1))] += 1
        arrays[i] = random_array(rng, tuple(shape), dtype)
    elif fault == "rows":
        out_rows += draw(st.sampled_from([-1, 1])) if out_rows else 1
    elif fault == "type" and arrays:
        arrays[draw(st.integers(0, len(arrays) - 1))] = [[0]]
    # (A "large" fault may still fit out: the tails to scatter by are the arrays' own.)
    tails = [a.shape[1:] if isinstance(a, np.ndarray) else t for a, t in zip(arrays, tails)]
    out_shape = (out_rows, *out_tail)
    if fault == "out":
        out = draw(st.sampled_from(["scalar", "fortran", "frozen"]))
    else:
        out = "plain"
    pad = draw(st.sampled_from(PADS))
    return arrays, np.dtype(dtype), (out, out_shape, pad), rows, tails


def make_out(kind: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A batch tensor prefilled with a marker (to see what was written), or an unusable one."""
    if kind == "scalar":
        return np.zeros((), dtype)
    out = np.empty(shape, dtype, order="F" if kind == "fortran" else "C")
    if dtype == object:
        out[...] = b"?"
    elif dtype == np.bool_:
        out[...] = True
    else:
        out.reshape(-1, order="A").view(np.uint8)[...] = 0x5A
    if kind == "frozen":
        out.flags.writeable = False
    return out


def run(impl: ModuleType, arrays: list[Any], out: np.ndarray, pad: Any) -> tuple[str, Any]:
    try:
        impl.gather(arrays, out, pad)
    except Exception as e:  # noqa: BLE001 - the outcome is compared
        return "error", (type(e), str(e), type(e.__cause__))
    return "ok", None


def outcome(out: np.ndarray) -> Any:
    if out.dtype == object:
        return [id(v) for v in out.ravel()]
    return out.tobytes()


parity = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@needs_native
@parity
@given(batches())
def test_gather_parity_and_round_trip(case: Any) -> None:
    arrays, dtype, (kind, shape, pad), rows, tails = case
    out_py = make_out(kind, shape, dtype)
    out_c = make_out(kind, shape, dtype)
    before = outcome(out_py)
    got_py = run(reference, arrays, out_py, pad)
    got_c = run(native, arrays, out_c, pad)
    assert got_py == got_c
    assert outcome(out_py) == outcome(out_c)
    if got_py[0] == "error":
        assert outcome(out_py) == before  # nothing written
        return
    for impl, out in ((reference, out_py), (native, out_c)):
        pieces = impl.scatter(out, rows, tails)
        assert len(pieces) == len(arrays)
        for piece, a in zip(pieces, arrays):
            assert piece.shape == a.shape and piece.dtype == a.dtype
            if dtype == object:
                assert all(x is y for x, y in zip(piece.ravel(), a.ravel()))
            else:
                assert piece.tobytes() == np.ascontiguousarray(a).tobytes()
            if piece.size:
                assert np.shares_memory(piece, out)


def view_facts(piece: np.ndarray, array: np.ndarray) -> tuple[Any, ...]:
    """What must be identical in the pieces both twins cut from *array*."""
    offset = piece.__array_interface__["data"][0] - array.__array_interface__["data"][0]
    flags = piece.flags
    return (
        type(piece), piece.dtype, piece.shape, piece.strides, offset, piece.tobytes(),
        piece.base is array.base if array.base is not None else piece.base is array,
        flags.writeable, flags.c_contiguous, flags.f_contiguous, flags.aligned, flags.owndata,
    )


@st.composite
def scatter_cases(draw: st.DrawFn) -> tuple[np.ndarray, list[Any], Any]:
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.integers(0, 4), min_size=ndim, max_size=ndim)))
    array = np.arange(int(np.prod(shape)), dtype=np.int32).reshape(shape)
    rows: list[Any] = draw(st.lists(st.integers(-1, 4), max_size=5))
    if draw(st.booleans()) and rows:
        rows[-1] = shape[0] - sum(rows[:-1])  # usually adds up
    tails: Any = None
    if draw(st.booleans()):
        tails = [
            tuple(draw(st.integers(-1, d + 1)) for d in shape[1:])
            if draw(st.integers(0, 9))
            else (0,) * ndim
            for _ in range(len(rows) + draw(st.sampled_from([0, 0, 0, 1])))
        ]
    return array, rows, tails


@needs_native
@parity
@given(scatter_cases())
def test_scatter_parity(case: Any) -> None:
    array, rows, tails = case
    results = []
    for impl in (reference, native):
        try:
            pieces = impl.scatter(array, rows, tails)
        except Exception as e:  # noqa: BLE001 - the outcome is compared
            results.append(("error", type(e), str(e)))
        else:
            results.append(("ok", [view_facts(p, array) for p in pieces]))
    assert results[0] == results[1]
