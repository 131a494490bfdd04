"""Unit tests of request-body decoding and response-coding negotiation (servecore.http.body)."""

from __future__ import annotations

import gzip
import zlib

import pytest

from servecore.errors import InvalidInputError, PayloadTooLargeError, UnsupportedEncodingError
from servecore.http.body import choose_encoding, compress, decompress


def test_gzip_members_are_concatenated() -> None:
    assert decompress(gzip.compress(b"ab") + gzip.compress(b"cd"), "gzip", limit=100) == b"abcd"


def test_limit_counts_every_member() -> None:
    with pytest.raises(PayloadTooLargeError):
        decompress(gzip.compress(b"a" * 60) + gzip.compress(b"a" * 60), "gzip", limit=100)


@pytest.mark.parametrize(
    ("body", "encoding"),
    [(gzip.compress(b"ab") + b"junk", "gzip"), (zlib.compress(b"ab") + b"x", "deflate")],
    ids=["gzip-trailing-junk", "deflate-trailing-bytes"],
)
def test_trailing_bytes_are_refused(body: bytes, encoding: str) -> None:
    with pytest.raises(InvalidInputError):
        decompress(body, encoding, limit=100)


def test_raw_deflate_is_accepted() -> None:
    packer = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    assert decompress(packer.compress(b"hello") + packer.flush(), "deflate", limit=100) == b"hello"


def test_unknown_coding_is_415() -> None:
    with pytest.raises(UnsupportedEncodingError):
        decompress(b"x", "br", limit=100)


@pytest.mark.parametrize(
    ("header", "chosen"),
    [
        (None, None),
        ("", None),
        ("br", None),
        ("gzip", "gzip"),
        ("deflate", "deflate"),
        ("gzip, deflate, br, zstd", "gzip"),
        ("deflate;q=1.0, gzip;q=0.5", "deflate"),
        ("gzip;q=0", None),
        ("identity;q=1, gzip;q=0.5", None),
        ("*", "gzip"),
        ("gzip;q=0, *;q=0.8", "deflate"),
    ],
)
def test_choose_encoding(header: str | None, chosen: str | None) -> None:
    assert choose_encoding(header) == chosen


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_compress_round_trip(coding: str) -> None:
    packed = compress(b"payload" * 100, coding)
    inflate = gzip.decompress if coding == "gzip" else zlib.decompress
    assert inflate(packed) == b"payload" * 100
