"""Unit tests for confirm.py: when an upload counts as confirmed (judge), and when a listing is worth it."""

from __future__ import annotations

import hashlib
import os

from s5jtransfer import checksum
from s5jtransfer.confirm import judge, worth_listing
from s5jtransfer.s3 import Answer, Obj
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
    assert not worth_listing(100, 0)  # one page: about 100 HEADs
    assert worth_listing(101, 0)
    assert not worth_listing(500, 5000)  # six pages
    assert worth_listing(700, 5000)


# -- copies verified at staging by the source's parts (no MD5 in the source ledger row) ------------
def by_parts(path, data: bytes, part: int = 5 * MIB) -> Candidate:
    src = etag_of(data, part)
    return Candidate("k", Pending((len(data), src, "multipart", ""), "n"), str(path), (0, 0), part=0)


def test_rehash_of_a_copy_verified_by_the_sources_parts_keeps_them_for_the_upload(tmp_path):
    """One pass: the copy is checked against the source's multipart ETag again, and uploaded with
    the source's part size, so the destination's ETag is the source's."""
    from s5jtransfer.dest_sync import rehash

    data = os.urandom(11 * MIB)
    path = tmp_path / "staged.bin"
    path.write_bytes(data)
    c = by_parts(path, data)
    assert rehash([c], 50 * MIB) == [True]
    assert (c.md5, c.part, c.upload_etag) == ("", 5 * MIB, etag_of(data, 5 * MIB))
    assert judge(c, Obj("k", len(data), etag_of(data, 5 * MIB)), checksum.check)[3] == checksum.MULTIPART
    bad = bytearray(data)
    bad[7] ^= 1
    path.write_bytes(bytes(bad))
    assert rehash([by_parts(path, data)], 50 * MIB) == [False]


def test_rehash_finds_which_of_several_possible_part_sizes_the_source_used(tmp_path):
    """12 MiB in 2 parts may be 8 or 10 MiB parts (both common): the one that makes the ETag is used."""
    from s5jtransfer.dest_sync import rehash

    data = os.urandom(12 * MIB)
    path = tmp_path / "staged.bin"
    path.write_bytes(data)
    assert {8 * MIB, 10 * MIB} <= set(checksum.source_part_sizes(len(data), etag_of(data, 10 * MIB)))
    c = by_parts(path, data, 10 * MIB)
    assert rehash([c], 50 * MIB) == [True]
    assert (c.part, c.upload_etag) == (10 * MIB, etag_of(data, 10 * MIB))


def test_an_md5_etag_for_a_copy_verified_by_parts_is_checked_by_hashing_again(tmp_path):
    """A store that answers the MD5 of the whole for a multipart upload: the copy is hashed again
    and counts only while it still makes the source's parts."""
    data = os.urandom(11 * MIB)
    path = tmp_path / "staged.bin"
    path.write_bytes(data)
    c = by_parts(path, data)
    c.part, c.upload_etag = 5 * MIB, etag_of(data, 5 * MIB)
    row = judge(c, Obj("k", len(data), hashlib.md5(data).hexdigest()), checksum.check)
    assert isinstance(row, tuple) and row[3] == checksum.MD5
    changed = bytearray(data)
    changed[-1] ^= 1
    path.write_bytes(bytes(changed))  # changed after the check, and what went out: it matches itself
    got = judge(c, Obj("k", len(data), hashlib.md5(bytes(changed)).hexdigest()), checksum.check)
    assert got == "the staged copy changed after its check"
    assert "does not match" in judge(c, Obj("k", len(data), "0" * 32), checksum.check)


# -- destinations whose ETags are no MD5s, and destinations that keep checksums ---------------------
def staged(tmp_path, data: bytes, content_md5: bool = True) -> Candidate:
    from s5jtransfer.runtime import file_signature

    path = tmp_path / "staged.bin"
    path.write_bytes(data)
    c = cand(path, data)
    c.ident, c.content_md5 = file_signature(str(path)), content_md5
    c.sums = {"CRC64NVME": "AAAAAAAAAAE="}
    return c


KMS_ETAG = "0123456789abcdef0123456789abcdef"


