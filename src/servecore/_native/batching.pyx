# cython: language_level=3
"""Compiled twin of :mod:`servecore.batching.policy`: the batch policy over a C-level queue.

The pure-Python module is the specification (read its docstring for the rules). This
:class:`BatchPolicy` has the interface of :class:`~servecore.batching.policy.BatchPolicyPy`: the
same methods and arguments, the same results (the reference's :class:`Batch` and
:class:`Refusal` dataclasses, with the same ids, rows and reasons) and the same exceptions, with
the same messages, for every argument in the domain the reference documents.

It manipulates Python objects (request ids, the result records), so it keeps the GIL. The win
comes from the data structure:

* the settings are copied into typed fields once, the preferred sizes into a C array;
* each queued request is an :class:`_Entry` record with typed ``int64`` fields, on a doubly linked
  list in (priority level, arrival) order, plus a dict from id to record for :meth:`remove`; a
  new request is linked after the last one of its level (found from the tail: O(1) when every
  request has the default level), and a batch is unlinked from the head;
* one pass over the head's requests (:meth:`BatchPolicy._walk`) finds, without allocating, the
  batch, why it is closed, its earliest deadline and where a preferred size cuts it;
* the predicted-time table is only read when a decision needs it, straight from a list's item
  array or an ``int64`` numpy array's buffer when it is one.

Deadlines and priorities are client-chosen and may be any int: they are saturated to ``int64``
on the way in, which changes no result (see "Domain" in the reference). Other times, shape keys
and predicted run times out of ``int64`` raise ``OverflowError``.
"""

cimport cython
from cpython.buffer cimport PyBUF_FORMAT, PyBUF_ND, PyBuffer_Release
from cpython.exc cimport PyErr_Clear
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.number cimport PyNumber_Index
from cpython.object cimport PyObject_GenericSetAttr, PyObject_GetItem
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from libc.stdint cimport INT64_MAX, INT64_MIN, int64_t

import dataclasses

import numpy as np

from servecore.batching.policy import (
    DEADLINE as _DEADLINE_REASON,
    DEFAULT_PRIORITY,
    DELAY as _DELAY_REASON,
    NO_DEADLINE,
    PREFERRED as _PREFERRED_REASON,
    SHAPE as _SHAPE_REASON,
    SIZE as _SIZE_REASON,
    Batch,
    Refusal,
)

cdef extern from "Python.h":
    # Without Cython's "except -1": a refused buffer (a strided array) is not an error here.
    int _try_get_buffer "PyObject_GetBuffer" (object obj, Py_buffer* view, int flags)

# The close reasons, as C codes and as the reference's strings (the same objects).
cdef enum _Reason:
    _OPEN  # the walk left the batch open: it closes for delay or deadline, or waits
    _SIZE
    _SHAPE
    _PREFERRED
    _DELAY
    _DEADLINE

cdef tuple _REASONS = (None, _SIZE_REASON, _SHAPE_REASON, _PREFERRED_REASON, _DELAY_REASON,
                       _DEADLINE_REASON)

cdef int64_t _NO_DEADLINE = NO_DEADLINE
cdef int64_t _DEFAULT_LEVEL = DEFAULT_PRIORITY
cdef object _ndarray = np.ndarray
cdef object _object_new = object.__new__


# --------------------------------------------------------------------------------------------
# Arguments and the predicted-time table
# --------------------------------------------------------------------------------------------


cdef int64_t _saturated(object value) except? -1:
    """*value* (an int or numpy integer) as int64, clamped to the int64 range."""
    cdef int overflow = 0
    cdef int64_t result = PyLong_AsLongLongAndOverflow(PyNumber_Index(value), &overflow)
    if overflow > 0:
        return INT64_MAX
    if overflow < 0:
        return INT64_MIN
    return result


cdef inline int64_t _floordiv(int64_t a, int64_t b) noexcept:
    """Python's ``a // b`` (C division truncates towards zero); *b* is positive."""
    cdef int64_t q = a / b
    if a % b != 0 and a < 0:
        q -= 1
    return q


