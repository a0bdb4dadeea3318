"""Unit tests for confirm.py: when an upload counts as confirmed (judge), and when a listing is worth it."""

from __future__ import annotations

import hashlib
import os

from s5jtransfer import checksum
from s5jtransfer.confirm import judge, worth_listing
from s5jtransfer.s3 import Obj
from s5jtransfer.upload import Candidate, Pending

MIB = 1024 * 1024


def etag_of(data: bytes, part: int) -> str:
    d = [hashlib.md5(data[i:i + part]).digest() for i in range(0, len(data), part)]
    return f"{hashlib.md5(b''.join(d)).hexdigest()}-{len(d)}"


def cand(path, data: bytes, part: int = 50 * MIB) -> Candidate:
    md5 = hashlib.md5(data).hexdigest()
    return Candidate("k", Pending((len(data), "src-etag", "md5", md5), "n"), str(path), (0, 0), md5=md5,
                     upload_etag=checksum.upload_etag(md5, len(data), part, {part: etag_of(data, part)})
                     if len(data) >= part else md5)


def test_an_md5_etag_confirms_only_the_staged_bytes(tmp_path):
    data = os.urandom(1000)
    c = cand(tmp_path / "s", data)
    row = judge(c, Obj("k", 1000, hashlib.md5(data).hexdigest()), checksum.check)
    assert row == ("k", 1000, hashlib.md5(data).hexdigest(), checksum.MD5, "src-etag")
    assert "does not match" in judge(c, Obj("k", 1000, "0" * 32), checksum.check)


def test_a_wrong_size_or_nothing_there_is_named(tmp_path):
    c = cand(tmp_path / "s", b"x" * 10)
    assert judge(c, None, checksum.check) == "not there"
    assert judge(c, Obj("k", 0, hashlib.md5(b"x" * 10).hexdigest()), checksum.check) == "size 0, expected 10"


def test_an_etag_that_is_no_md5_confirms_by_size(tmp_path):
    c = cand(tmp_path / "s", b"y" * 10)
    assert judge(c, Obj("k", 10, "kms-opaque-etag"), checksum.check)[3] == checksum.SIZE


def test_a_multipart_etag_of_another_part_size_counts_only_while_the_staged_copy_has_the_verified_md5(tmp_path):
    """Uploaded with another part size than configured (as s5cmd or boto3 may): the staged copy is
    hashed again to compare, and a copy that changed since its pre-upload check (and may be what
    went out) would match itself: it counts only while it still has the verified MD5."""
    good = os.urandom(7 * MIB)
    bad = bytearray(good)
    bad[-1] ^= 0xFF
    path = tmp_path / "staged.bin"
    path.write_bytes(bytes(bad))  # changed after the check was made on `good`
    c = cand(path, good)
    got = judge(c, Obj("k", len(good), etag_of(bytes(bad), 5 * MIB)), checksum.check)
    assert got == "the staged copy changed after its check"
    path.write_bytes(good)
    row = judge(c, Obj("k", len(good), etag_of(good, 5 * MIB)), checksum.check)
    assert isinstance(row, tuple) and row[3] == checksum.MULTIPART


def test_a_listing_is_worth_it_when_it_costs_less_than_a_head_each():
    assert not worth_listing(12, 0)  # one page: about 12 HEADs
    assert worth_listing(13, 0)
    assert not worth_listing(30, 5000)  # six pages
    assert worth_listing(100, 5000)
