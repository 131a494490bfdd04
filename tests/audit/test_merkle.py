"""RFC 6962 hashing, trees, inclusion and consistency proofs."""

from __future__ import annotations

import hashlib
import itertools

import pytest

from servecore.audit.merkle import (
    EMPTY_ROOT,
    CompactTree,
    RangeHasher,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_from_frontier,
    root_of,
    verify_consistency,
    verify_inclusion,
)

# The certificate-transparency reference test vectors (leaf inputs and the roots of the trees of
# their first n leaves).
CT_LEAVES = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657",
             "606162636465666768696a6b6c6d6e6f"]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def leaves(n: int) -> list[bytes]:
    return [leaf_hash(f"entry {i}".encode()) for i in range(n)]


def test_domain_separation() -> None:
    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    assert leaf_hash(b"\x01" + b"a" * 64) != node_hash(b"a" * 32, b"a" * 32)
    assert root_of([]) == EMPTY_ROOT == hashlib.sha256(b"").digest()


@pytest.mark.parametrize("n", range(1, 9))
def test_ct_reference_vectors(n: int) -> None:
    hashes = [leaf_hash(bytes.fromhex(x)) for x in CT_LEAVES[:n]]
    assert root_of(hashes).hex() == CT_ROOTS[n - 1]
    tree = CompactTree()
    for h in hashes:
        tree.append(h)
    assert tree.root().hex() == CT_ROOTS[n - 1]


def test_compact_tree_matches_recursive_definition_and_resumes() -> None:
    all_leaves = leaves(200)
    tree = CompactTree()
    for n, h in enumerate(all_leaves, 1):
        tree.append(h)
        assert tree.root() == root_of(all_leaves[:n])
        assert root_from_frontier(tree.frontier) == tree.root()
        resumed = CompactTree(size=n, frontier=tree.frontier)
        resumed.append(b"\x07" * 32)
        assert resumed.root() == root_of(all_leaves[:n] + [b"\x07" * 32])


def test_frontier_must_fit_the_size() -> None:
    with pytest.raises(ValueError):
        CompactTree(size=3, frontier=[b"\x00" * 32])


@pytest.mark.parametrize("size", list(range(1, 34)) + [64, 100])
def test_every_inclusion_proof_verifies(size: int) -> None:
    hashes = leaves(size)
    root = root_of(hashes)
    hasher = RangeHasher(hashes)
    for index in range(size):
        proof = inclusion_proof(index, size, hasher)
        assert verify_inclusion(index, size, hashes[index], proof, root)
        assert not verify_inclusion(index, size, leaf_hash(b"other"), proof, root)
        if proof:
            bad = list(proof)
            bad[0] = bytes(32)
            assert not verify_inclusion(index, size, hashes[index], bad, root)
            assert not verify_inclusion(index, size, hashes[index], proof[:-1], root)
        if size > 1:
            other = (index + 1) % size
            assert not verify_inclusion(other, size, hashes[index], proof, root) or (
                hashes[other] == hashes[index])


def test_inclusion_proof_shape_matches_the_rfc() -> None:
    # RFC 6962 §2.1.3: for 7 leaves, the path of leaf 3 (d) is [c, g(a,b), k(e,f,g)].
    h = leaves(7)
    hasher = RangeHasher(h)
    assert inclusion_proof(3, 7, hasher) == [h[2], node_hash(h[0], h[1]), root_of(h[4:7])]
    assert inclusion_proof(6, 7, hasher) == [root_of(h[4:6]), root_of(h[0:4])]


@pytest.mark.parametrize("new_size", list(range(1, 26)) + [64, 77])
def test_every_consistency_proof_verifies(new_size: int) -> None:
    hashes = leaves(new_size)
    hasher = RangeHasher(hashes)
    new_root = root_of(hashes)
    for old_size in range(1, new_size + 1):
        old_root = root_of(hashes[:old_size])
        proof = consistency_proof(old_size, new_size, hasher)
        assert verify_consistency(old_size, new_size, old_root, new_root, proof)
        assert not verify_consistency(old_size, new_size, leaf_hash(b"x"), new_root, proof)
        if old_size < new_size:
            assert not verify_consistency(old_size, new_size, old_root, leaf_hash(b"x"), proof)


def test_consistency_proof_shape_matches_the_rfc() -> None:
    # RFC 6962 §2.1.3: PROOF(3, D[7]) = [c, d, g, l].
    h = leaves(7)
    proof = consistency_proof(3, 7, RangeHasher(h))
    assert proof == [h[2], h[3], node_hash(h[0], h[1]), root_of(h[4:7])]


def test_a_rewritten_prefix_is_not_consistent() -> None:
    hashes = leaves(20)
    forged = [leaf_hash(b"forged")] + hashes[1:]
    proof = consistency_proof(8, 20, RangeHasher(forged))
    assert not verify_consistency(8, 20, root_of(hashes[:8]), root_of(forged), proof)


@pytest.mark.parametrize("base", [1, 2, 3, 5, 8, 13, 16, 21])
def test_proofs_from_a_pruned_prefix_match_the_full_tree(base: int) -> None:
    size = 40
    hashes = leaves(size)
    full = RangeHasher(hashes)
    frontier = CompactTree()
    for h in hashes[:base]:
        frontier.append(h)
    pruned = RangeHasher(hashes[base:], base=base, base_frontier=frontier.frontier)
    assert pruned(0, size) == root_of(hashes)
    for index, tree_size in itertools.product(range(base, size), (size, size - 1)):
        if index < tree_size:
            assert inclusion_proof(index, tree_size, pruned) == inclusion_proof(index, tree_size, full)