cdef int64_t _table_at(object table, Py_ssize_t i) except? -1:
    """``table[i]`` as int64: from a list's items or an int64 array's buffer, else by indexing.

    Anything unusual (an index out of range, another dtype, a strided array) goes through plain
    indexing, which raises what the reference would.
    """
    cdef Py_buffer view
    if type(table) is list:
        if i < PyList_GET_SIZE(table):
            return <object>PyList_GET_ITEM(table, i)
    elif type(table) is _ndarray:
        if _try_get_buffer(table, &view, PyBUF_FORMAT | PyBUF_ND) == 0:
            try:
                if (view.ndim == 1 and view.itemsize == 8 and i < view.shape[0]
                        and view.format[0] in b"lq" and view.format[1] == 0):
                    return (<int64_t*>view.buf)[i]
            finally:
                PyBuffer_Release(&view)
        else:  # not C-contiguous
            PyErr_Clear()
    # Exactly the reference's ``predicted_ns[rows]`` (Cython's own ``table[i]`` would skip the
    # bounds check of a list under boundscheck=False).
    return PyObject_GetItem(table, i)


cdef object _new_batch(tuple ids, int64_t rows, int reason):
    """``Batch(ids, rows, reason)``, its frozen ``__init__`` done in C (see _BATCH_IS_PLAIN)."""
    if not _BATCH_IS_PLAIN:
        return Batch(ids, rows, _REASONS[reason])
    batch = _object_new(Batch)
    PyObject_GenericSetAttr(batch, "ids", ids)
    PyObject_GenericSetAttr(batch, "rows", rows)
    PyObject_GenericSetAttr(batch, "reason", _REASONS[reason])
    return batch


# Batch is a frozen dataclass: its generated __init__ sets each field with object.__setattr__,
# which costs more than the rest of next_batch. _new_batch does the same from C as long as Batch
# is what it is today: exactly these fields and nothing run after them (no __post_init__).
cdef bint _BATCH_IS_PLAIN = False
_BATCH_IS_PLAIN = (
    tuple(f.name for f in dataclasses.fields(Batch)) == ("ids", "rows", "reason")
    and not hasattr(Batch, "__post_init__")
)
if _BATCH_IS_PLAIN and _new_batch((1,), 1, _SIZE) != Batch((1,), 1, _SIZE_REASON):
    _BATCH_IS_PLAIN = False


# --------------------------------------------------------------------------------------------
# The queue
# --------------------------------------------------------------------------------------------


@cython.final
@cython.freelist(256)
@cython.no_gc  # links are broken when an entry leaves the queue (and in BatchPolicy.__dealloc__)
cdef class _Entry:
    """One queued request, linked in (level, seq) order."""

    cdef object id
    cdef int64_t rows
    cdef int64_t shape_key
    cdef int64_t arrival_ns
    cdef int64_t deadline_ns  # saturated; _NO_DEADLINE for none
    cdef int64_t level
    cdef int64_t seq
    cdef _Entry prev
    cdef _Entry next


# What one walk from the head finds (see BatchPolicy._walk).
cdef struct _Walk:
    Py_ssize_t count  # requests taken
    int64_t rows  # their rows
    Py_ssize_t cut  # the longest prefix adding up to a preferred size (0: none)
    int64_t cut_rows
    int64_t earliest  # their earliest deadline (_NO_DEADLINE: none)
    int reason  # a _Reason: why the batch is already closed, or _OPEN


