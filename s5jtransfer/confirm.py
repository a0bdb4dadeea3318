"""Confirming uploads at the destination: is the object there what was staged?

judge() decides from one answer (a listing's or a HeadObject's); Confirmer asks. One listing of the
destination confirms many uploads at once when it costs less than a HeadObject each; when an
answer disagrees, the other way is asked too (a store whose HEAD or listing misreports), and the
object is confirmed when that answer matches.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from . import checksum, s3, s5cmd
from .endpoints import Endpoints
from .ledger import dest_knows_other
from .upload import Candidate

log = logging.getLogger("s5jtransfer.dest")
LIST_PAGE_COST = 12  # a listing page (1,000 keys) costs about 12 HeadObjects (S3's price ratio; more server CPU)
HEAD_WORKERS = 16


def judge(c: Candidate, there: s3.Obj | None, rehash: Callable[..., tuple]) -> tuple | str:
    """A dest ledger row (key, size, ETag, level, source ETag) when the answer `there` matches the
    staged bytes of c (size, then ETag), else why not. rehash(path, size, etag, extra_part_sizes=...)
    -> (level, md5, multipart etags) hashes the staged copy again for an ETag the pre-upload check
    did not foresee (checksum.check)."""
    if there is None:
        return "not there"
    size, src_etag = c.pending.row[:2]
    etag = there.etag.lower()
    if there.size != size:
        return f"size {there.size}, expected {size}"
    kind = checksum.etag_kind(etag)
    level = checksum.SIZE
    if kind == checksum.MD5 and c.md5:
        level = checksum.MD5 if etag == c.md5 else None
    elif kind == checksum.MULTIPART and etag == c.upload_etag:
        level = checksum.MULTIPART
    elif kind != checksum.SIZE:
        # uploaded otherwise than foreseen (another part size, by boto3; a store answering the MD5
        # of a multipart upload): the staged copy is hashed again, and counts only while it still
        # has the checksum verified at staging (one changed after its check may be what went out,
        # and would match itself)
        level = _again(c, size, etag, src_etag, rehash)
        if level == "changed":
            return "the staged copy changed after its check"
    if level is None:
        return f"ETag {there.etag} does not match the staged bytes ({_what(c)})"
    return (c.key, size, there.etag, level, src_etag)


def _again(c: Candidate, size: int, etag: str, src_etag: str, rehash) -> str | None:
    # verified at staging by the source's parts, without the MD5 (source ledger rows with no MD5):
    # the same read checks them again
    by_parts = () if c.md5 else checksum.source_part_sizes(size, src_etag)
    try:
        level, now_md5, multi = rehash(c.path, size, etag, extra_part_sizes=by_parts)
    except OSError:
        return None
    if level is not None and (now_md5 != c.md5 if c.md5 else by_parts and src_etag.lower() not in multi.values()):
        return "changed"
    return level


def _what(c: Candidate) -> str:
    return f"MD5 {c.md5}" if c.md5 else f"multipart ETag {c.upload_etag}"


def existing(key: str, src_row: tuple, there: s3.Obj | None, dest_row: tuple | None) -> tuple | None:
    """A dest ledger row when the destination already holds the object the source ledger row
    (size, ETag, level, MD5) describes, with no upload of ours to compare (a ledger from the
    original scripts, a stop between upload and ledger): the same size, and the same MD5 where
    both sides have one; None otherwise."""
    size, src_etag, _verified, md5 = src_row[:4]
    if there is None or there.size != size:
        return None
    etag = there.etag.lower()
    level = checksum.SIZE
    if checksum.etag_kind(etag) == checksum.MD5 and (md5 or checksum.etag_kind(src_etag) == checksum.MD5):
        if etag not in (md5, src_etag):
            return None
        level = checksum.MD5
    elif etag == src_etag.lower() and checksum.etag_kind(etag) == checksum.MULTIPART:
        level = checksum.MULTIPART  # the same parts: the same bytes
    elif dest_knows_other(dest_row, etag, src_etag):
        # by size only, but this side knows another version: the one there was confirmed for an
        # older source object, or replaced since it was confirmed
        return None
    return (key, size, etag, level, src_etag)


def worth_listing(uploads: int, known: int) -> bool:
    """One listing of the destination (a page per 1,000 objects it holds, `known` plus these)
    costs less than a HeadObject per upload."""
    return uploads > LIST_PAGE_COST * ((known + uploads) // 1000 + 1)


class Confirmer:
    def __init__(self, side, eps: Endpoints) -> None:
        self.side = side
        self.eps = eps
        self.at = 0  # the endpoint that confirms (the first live one, set by confirm())
        self._heads: dict[int, s3.Heads] = {}

    def _heads_at(self, ep: int) -> s3.Heads:
        heads = self._heads.get(ep)
        if heads is None:
            heads = self._heads[ep] = s3.Heads(self.side, lambda: self.eps.client(ep), ep)
        return heads

    def head(self, key: str) -> s3.Obj | None:
        return self._heads_at(self.at).head(key)

    def confirm(self, cands: list[Candidate], answered: dict[str, s3.Obj], known: int, at: int) -> list:
        """For each candidate, its dest ledger row or why it does not confirm. answered: what the
        destination answered for some of them (CompleteMultipartUpload); known: objects the
        destination ledger holds (the listing's size)."""
        self.at = at
        self._heads_at(at)  # made here, before the threads that use it
        listing: dict[str, s3.Obj] = dict(answered)
        rest = [c for c in cands if c.key not in listing]
        if rest:
            listable = {c.key for c in rest if s5cmd.run_file_safe(c.key)}
            if worth_listing(len(listable), known):
                listing.update(self._listing_for(listable))
        if len(listing) >= len(cands):
            return [self.one(c, listing.get(c.key)) for c in cands]
        with ThreadPoolExecutor(max_workers=HEAD_WORKERS) as pool:
            return list(pool.map(lambda c: self.one(c, listing.get(c.key)), cands))

    def one(self, c: Candidate, listed: s3.Obj | None = None) -> tuple | str:
        """The first answer is the listing's (when one was made) or a HeadObject's; when it
        disagrees, the other way is asked too."""
        how = "listing" if listed is not None else "HeadObject"
        answers = []
        for way in (how, "HeadObject" if how == "listing" else "listing"):
            try:
                there = listed if way == how and listed is not None else self._ask(c.key, way)
            except Exception as exc:  # noqa: BLE001 - counted as a try
                answers.append(f"{way}: {s3.describe_error(exc, self.side)}")
                continue
            got = judge(c, there, checksum.check)
            if isinstance(got, tuple):
                if answers:
                    log.info("%r confirmed by its %s after another answer disagreed (%s)", c.key, way, answers[0])
                return got
            answers.append(f"{way}: {got}")
        return "does not confirm at the destination (" + "; ".join(answers) + ")"

    def _ask(self, key: str, way: str) -> s3.Obj | None:
        if way == "HeadObject":
            return self.head(key)
        return s3.list_one(self.side, self.eps.client(self.at), key)

    def _listing_for(self, keys: set[str]) -> dict[str, s3.Obj]:
        """One paginated listing of the destination prefix, kept only for `keys`."""
        try:
            ep = self.at
            return s3.listing(self.side, lambda: self.eps.client(ep), lambda objs: {o.key: o for o in objs if o.key in keys},
                              ep)
        except Exception as exc:  # noqa: BLE001 - fall back to one HeadObject per upload
            log.warning("destination listing failed (%s); confirming each upload on its own",
                        s3.describe_error(exc, self.side))
            return {}

    def close(self) -> None:
        for heads in self._heads.values():
            heads.close()
        self._heads.clear()
