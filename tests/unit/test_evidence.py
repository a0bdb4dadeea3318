"""Unit tests for evidence.py: the ladder of evidence on each hop, with plain values."""

from __future__ import annotations

import hashlib

import pytest

from s5jtransfer import evidence
from s5jtransfer.checksum import MD5, MULTIPART, SIZE, Digest
from s5jtransfer.evidence import CHECKSUM, CONTENT_MD5, EtagTrust, Verdict
from s5jtransfer.s3 import Answer, Obj

DATA = b"x" * 1000
MD5_HEX = hashlib.md5(DATA).hexdigest()
KMS_ETAG = "0123456789abcdef0123456789abcdef"  # an MD5's form, no MD5 of the data
CRC = "AAAAAAAAAAE="  # a CRC64NVME value as S3 writes it


def digest(md5: str = MD5_HEX, nbytes: int = 1000, sums=None) -> Digest:
    return Digest(md5, nbytes, {}, sums or {})


def head(etag: str = KMS_ETAG, size: int = 1000, sse: str = "", sums=()) -> Answer:
    return Answer("k", size, etag, "", sse, tuple(sums))


# -- the source hop ------------------------------------------------------------------------------
def test_source_an_etag_that_matches_is_its_own_evidence_without_a_request():
    assert evidence.source(1000, MD5_HEX, MD5, digest(), None, True) == Verdict(MD5)
    assert evidence.source(1000, "abc-2", MULTIPART, digest(""), None, True) == Verdict(MULTIPART)
    assert evidence.source(1000, "opaque", SIZE, digest(), None, True) == Verdict(SIZE)  # no checksum's form


def test_source_a_checksum_the_store_keeps_wins_and_a_different_one_fails():
    good = head(MD5_HEX, sums=[("CRC64NVME", CRC)])
    assert evidence.source(1000, MD5_HEX, MD5, digest(sums={"CRC64NVME": CRC}), good, True).level == CHECKSUM
    bad = evidence.source(1000, MD5_HEX, MD5, digest(sums={"CRC64NVME": "AAAAAAAAAAA="}), good, True)
    assert bad.level is None and "CRC64NVME" in bad.why
    # a checksum not made locally proves nothing: the ETag decides
    assert evidence.source(1000, MD5_HEX, MD5, digest(), good, True).level == MD5


def test_source_an_etag_that_disagrees_asks_the_store_then_encryption_says_it_is_no_md5():
    first = evidence.source(1000, KMS_ETAG, None, digest(), None, True)
    assert first.level is None and first.ask and first.rehash
    assert evidence.source(1000, KMS_ETAG, None, digest(), head(sse="aws:kms"), True) == Verdict(SIZE)
    assert evidence.source(1000, KMS_ETAG, None, digest(), head(sse="aws:kms:dsse"), True) == Verdict(SIZE)
    assert evidence.source(1000, KMS_ETAG, None, digest(), head(sse="SSE-C"), True) == Verdict(SIZE)
    # AES256 (SSE-S3) keeps MD5 ETags: a disagreement is a damaged copy
    plain = evidence.source(1000, KMS_ETAG, None, digest(), head(sse="AES256"), True)
    assert plain.level is None and not plain.ask and plain.rehash


def test_source_etag_is_md5_false_makes_a_disagreeing_etag_no_evidence_against_the_bytes():
    assert evidence.source(1000, KMS_ETAG, None, digest(), None, False) == Verdict(SIZE)
    assert evidence.source(1000, MD5_HEX, MD5, digest(), None, False) == Verdict(MD5)  # a match still counts


def test_source_a_short_copy_or_a_changed_object_is_never_verified():
    short = evidence.source(1000, KMS_ETAG, None, digest(nbytes=999), head(sse="aws:kms"), True)
    assert short.level is None and "999 of its listed 1000" in short.why
    changed = evidence.source(1000, KMS_ETAG, None, digest(sums={"CRC64NVME": CRC}),
                              head("fedcba9876543210fedcba9876543210", sse="aws:kms", sums=[("CRC64NVME", CRC)]), True)
    assert changed.level is None and "changed at the source" in changed.why
    bigger = evidence.source(1000, KMS_ETAG, None, digest(), head(size=2000, sse="aws:kms"), True)
    assert bigger.level is None