@cython.final
@cython.no_gc_clear  # __dealloc__ unlinks the entries itself, iteratively
cdef class BatchPolicy:
    """The queue of one model version and the batch decisions over it.

    The compiled twin of :class:`servecore.batching.policy.BatchPolicyPy`.
    """

    cdef readonly object settings
    cdef readonly int64_t queued_rows
    cdef dict _entries  # id -> _Entry
    cdef _Entry _head
    cdef _Entry _tail
    cdef int64_t _seq
    cdef Py_ssize_t _with_deadline  # queued entries that have a deadline
    # the settings
    cdef int64_t _max_batch_size
    cdef int64_t _max_queue_delay_ns
    cdef int64_t _max_queue_rows
    cdef int64_t _instances
    cdef int64_t* _preferred  # ascending
    cdef Py_ssize_t _n_preferred
    cdef int64_t _largest_preferred  # 0: none

    def __cinit__(self, settings):
        cdef Py_ssize_t i
        self.settings = settings
        self._entries = {}
        self._max_batch_size = settings.max_batch_size
        self._max_queue_delay_ns = settings.max_queue_delay_ns
        self._max_queue_rows = settings.max_queue_rows
        self._instances = settings.instances
        preferred = tuple(settings.preferred_batch_sizes)
        self._n_preferred = len(preferred)
        self._preferred = <int64_t*>PyMem_Malloc(max(self._n_preferred, 1) * sizeof(int64_t))
        if self._preferred == NULL:
            raise MemoryError()
        for i in range(self._n_preferred):
            self._preferred[i] = preferred[i]
        self._largest_preferred = self._preferred[self._n_preferred - 1] if self._n_preferred else 0

    def __dealloc__(self):
        # Break the links one by one: dropping the head would free a long queue recursively.
        cdef _Entry entry = self._head
        cdef _Entry following
        self._head = self._tail = None
        while entry is not None:
            following = entry.next
            entry.prev = entry.next = None
            entry = following
        PyMem_Free(self._preferred)

    def __len__(self):
        return len(self._entries)

    # -- admission --------------------------------------------------------------------------------

    def predicted_wait_ns(self, predicted_ns, int64_t rows=0):
        """Predicted time until a newly queued request of *rows* rows would finish running.

        The batches ahead of the one it would run in are spread over the instances; its own batch
        (the last, possibly full one) runs on one instance.
        """
        return self._predicted_wait(predicted_ns, rows)

    cdef int64_t _predicted_wait(self, object predicted_ns, int64_t rows) except? -1:
        cdef int64_t total = self.queued_rows + rows
        cdef int64_t full = _floordiv(total, self._max_batch_size)
        cdef int64_t rest = total - full * self._max_batch_size
        cdef int64_t ahead, own = 0
        if rest == 0 and full > 0:  # the request's batch is the last full one
            full -= 1
            rest = self._max_batch_size
        ahead = full * _table_at(predicted_ns, self._max_batch_size)
        if rest:
            own = _table_at(predicted_ns, rest)
        return _floordiv(ahead, self._instances) + own

    def admit(self, int64_t rows, deadline_ns, int64_t now_ns, predicted_ns):
        """None to accept a request of *rows* rows, or why not."""
        cdef int64_t deadline = _saturated(deadline_ns)
        cdef int64_t wait = self._predicted_wait(predicted_ns, rows)
        if self._max_queue_rows and self.queued_rows + rows > self._max_queue_rows:
            return Refusal("queue_full", wait)
        if deadline != _NO_DEADLINE and now_ns + wait > deadline:
            return Refusal("deadline", wait)
        return None

    # -- the queue --------------------------------------------------------------------------------

    def add(self, request_id, rows, shape_key, arrival_ns, deadline_ns, priority):
        """Queue a request (admission is the caller's business: see :meth:`admit`)."""
        cdef _Entry entry, before
        cdef int64_t n_rows, level
        if request_id in self._entries:
            raise KeyError(f"request {request_id} is already queued")
        n_rows = _saturated(rows)
        if not 1 <= n_rows <= self._max_batch_size:
            raise ValueError(
                f"a request of {rows} rows cannot be batched (max_batch_size {self.settings.max_batch_size})"
            )
        level = _saturated(priority)
        level = _DEFAULT_LEVEL if level <= 0 else min(level, _DEFAULT_LEVEL - 1)
        entry = _Entry.__new__(_Entry)
        entry.shape_key = shape_key
        entry.arrival_ns = arrival_ns
        entry.deadline_ns = _saturated(deadline_ns)
        entry.id = request_id
        entry.rows = n_rows
        entry.level = level
        entry.seq = self._seq
        self._seq += 1
        self._entries[request_id] = entry
        # After the last entry of its level or a higher one: new entries have the highest seq.
        before = self._tail
        while before is not None and before.level > level:
            before = before.prev
        self._link_after(entry, before)
        self.queued_rows += n_rows
        if entry.deadline_ns != _NO_DEADLINE:
            self._with_deadline += 1

    cdef void _link_after(self, _Entry entry, _Entry before) noexcept:
        """Link *entry* after *before* (None: at the head)."""
        entry.prev = before
        if before is None:
            entry.next = self._head
            self._head = entry
        else:
            entry.next = before.next
            before.next = entry
        if entry.next is None:
            self._tail = entry
        else:
            entry.next.prev = entry

    cdef int _drop(self, _Entry entry) except -1:
        """Take *entry* out of the list, the dict and the counts."""
        if entry.prev is None:
            self._head = entry.next
        else:
            entry.prev.next = entry.next
        if entry.next is None:
            self._tail = entry.prev
        else:
            entry.next.prev = entry.prev
        entry.prev = entry.next = None
        del self._entries[entry.id]
        self.queued_rows -= entry.rows
        if entry.deadline_ns != _NO_DEADLINE:
            self._with_deadline -= 1
        return 0

    def remove(self, request_id):
        """Take a request out of the queue (cancelled or disconnected); False if it was not queued."""
        entry = self._entries.get(request_id)
        if entry is None:
            return False
        self._drop(<_Entry>entry)
        return True

    def pop_expired(self, int64_t now_ns):
        """Remove and return the ids whose deadline has passed, in queue order."""
        cdef list expired = []
        cdef _Entry entry, following
        if self._with_deadline == 0:
            return expired
        entry = self._head
        while entry is not None:
            following = entry.next
            if entry.deadline_ns != _NO_DEADLINE and entry.deadline_ns <= now_ns:
                expired.append(entry.id)
                self._drop(entry)
            entry = following
        return expired

    # -- decisions --------------------------------------------------------------------------------

    cdef void _walk(self, _Walk* w) noexcept:
        """The batch the head would form now (the queue is not empty), in one pass."""
        cdef _Entry head = self._head
        cdef _Entry entry = head
        cdef Py_ssize_t p = 0  # the next preferred size not below the rows taken
        w.count = 0
        w.rows = 0
        w.cut = 0
        w.cut_rows = 0
        w.earliest = _NO_DEADLINE
        w.reason = _OPEN
        while entry is not None:
            if entry.shape_key != head.shape_key:
                w.reason = _SHAPE
                return
            if w.rows + entry.rows > self._max_batch_size:
                w.reason = _SIZE
                return
            w.count += 1
            w.rows += entry.rows
            if entry.deadline_ns != _NO_DEADLINE and (
                w.earliest == _NO_DEADLINE or entry.deadline_ns < w.earliest
            ):
                w.earliest = entry.deadline_ns
            while p < self._n_preferred and self._preferred[p] < w.rows:
                p += 1
            if p < self._n_preferred and self._preferred[p] == w.rows:
                w.cut = w.count
                w.cut_rows = w.rows
            if w.rows == self._max_batch_size:
                w.reason = _SIZE
                return
            if w.rows == self._largest_preferred:
                w.reason = _PREFERRED
                return
            entry = entry.next

    cdef int _open_reason(self, _Walk* w, int64_t now_ns, object predicted_ns) except -1:
        """Why a batch the walk left open closes now (delay or deadline), or _OPEN."""
        cdef int64_t close_at = self._head.arrival_ns + self._max_queue_delay_ns
        if now_ns - self._head.arrival_ns >= self._max_queue_delay_ns:
            return _DELAY
        if w.earliest != _NO_DEADLINE and close_at + _table_at(predicted_ns, w.rows) > w.earliest:
            return _DEADLINE
        return _OPEN

    def next_batch(self, int64_t now_ns, predicted_ns):
        """The batch to run now on a free instance, or None to wait (see :meth:`wake_at`)."""
        cdef _Walk w
        cdef tuple ids
        cdef _Entry entry
        cdef Py_ssize_t k
        if self._head is None:
            return None
        self._walk(&w)
        if w.reason == _OPEN:
            w.reason = self._open_reason(&w, now_ns, predicted_ns)
            if w.reason == _OPEN:
                return None
            if w.cut and w.reason == _DELAY:
                w.count = w.cut
                w.rows = w.cut_rows
        ids = PyTuple_New(w.count)
        for k in range(w.count):
            entry = self._head
            if entry is None:  # only if Python code run by a table lookup emptied the queue
                raise RuntimeError("the queue changed while a batch was formed")
            Py_INCREF(entry.id)
            PyTuple_SET_ITEM(ids, k, entry.id)
            self._drop(entry)
        return _new_batch(ids, w.rows, w.reason)

    def wake_at(self, int64_t now_ns, predicted_ns):
        """When :meth:`next_batch` may first answer differently if nothing else happens (None: never).

        *now_ns* if it would return a batch now, else when the head's delay runs out (see the
        reference's docstring: deadlines need no wake-up of their own).
        """
        cdef _Walk w
        if self._head is None:
            return None
        self._walk(&w)
        if w.reason != _OPEN or self._open_reason(&w, now_ns, predicted_ns) != _OPEN:
            return now_ns
        return self._head.arrival_ns + self._max_queue_delay_ns
