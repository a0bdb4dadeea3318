"""Confirming uploads at the destination: is the object there what was staged?

judge() decides from one answer (a listing's or a HeadObject's) by the evidence ladder
(evidence.destination); Confirmer asks. One listing of the destination confirms many uploads at
once when it costs less than a HeadObject each, unless the destination keeps checksums or its ETags
are no MD5s (then only a HeadObject's answer can tell, and each is asked so); when an answer
disagrees, the other way is asked too (a store whose HEAD or listing misreports), and the object is
confirmed when that answer matches.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from . import checksum, evidence, s3, s5cmd
from .endpoints import Endpoints
from .ledger import dest_knows_other
from .runtime import file_signature
from .upload import Candidate

log = logging.getLogger("s5jtransfer.dest")
# A listing page (1,000 keys) against HeadObjects: S3 prices it as 12.5, a Go S3 server (SeaweedFS,
# a bucket of 100,000 objects) spends the CPU of 105 (82 ms against 0.78 ms, measured), and the
# confirmation lists the whole destination prefix: listed only where it holds few pages
LIST_PAGE_COST = 100
HEAD_WORKERS = 16
CHANGED = "the staged copy changed after its check"


def judge(c: Candidate, there: s3.Obj | None, rehash: Callable[..., tuple] | None, opaque: bool = False,
          listed: bool = False) -> tuple | str | None:
    """A dest ledger row (key, size, ETag, level, source ETag) when the answer `there` shows the
    staged bytes of c (evidence.destination), else why not, or None when a HeadObject must tell
    (`listed`: the answer is a listing's). opaque: the destination's ETags are known to be no MD5s.
    rehash(path, size, etag, extra_part_sizes=...) -> checksum.check's (level, digest) hashes the
    staged copy again for an ETag the pre-upload check did not foresee (None: not now)."""
    if there is None:
        return "not there"
    size, src_etag = c.pending.row[:2]
    v = evidence.destination(there, size, c.md5, c.upload_etag, c.sums, opaque or evidence.etag_opaque(there, True),
                             listed)
    level = v.level
    if v.ask:
        return None
    if level == evidence.CONTENT_MD5:
        if not c.content_md5:
            level = checksum.SIZE  # an upload without Content-MD5 (a large one through boto3)
        elif file_signature(c.path) != c.ident:
            return CHANGED  # the upload may have read other bytes than those checked
    elif v.rehash and rehash is not None:
        # uploaded otherwise than foreseen (another part size, by boto3; a store answering the MD5
        # of a multipart upload): the staged copy is hashed again, and counts only while it still
        # has the checksum verified at staging (one changed after its check may be what went out,
        # and would match itself)
        level, still = _again(c, size, there.etag.lower(), src_etag, rehash)
        if level == CHANGED:
            return CHANGED
        if level is None and still:
            return f"ETag {there.etag} {STILL_VERIFIED}"
    if level is None:
        return f"ETag {there.etag} does not match the staged bytes ({_what(c)})" if v.rehash else v.why
    return (c.key, size, there.etag, level, src_etag)


STILL_VERIFIED = "does not match the staged bytes, which still have the checksum verified at staging"


def _again(c: Candidate, size: int, etag: str, src_etag: str, rehash) -> tuple[str | None, bool]:
    """(level of the destination's ETag against the staged copy read again, or CHANGED; whether
    that read still has the checksum verified at staging)."""
    # verified at staging by the source's parts, without the MD5 (source ledger rows with no MD5):
    # the same read checks them again
    by_parts = () if c.md5 else checksum.source_part_sizes(size, src_etag)
    try:
        level, d = rehash(c.path, size, etag, extra_part_sizes=by_parts)
    except OSError:
        return None, False
    still = d.nbytes == size and (d.md5 == c.md5 if c.md5 else bool(by_parts) and src_etag.lower() in d.multi.values())
    if level is not None and not still:
        return CHANGED, False
    return level, still


def _what(c: Candidate) -> str:
    return f"MD5 {c.md5}" if c.md5 else f"multipart ETag {c.upload_etag}"


def existing(key: str, src_row: tuple, there: s3.Obj | None, dest_row: tuple | None,
             opaque: bool = False) -> tuple | None:
    """A dest ledger row when the destination already holds the object the source ledger row
    (size, ETag, level, MD5) describes, with no upload of ours to compare (a ledger from the
    original scripts, a stop between upload and ledger): the same size, and the same MD5 where
    both sides have one (unless the destination's ETags are no MD5s: opaque, or its answer says
    so); None otherwise."""
    size, src_etag, _verified, md5 = src_row[:4]
    if there is None or there.size != size:
        return None
    etag = there.etag.lower()
    level = checksum.SIZE
    opaque = opaque or evidence.etag_opaque(there, True)
    if not opaque and checksum.etag_kind(etag) == checksum.MD5 and (md5 or checksum.etag_kind(src_etag) == checksum.MD5):
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
    """One listing of the range of keys these uploads span (a page per 1,000 objects the
    destination holds there: `known` plus these) costs less than a HeadObject per upload."""
    return uploads > LIST_PAGE_COST * ((known + uploads) // 1000 + 1)


class Confirmer:
    def __init__(self, side, eps: Endpoints) -> None:
        self.side = side
        self.eps = eps
        self.at = 0  # the endpoint that confirms (the first live one, set by confirm())
        self._heads: dict[int, s3.Heads] = {}
        # the destination's ETags are no MD5s: said by the operator, by the encryption our uploads
        # ask for, or by an answer (learned: every upload of ours is written alike)
        w = side.writes
        self.opaque = not side.etag_is_md5 or w.sse in evidence.OPAQUE_SSE
        # the store keeps checksums, whose values only a HeadObject gives: no listing is made to confirm
        self.heads_only = False
        self.trust = evidence.EtagTrust("destination")

    def _heads_at(self, ep: int) -> s3.Heads:
        heads = self._heads.get(ep)
        if heads is None:
            heads = self._heads[ep] = s3.Heads(self.side, lambda: self.eps.client(ep), ep)
        return heads

    def head(self, key: str) -> s3.Obj | None:
        return self._heads_at(self.at).head(key)

    def confirm(self, cands: list[Candidate], answered: dict[str, s3.Obj], known: Callable[[str, str, int], int],
                at: int) -> list:
        """For each candidate, its dest ledger row or why it does not confirm. answered: what the
        destination answered for some of them (CompleteMultipartUpload); known(lo, hi, most): the
        objects the destination ledger holds with keys from lo to hi (counted up to most: the size
        of a listing of that range)."""
        self.at = at
        self._heads_at(at)  # made here, before the threads that use it
        listing: dict[str, s3.Obj] = dict(answered)
        rest = [c for c in cands if c.key not in listing]
        if rest and not self.heads_only:
            listable = {c.key for c in rest if s5cmd.run_file_safe(c.key)}
            if listable:
                lo, hi = min(listable), max(listable)
                most = (len(listable) // LIST_PAGE_COST + 1) * 1000  # past it, no listing is worth it
                if worth_listing(len(listable), known(lo, hi, most)):
                    listing.update(self._listing_for(listable, lo, hi))
        if len(listing) >= len(cands):
            return [self.one(c, listing.get(c.key), c.key not in answered) for c in cands]
        with ThreadPoolExecutor(max_workers=HEAD_WORKERS) as pool:
            return list(pool.map(lambda c: self.one(c, listing.get(c.key), c.key not in answered), cands))

    def one(self, c: Candidate, given: s3.Obj | None = None, listed: bool = True) -> tuple | str:
        """The first answer is the one given (a listing's, or CompleteMultipartUpload's when not
        `listed`) or a HeadObject's; when it does not confirm, the other way is asked too. Two
        answers that agree on an ETag of an MD5's form that the staged bytes (hashed again, still
        as verified) do not make: the last resort of evidence.EtagTrust."""
        how = ("listing" if listed else "upload") if given is not None else "HeadObject"
        answers, seen = [], []
        for way in (how, "HeadObject" if how != "HeadObject" else "listing"):
            try:
                there = given if way == how and given is not None else self._ask(c.key, way)
            except Exception as exc:  # noqa: BLE001 - counted as a try
                answers.append(f"{way}: {s3.describe_error(exc, self.side)}")
                continue
            self._learn(there)
            got = judge(c, there, checksum.check if way != "listing" else None, self.opaque, way == "listing")
            if got is None:
                continue  # a listing that names a checksum: the HeadObject gives it
            if isinstance(got, tuple):
                self.trust.saw(got[3])
                if answers:
                    log.info("%r confirmed by its %s after another answer disagreed (%s)", c.key, way, answers[0])
                return got
            answers.append(f"{way}: {got}")
            seen.append((there, got))
        last = self._last_resort(c, seen)
        return last or "does not confirm at the destination (" + "; ".join(answers) + ")"

    def _learn(self, there: s3.Obj | None) -> None:
        if there is None:
            return
        if there.sse in evidence.OPAQUE_SSE:
            self.opaque = True
        if there.sums or there.checksum:
            self.heads_only = True

    def _last_resort(self, c: Candidate, seen: list[tuple[s3.Obj, str]]) -> tuple | None:
        """Both ways answered the same size and ETag of a checksum's form, which the staged copy,
        read again with its verified bytes, does not make: the store's ETags are no MD5s
        (evidence.EtagTrust; never once an ETag of this destination matched its bytes)."""
        if len(seen) != 2 or not c.content_md5 or self.trust.matched:
            return None
        (a, _), (b, _) = seen
        if (a.size, a.etag.lower()) != (b.size, b.etag.lower()) or not any(w.endswith(STILL_VERIFIED) for _, w in seen):
            return None
        self.trust.warn(f"its HeadObject and its listing agree on ETag {a.etag} for {c.key!r}, whose staged bytes "
                        "still have their verified checksum")
        got = judge(c, a, None, opaque=True)
        return got if isinstance(got, tuple) else None

    def _ask(self, key: str, way: str) -> s3.Obj | None:
        if way == "HeadObject":
            return self.head(key)
        return s3.list_one(self.side, self.eps.client(self.at), key)

    def _listing_for(self, keys: set[str], lo: str, hi: str) -> dict[str, s3.Obj]:
        """One paginated listing of the destination prefix from lo to hi (S3's order is the code
        points', as Python's), kept only for `keys`."""
        def take(objs) -> dict[str, s3.Obj]:
            out = {}
            for o in objs:
                if o.key > hi:
                    break  # the pages after it are never asked for
                if o.key in keys:
                    out[o.key] = o
            return out

        try:
            ep = self.at
            # lo without its last character sorts before lo, and before every key from lo on
            return s3.listing(self.side, lambda: self.eps.client(ep), take, ep, start_after=lo[:-1])
        except Exception as exc:  # noqa: BLE001 - fall back to one HeadObject per upload
            log.warning("destination listing failed (%s); confirming each upload on its own",
                        s3.describe_error(exc, self.side))
            return {}

    def close(self) -> None:
        for heads in self._heads.values():
            heads.close()
        self._heads.clear()
