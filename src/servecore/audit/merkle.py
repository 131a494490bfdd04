"""RFC 6962 / RFC 9162 Merkle tree hashing, inclusion and consistency proofs.

``leaf_hash(d) = SHA-256(0x00 || d)`` and ``node_hash(l, r) = SHA-256(0x01 || l || r)``; the
tree over *n* leaves splits at the largest power of two below *n* (MTH in RFC 6962 §2.1).

:class:`CompactTree` appends leaves in O(1) amortised and gives the root in O(log n) from its
*frontier*: the roots of the perfect subtrees that the binary digits of *n* cut ``[0, n)`` into,
largest first. The frontier is stored in every checkpoint, so a writer (or a verifier) can carry
on from a checkpoint without the leaves before it (after retention removed them).

Proofs are computed over a :class:`RangeHasher`, which hashes any range from the leaves it has and
the frontier of a pruned prefix.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 leaf hash of one entry."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below *n* (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaves: Sequence[bytes]) -> bytes:
    """MTH over leaf hashes, straight from the RFC's recursive definition (for tests and small
    trees)."""
    n = len(leaves)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaves[0]
    k = _split(n)
    return node_hash(root_of(leaves[:k]), root_of(leaves[k:]))


def frontier_ranges(size: int) -> list[tuple[int, int]]:
    """The ``[lo, hi)`` ranges of the perfect subtrees of a tree of *size* leaves, largest first."""
    ranges = []
    lo = 0
    for bit in range(size.bit_length() - 1, -1, -1):
        if size & (1 << bit):
            ranges.append((lo, lo + (1 << bit)))
            lo += 1 << bit
    return ranges


def root_from_frontier(frontier: Sequence[bytes]) -> bytes:
    """The root of a tree from its frontier (folded from the right, which is MTH's shape)."""
    if not frontier:
        return EMPTY_ROOT
    acc = frontier[-1]
    for h in reversed(frontier[:-1]):
        acc = node_hash(h, acc)
    return acc


class CompactTree:
    """An append-only Merkle tree that keeps only its frontier."""

    __slots__ = ("_stack", "size")

    def __init__(self, *, size: int = 0, frontier: Sequence[bytes] = ()) -> None:
        if len(frontier) != size.bit_count():
            raise ValueError(f"a frontier of {len(frontier)} hashes does not fit size {size}")
        self.size = size
        # (height, hash), height strictly decreasing
        self._stack = [
            ((hi - lo).bit_length() - 1, h)
            for (lo, hi), h in zip(frontier_ranges(size), frontier)
        ]

    def append(self, leaf: bytes) -> None:
        """Add one leaf hash."""
        height, h = 0, leaf
        stack = self._stack
        while stack and stack[-1][0] == height:
            _, left = stack.pop()
            h = node_hash(left, h)
            height += 1
        stack.append((height, h))
        self.size += 1

    @property
    def frontier(self) -> list[bytes]:
        """The perfect-subtree roots, largest first."""
        return [h for _, h in self._stack]

    def root(self) -> bytes:
        """The tree head of the leaves so far."""
        return root_from_frontier(self.frontier)


class RangeHasher:
    """Hashes ``[lo, hi)`` ranges of a tree whose leaves are known from *base* on, the prefix
    ``[0, base)`` being known only through its frontier (empty when base is 0)."""

    def __init__(
        self, leaves: Sequence[bytes], *, base: int = 0, base_frontier: Sequence[bytes] = ()
    ) -> None:
        self.leaves = leaves
        self.base = base
        self._blocks = dict(zip(frontier_ranges(base), base_frontier))
        if len(self._blocks) != base.bit_count():
            raise ValueError(f"the frontier does not fit a prefix of {base} leaves")
        self._cache: dict[tuple[int, int], bytes] = {}

    @property
    def size(self) -> int:
        """Leaves in the tree (pruned prefix included)."""
        return self.base + len(self.leaves)

    def __call__(self, lo: int, hi: int) -> bytes:
        """MTH of leaves ``[lo, hi)``."""
        if (lo, hi) in self._blocks:
            return self._blocks[(lo, hi)]
        if hi - lo == 1 and lo >= self.base:
            return self.leaves[lo - self.base]
        if hi - lo == 0:
            return EMPTY_ROOT
        cached = self._cache.get((lo, hi))
        if cached is not None:
            return cached
        if lo < self.base and hi - lo == 1:
            raise LookupError(f"leaf {lo} was pruned and is not a frontier block")
        k = _split(hi - lo)
        h = node_hash(self(lo, lo + k), self(lo + k, hi))
        if hi - lo >= 64:
            self._cache[(lo, hi)] = h
        return h


RangeHash = Callable[[int, int], bytes]


def inclusion_proof(index: int, size: int, hash_range: RangeHash) -> list[bytes]:
    """PATH(index, D[0:size]) of RFC 6962 §2.1.1, leaf-side first."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size}")
    path: list[bytes] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            path.append(hash_range(lo + k, hi))
            hi = lo + k
        else:
            path.append(hash_range(lo, lo + k))
            lo = lo + k
    path.reverse()
    return path


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 §2.1.3.2: does *proof* put *leaf* at *index* of the tree with head *root*?"""
    if not 0 <= index < size:
        return False
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def consistency_proof(old_size: int, new_size: int, hash_range: RangeHash) -> list[bytes]:
    """PROOF(m, D[0:n]) of RFC 6962 §2.1.2: the tree of *old_size* is a prefix of *new_size*."""
    if not 0 < old_size <= new_size:
        raise ValueError(f"no consistency proof from {old_size} to {new_size}")

    def subproof(m: int, lo: int, hi: int, complete: bool) -> list[bytes]:
        n = hi - lo
        if m == n:
            return [] if complete else [hash_range(lo, hi)]
        k = _split(n)
        if m <= k:
            return subproof(m, lo, lo + k, complete) + [hash_range(lo + k, hi)]
        return subproof(m - k, lo + k, hi, False) + [hash_range(lo, lo + k)]

    return subproof(old_size, 0, new_size, True)


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2: is the tree (*old_size*, *old_root*) a prefix of (*new_size*,
    *new_root*)?"""
    if not 0 < old_size <= new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root starts the path
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root