def test_an_encrypted_answer_confirms_by_the_uploads_content_md5_while_the_staged_copy_is_unchanged(tmp_path):
    data = os.urandom(1000)
    c = staged(tmp_path, data)
    kms = Answer("k", 1000, KMS_ETAG, "", "aws:kms", ())
    assert judge(c, kms, checksum.check)[3] == "content-md5"
    assert judge(c, Obj("k", 1000, KMS_ETAG), checksum.check, opaque=True)[3] == "content-md5"
    c.content_md5 = False  # a large boto3 upload carries none: its size is all
    assert judge(c, kms, checksum.check)[3] == checksum.SIZE
    c.content_md5 = True
    (tmp_path / "staged.bin").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # what the upload read may differ
    assert judge(c, kms, checksum.check) == "the staged copy changed after its check"


def test_a_checksum_the_destination_keeps_confirms_and_one_that_differs_does_not(tmp_path):
    c = staged(tmp_path, os.urandom(1000))
    assert judge(c, Answer("k", 1000, KMS_ETAG, "", "aws:kms", (("CRC64NVME", "AAAAAAAAAAE="),)), checksum.check)[3] \
        == "checksum"
    got = judge(c, Answer("k", 1000, c.md5, "", "", (("CRC64NVME", "AAAAAAAAAAA="),)), checksum.check)
    assert isinstance(got, str) and "CRC64NVME" in got
    # a listing that names the checksum: only a HeadObject gives its value
    assert judge(c, Obj("k", 1000, c.md5, "CRC64NVME"), checksum.check, listed=True) is None


class _Answers:
    """A Confirmer whose HeadObject and listing answers are given (no S3)."""

    def __init__(self, head: Obj | None, listed: Obj | None, etag_is_md5: bool = True) -> None:
        from s5jtransfer.config import Secret, Side
        from s5jtransfer.confirm import Confirmer

        side = Side("destination", "b", "copy/", "us-east-1", Secret(""), Secret(""), (), etag_is_md5=etag_is_md5)
        self.confirmer = Confirmer(side, eps=None)
        self.confirmer._ask = lambda key, way: head if way == "HeadObject" else listed  # noqa: SLF001


def test_head_and_listing_that_agree_on_an_etag_the_unchanged_bytes_do_not_make_are_the_last_resort(tmp_path, caplog):
    c = staged(tmp_path, os.urandom(1000))
    c.sums = {}
    answers = _Answers(Obj("k", 1000, KMS_ETAG), Obj("k", 1000, KMS_ETAG))
    with caplog.at_level("WARNING"):
        row = answers.confirmer.one(c)
    assert isinstance(row, tuple) and row[3] == "content-md5", row
    assert "set destination.etag_is_md5: false" in caplog.text
    # where an ETag of this destination matched its bytes before, the same answers are a fault
    answers.confirmer.trust.saw("md5")
    assert "does not confirm" in answers.confirmer.one(c)
    # answers that disagree with each other are no evidence of anything
    other = _Answers(Obj("k", 1000, KMS_ETAG), Obj("k", 1000, "f" * 32))
    assert "does not confirm" in other.confirmer.one(c)


def test_the_destination_that_keeps_checksums_is_asked_by_headobject_from_then_on(tmp_path):
    c = staged(tmp_path, os.urandom(1000))
    answers = _Answers(Answer("k", 1000, c.md5, "", "", (("CRC64NVME", "AAAAAAAAAAE="),)), Obj("k", 1000, c.md5, "CRC64NVME"))
    assert not answers.confirmer.heads_only
    assert answers.confirmer.one(c, Obj("k", 1000, c.md5, "CRC64NVME"))[3] == "checksum"
    assert answers.confirmer.heads_only


def test_rehash_answers_in_the_candidates_order_for_copies_hashed_here_and_in_threads(tmp_path, monkeypatch):
    """Small copies are hashed in the cycle's thread, large ones (checksum.INLINE_BELOW) in threads: each
    answer stays with its copy."""
    from s5jtransfer import dest_sync

    monkeypatch.setattr(checksum, "INLINE_BELOW", 2000)
    cands, want = [], []
    for i, (size, damaged) in enumerate([(100, False), (3000, True), (50, True), (4000, False), (2500, False),
                                         (10, False)]):
        data = os.urandom(size)
        path = tmp_path / f"c{i}"
        path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]) if damaged else data)
        cands.append(Candidate("k", Pending((size, "src-etag", "md5", hashlib.md5(data).hexdigest()), "n"),
                               str(path), (0, 0)))
        want.append(not damaged)
    assert dest_sync.rehash(cands, 50 * MIB) == want
    assert [c.md5 for c, ok in zip(cands, want) if ok] == [c.pending.row[3] for c, ok in zip(cands, want) if ok]
