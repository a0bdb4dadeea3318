"""The source hop's evidence: is a fetched copy the listed object? (evidence.py decides, this asks.)

One read of the copy makes its MD5, the multipart ETags its ETag may be made of, and the additional
checksum the listing names. The source's HeadObject is asked only where it can tell: where the
listing names a checksum (its value, and whether the object is encrypted so that its ETag is no
MD5), and where the ETag disagrees with the bytes (does the store say its ETags are no MD5s? which
part size made a multipart ETag?). A plain store's copies that match cost no request.
"""

from __future__ import annotations

import logging
from typing import Callable

from . import checksum, evidence, s3
from .plan import Item

log = logging.getLogger("s5jtransfer.src")


class CopyCheck:
    """Per side: what it learned (part sizes of multipart objects, whether its ETags are MD5s),
    and one HeadObject client per endpoint. verify() runs in several threads at once."""

    def __init__(self, side, client_of: Callable[[int], object], endpoint: Callable[[], int]) -> None:
        self.side = side
        self.client_of = client_of  # endpoint index -> its boto3 client
        self.endpoint = endpoint  # () -> the endpoint in use
        self.part_hints: dict[str, int] = {}
        self.trust = evidence.EtagTrust("source")
        self.opaque_seen = False  # a HeadObject said an object's ETag is no MD5 (SSE-KMS...)
        self._heads: dict[int, s3.Heads] = {}

    def verify(self, item: Item, path: str) -> tuple[tuple | None, str]:
        """(source ledger row, "") when the copy at `path` is the listed object, else (None, why).
        The row's Verified is the evidence that showed it; its MD5 is the copy's ("" when the
        source's multipart ETag checked it by its parts: the destination side checks them again)."""
        try:
            return self._verify(item, path)
        except OSError as exc:
            log.warning("cannot read staged copy of %r: %s", item.key, exc)
            return None, f"cannot read the copy ({exc.strerror or exc})"

    def _verify(self, item: Item, path: str) -> tuple[tuple | None, str]:
        asked, head = False, None
        if item.checksum and checksum.computable(item.checksum):
            asked, head = True, self._head(item.key)  # the checksum's value, and the encryption
        hint = self.part_hints.get(item.key)
        # the whole MD5 is left out only for a multipart ETag its parts can check (one MD5 pass)
        whole = hint is not None or self.opaque_seen or evidence.etag_opaque(head, self.side.etag_is_md5)
        sums = (item.checksum,) if head is not None else ()
        level, d = checksum.check(path, item.size, item.etag, hint, whole=whole, sums=sums)
        v = evidence.source(item.size, item.etag, level, d, head, self.side.etag_is_md5)
        if v.ask and not asked:  # the ETag disagrees: does the store say it is no MD5?
            head = self._head(item.key)
            v = evidence.source(item.size, item.etag, level, d, head, self.side.etag_is_md5)
        if v.rehash and checksum.etag_kind(item.etag) == checksum.MULTIPART:
            hint = self._part_size(item.key)  # parts of a size the guesses missed
            if hint:
                level, d = checksum.check(path, item.size, item.etag, hint, sums=sums)
                v = evidence.source(item.size, item.etag, level, d, head, self.side.etag_is_md5)
        if v.level is not None and d.md5 == "" and level != checksum.MULTIPART:
            d = checksum.hash_file(path)  # an MD5 for the ledger: the source's parts did not check it
        if v.rehash:
            if d.md5 == "":
                d = checksum.hash_file(path)
            if not self.trust.second_read_agrees(item.key, d.md5):
                return None, v.why
            v = evidence.Verdict(checksum.SIZE)  # the last resort (evidence.EtagTrust)
        if v.level is None:
            return None, v.why
        self.trust.saw(level)  # the ETag's own word: an MD5 (or parts) that matched
        self.trust.forget(item.key)
        if v.level == checksum.SIZE:
            log.debug("%r: its ETag %r is no MD5 and it has no checksum: verified by its size", item.key, item.etag)
        return (item.key, item.size, item.etag, v.level, d.md5), ""

    def _head(self, key: str) -> s3.Obj | None:
        """The source's HeadObject of `key` (with its checksums); None when it cannot be had (a
        failure only leaves the ETag's evidence)."""
        ep = self.endpoint()
        heads = self._heads.get(ep)
        if heads is None:
            heads = self._heads.setdefault(ep, s3.Heads(self.side, lambda: self.client_of(ep), ep))
        try:
            got = heads.head(key)
        except Exception as exc:  # noqa: BLE001 - the listing's ETag is still evidence
            log.debug("HeadObject of %r failed: %s", key, s3.describe_error(exc, self.side))
            return None
        if got is not None and got.sse in evidence.OPAQUE_SSE:
            self.opaque_seen = True
        return got

    def _part_size(self, key: str) -> int | None:
        """The source's part size for a multipart object: HeadObject of part 1."""
        try:
            head = self.client_of(self.endpoint()).head_object(Bucket=self.side.bucket, Key=self.side.prefix + key,
                                                                PartNumber=1)
            size = int(head.get("ContentLength", 0))
            self.part_hints[key] = size
            return size or None
        except Exception as exc:  # noqa: BLE001 - a missing hint only narrows the guesses
            log.debug("part size of %r unknown: %s", key, exc)
            return None
