"""Which evidence verifies an object on each hop, strongest first: pure decisions over plain values.

The levels, as the ledgers' `Verified` column writes them (docs/design.md, "The evidence ladder"):

- checksum:    the store keeps a full-object additional checksum (CRC64NVME, CRC32C, CRC32, SHA-1,
               SHA-256) equal to the one made locally from the same read as the MD5;
- md5:         the ETag is the MD5 of the bytes;
- multipart:   the ETag is the multipart ETag of the bytes' parts;
- content-md5: (destination) the ETag is no MD5 of the content (SSE-KMS, DSSE-KMS, SSE-C, or a
               store that says so by setting), but the destination took an upload that carried
               the Content-MD5 of the verified staged bytes (S3 refuses a body that does not
               match it), and the size matches;
- size:        the store offers nothing else.

The store's checksum is read only where a listing names one or a response carries it, so a
plain store costs no extra request.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

from .checksum import MD5, MULTIPART, SIZE, Digest, etag_kind

log = logging.getLogger("s5jtransfer.evidence")

CHECKSUM, CONTENT_MD5 = "checksum", "content-md5"
LEVELS = (CHECKSUM, MD5, MULTIPART, CONTENT_MD5, SIZE)  # strongest first
# A response header saying that the ETag is not the MD5 of the bytes (AWS documents it for these).
OPAQUE_SSE = frozenset(("aws:kms", "aws:kms:dsse", "SSE-C"))


class Verdict(NamedTuple):
    level: str | None  # a ledger's Verified value; None: not verified
    why: str = ""  # when not: what disagreed
    ask: bool = False  # a HeadObject may tell (the store's checksum, or that its ETags are no MD5s)
    rehash: bool = False  # only the ETag disagrees: bytes hashed otherwise may make it (another part size)


def etag_opaque(answer, trusted: bool) -> bool:
    """The ETag says nothing about the bytes: the operator says so (etag_is_md5: false), or the
    store does (a HeadObject's x-amz-server-side-encryption: aws:kms or aws:kms:dsse, or SSE-C)."""
    return not trusted or (answer is not None and answer.sse in OPAQUE_SSE)


def store_checksum(answer, local: dict[str, str]) -> tuple[str, str, bool] | None:
    """(algorithm, the store's value, equal) for the first full-object checksum the store answered
    that was also made locally; None when there is none."""
    for algo, value in answer.sums:
        if algo in local:
            return algo, value, local[algo] == value
    return None


def source(size: int, etag: str, etag_level: str | None, d: Digest, head, trusted: bool) -> Verdict:
    """A copy of a listed object (size, ETag) checked: etag_level is checksum.check's word on the
    copy, d what its read made, head the source's HeadObject answer (an s3.Obj; None when none
    was asked), trusted the side's etag_is_md5."""
    if d.nbytes != size:
        return Verdict(None, f"the copy holds {d.nbytes} of its listed {size} bytes")
    if head is not None and (head.size != size or head.etag.lower() != etag.strip('"').lower()):
        return Verdict(None, f"the object changed at the source since it was listed (now {head.size} bytes, "
                             f"ETag {head.etag})")
    got = store_checksum(head, d.sums) if head is not None else None
    if got is not None:
        algo, value, equal = got
        return Verdict(CHECKSUM) if equal else Verdict(None, f"the copy's {algo} is {d.sums[algo]}, the source's {value}")
    if etag_level is not None:
        return Verdict(etag_level)  # md5, multipart, or size: an ETag that is no checksum at all
    if etag_opaque(head, trusted):
        return Verdict(SIZE)
    return Verdict(None, f"the copy does not match the listed size {size} and ETag {etag}", ask=head is None,
                   rehash=True)


def destination(answer, size: int, md5: str, upload_etag: str, sums: dict[str, str], opaque: bool,
                listed: bool) -> Verdict:
    """An upload of `size` staged bytes (their md5, "" when checked by the source's parts; the ETag
    the upload should produce; their additional checksums) against the destination's answer (an
    s3.Obj). opaque: the ETag is known to say nothing (etag_opaque); listed: the answer is a
    listing's, which names a checksum without its value and says nothing of encryption.
    A CONTENT_MD5 verdict holds only for an upload that carried the Content-MD5 of the staged
    bytes, which had not changed since their check (the caller knows)."""
    if answer.size != size:
        return Verdict(None, f"size {answer.size}, expected {size}")
    got = store_checksum(answer, sums)
    if got is not None:
        algo, value, equal = got
        return Verdict(CHECKSUM) if equal else Verdict(None, f"its {algo} {value} is not the staged bytes' {sums[algo]}")
    if listed and answer.checksum in sums:
        return Verdict(None, ask=True)  # the store keeps the checksum: a HeadObject gives it
    etag = answer.etag.lower()
    kind = etag_kind(etag)
    if kind == MD5 and md5 and etag == md5:
        return Verdict(MD5)
    if kind == MULTIPART and etag == upload_etag:
        return Verdict(MULTIPART)
    if kind == SIZE or opaque:
        return Verdict(CONTENT_MD5)
    return Verdict(None, f"ETag {answer.etag} does not match the staged bytes", rehash=True)


class EtagTrust:
    """What a side learned of its store's ETags, for the last resort: a store whose ETags are not
    MD5s and does not say so. Two independent reads of one object that agree with each other but
    not with its ETag show it, but only while no ETag of this side has matched its bytes in this
    run: at a store whose other ETags are MD5s, the same two reads are a copy damaged the same way
    twice (a bad sector, a middlebox), never to be ledgered. The first such case is named in one
    warning, with the setting that says it outright."""

    MAX_REMEMBERED = 100_000  # first reads kept (objects being tried again); older ones are dropped

    def __init__(self, side_name: str) -> None:
        self.side_name = side_name
        self.matched = False  # an ETag of this side matched the bytes (md5 or multipart)
        self.warned = False
        self._first: dict[str, str] = {}  # key -> MD5 of its first read that did not match its ETag

    def saw(self, level: str | None) -> None:
        """An object verified (or confirmed) at that level."""
        if level in (MD5, MULTIPART):
            self.matched = True

    def saw_ledger(self, rows) -> None:
        """A side's ledger rows (key -> (size, ETag, Verified, ...)), of this run and earlier ones:
        one verified by its ETag is enough (the first row, nearly always)."""
        if not self.matched:
            self.matched = any(r[2] in (MD5, MULTIPART) for r in rows.values() if len(r) > 2)

    def second_read_agrees(self, key: str, md5: str) -> bool:
        """A read of `key` whose MD5 does not make its ETag: True when an earlier read agreed and
        the store's ETags may be no MD5s (then warned once); else it is remembered."""
        first = self._first.pop(key, None)
        if first == md5 and md5 and not self.matched:
            self.warn(f"two reads of {key!r} agree with each other ({md5}) but not with its ETag")
            return True
        if len(self._first) >= self.MAX_REMEMBERED:
            self._first.pop(next(iter(self._first)))
        self._first[key] = md5
        return False

    def forget(self, key: str) -> None:
        self._first.pop(key, None)

    def warn(self, why: str) -> None:
        if self.warned:
            return
        self.warned = True
        log.warning("the %s's ETags are not MD5s of the data and it does not say so (%s): such objects are "
                    "verified by %s; set %s.etag_is_md5: false in config.yaml to say so and skip the second "
                    "look", self.side_name, why,
                    "their checksums where they have one, else by size" if self.side_name == "source"
                    else "the Content-MD5 each upload carried", self.side_name)