# -- the destination hop --------------------------------------------------------------------------
def dest(answer, md5=MD5_HEX, upload_etag=MD5_HEX, sums=None, opaque=False, listed=False) -> Verdict:
    return evidence.destination(answer, 1000, md5, upload_etag, sums if sums is not None else {"CRC64NVME": CRC},
                                opaque, listed)


def test_destination_ladder():
    assert dest(head(MD5_HEX, sums=[("CRC64NVME", CRC)])).level == CHECKSUM
    assert dest(head(MD5_HEX)).level == MD5
    assert dest(head("a" * 32 + "-3"), upload_etag="a" * 32 + "-3").level == MULTIPART
    assert dest(head(KMS_ETAG, sse="aws:kms")).level is None  # the caller says opaque (etag_opaque)
    assert dest(head(KMS_ETAG), opaque=True).level == CONTENT_MD5
    assert dest(head("kms-opaque")).level == CONTENT_MD5  # no checksum's form at all
    wrong = dest(head(MD5_HEX, sums=[("CRC64NVME", "AAAAAAAAAAA=")]))
    assert wrong.level is None and "CRC64NVME" in wrong.why
    assert "size 999" in dest(head(MD5_HEX, size=999)).why


def test_destination_a_listing_that_names_a_checksum_asks_for_its_value():
    listed = Obj("k", 1000, MD5_HEX, "CRC64NVME")
    assert dest(listed, listed=True) == Verdict(None, ask=True)
    assert dest(listed, sums={}, listed=True).level == MD5  # not made here: the ETag decides
    other = dest(Obj("k", 1000, KMS_ETAG), listed=True)
    assert other.level is None and other.rehash and not other.ask


# -- the last resort --------------------------------------------------------------------------------
def test_two_reads_that_agree_show_etags_no_md5s_only_while_none_matched(caplog):
    trust = EtagTrust("source")
    assert not trust.second_read_agrees("k", "m1")
    assert not trust.second_read_agrees("k", "m2")  # they disagree: a damaged read
    with caplog.at_level("WARNING"):
        assert trust.second_read_agrees("k", "m2")
        assert trust.second_read_agrees("j", "m3") is False and trust.second_read_agrees("j", "m3")
    assert caplog.text.count("set source.etag_is_md5: false") == 1  # one warning per side
    sure = EtagTrust("source")
    sure.saw(MD5)
    assert not sure.second_read_agrees("k", "m") and not sure.second_read_agrees("k", "m")


def test_a_ledger_verified_by_etags_tells_that_they_are_md5s():
    trust = EtagTrust("destination")
    trust.saw_ledger({"a": (1, "e", "content-md5", ""), "b": (1, "e", "size", "")})
    assert not trust.matched
    trust.saw_ledger({"a": (1, "e", "content-md5", ""), "b": (1, "e", "md5", "")})
    assert trust.matched
    trust.saw_ledger({})
    assert trust.matched


def test_first_reads_remembered_are_bounded(monkeypatch):
    monkeypatch.setattr(EtagTrust, "MAX_REMEMBERED", 3)
    trust = EtagTrust("source")
    for i in range(10):
        trust.second_read_agrees(f"k{i}", "m")
    assert len(trust._first) == 3  # noqa: SLF001


@pytest.mark.parametrize("sse,opaque", [("aws:kms", True), ("aws:kms:dsse", True), ("SSE-C", True),
                                        ("AES256", False), ("", False)])
def test_which_encryption_makes_etags_no_md5s(sse, opaque):
    assert evidence.etag_opaque(head(sse=sse), True) is opaque
    assert evidence.etag_opaque(None, False) and not evidence.etag_opaque(None, True)
