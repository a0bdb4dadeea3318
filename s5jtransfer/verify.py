"""Source vs destination: sort every source object into moved / pending / missing / differ, and repair.

The decisions are pure functions of one object (category, src_row_kept, dest_row_kept); classify
and the *_rows_to_keep functions apply them to dicts (tests, small sets); compare.py applies them
to listings and ledgers of any size, streamed through the ledger index.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from . import checksum, evidence, s3
from .config import Config
from .ledger import dest_knows_other
from .plan import is_done
from .volumes import staged_name

log = logging.getLogger("s5jtransfer.repair")
MISSING_FILE = "missing_keys.txt"
MOVED, PENDING, MISSING, DIFFER = "moved", "pending", "missing", "differ"
PROBES = 3  # HeadObjects per side that may tell whether its ETags are MD5s


def category(o: s3.Obj, d: s3.Obj | None, srow: tuple | None, drow: tuple | None, staged: dict[str, int],
             to_move: bool = False, opaque: tuple[bool, bool] = (False, False)) -> tuple[str, bool]:
    """Pure: (the category of one source object o, whether only its ETags made it differ). d: the
    destination's object of its key; srow, drow: the ledgers' rows; staged: staged file name ->
    size; to_move: the last comparison found it missing or different and took its rows away;
    opaque: whether the source's and the destination's ETags say nothing of the bytes
    (etags_opaque)."""
    cat, by_etag = None, False
    if d is not None:
        if d.size != o.size:
            cat = DIFFER
        else:
            confirmed = drow is not None and drow[0] == o.size and drow[3] == o.etag and drow[1] == d.etag
            same = d.etag == o.etag
            comparable = checksum.etag_kind(o.etag) == checksum.etag_kind(d.etag) == checksum.MD5 and not any(opaque)
            # ETags that cannot be compared (multipart of other part sizes, SSE-KMS) count by size
            # only where nothing says otherwise (a bucket moved by other means). The ledgers say
            # otherwise when they know another version: the destination object was confirmed with
            # another ETag (replaced since), or for another source version, or the source object
            # was ledgered with another ETag (changed since); and so does the last comparison,
            # which found it so and took those rows away. (An empty ETag, as in the original
            # scripts' two-column ledgers, knows nothing.)
            other = dest_knows_other(drow, d.etag, o.etag) or (srow is not None and srow[1] and srow[1] != o.etag) \
                or to_move
            if confirmed or same:
                cat = MOVED
            elif comparable or other:
                cat, by_etag = DIFFER, comparable and not other
            else:
                cat = MOVED
    if cat != MOVED:
        if is_done(o.size, o.etag, srow) and staged.get(staged_name(o.key)) == o.size:
            cat = PENDING  # the current version is staged and ledgered: on its way
        elif cat is None:
            cat = MISSING
    return cat, by_etag


def src_row_kept(cat: str, o: s3.Obj, srow: tuple | None) -> tuple | None:
    """Pure: the source ledger's row of o after a comparison. A pending object keeps its row; a
    moved one keeps a row that says it is done, or gets one from the listing; the others none
    (they move again)."""
    if cat == PENDING:
        return srow
    if cat == MOVED:
        return srow if is_done(o.size, o.etag, srow) else (o.size, o.etag, "destination", "")
    return None


def dest_row_kept(cat: str, o: s3.Obj, d: s3.Obj | None, drow: tuple | None) -> tuple | None:
    """Pure: the destination ledger's row of o after a comparison. A row is kept only for a moved
    object and only as it is at the destination (a row edited by hand, or left from another
    version, is dropped; the destination side confirms the object there again); '' in its ETag:
    the original's ledger. A moved object whose row was lost (a power cut between upload and
    ledger) is ledgered from the listing where the ETags prove the bytes, so the destination side
    frees its staged copy instead of uploading it again."""
    if cat != MOVED or d is None:
        return None
    if drow is not None and drow[0] == d.size and (not drow[1] or drow[1] == d.etag):
        return drow
    kind = checksum.etag_kind(d.etag)
    if d.etag == o.etag and kind in (checksum.MD5, checksum.MULTIPART):
        return (d.size, d.etag, kind, o.etag)
    return None


@dataclass
class Report:
    categories: dict[str, str] = field(default_factory=dict)  # key -> category
    sizes: dict[str, int] = field(default_factory=dict)
    extra_at_destination: int = 0
    by_etag: list[str] = field(default_factory=list)  # keys found to differ by their ETags alone (MD5s of both)

    def counts(self) -> Counter:
        return Counter(self.categories.values())

    def keys(self, *cats: str) -> list[str]:
        return sorted(k for k, c in self.categories.items() if c in cats)

    @property
    def complete(self) -> bool:
        return all(c == MOVED for c in self.categories.values())


def classify(src: dict[str, s3.Obj], dst: dict[str, s3.Obj], src_rows: dict[str, tuple],
             dest_rows: dict[str, tuple], staged: dict[str, int], to_move: frozenset[str] = frozenset(),
             opaque: tuple[bool, bool] = (False, False)) -> Report:
    """Pure: the category of every source object of dicts (see category)."""
    rep = Report()
    for key, o in src.items():
        rep.sizes[key] = o.size
        cat, by_etag = category(o, dst.get(key), src_rows.get(key), dest_rows.get(key), staged, key in to_move,
                                opaque)
        rep.categories[key] = cat
        if by_etag:
            rep.by_etag.append(key)
    rep.extra_at_destination = sum(1 for k in dst if k not in src)
    return rep


def src_rows_to_keep(rep: Report, src: dict[str, s3.Obj], src_rows: dict[str, tuple]) -> dict[str, tuple]:
    """Pure: the source ledger after a comparison (see src_row_kept)."""
    kept = {k: src_row_kept(cat, src[k], src_rows.get(k)) for k, cat in rep.categories.items()}
    return {k: r for k, r in kept.items() if r is not None}


def dest_rows_to_keep(rep: Report, src: dict[str, s3.Obj], dst: dict[str, s3.Obj],
                      dest_rows: dict[str, tuple]) -> dict[str, tuple]:
    """Pure: the destination ledger after a comparison (see dest_row_kept)."""
    kept = {k: dest_row_kept(cat, src[k], dst.get(k), dest_rows.get(k)) for k, cat in rep.categories.items()}
    return {k: r for k, r in kept.items() if r is not None}


def etags_opaque(side, cfg: Config, keys: list[str]) -> bool:
    """Whether a side's ETags say nothing of the bytes: its settings say so (etag_is_md5: false, or
    uploads encrypted with SSE-KMS), or a HeadObject of one of the first PROBES of `keys` shows an
    encryption whose ETags are no MD5s (evidence.OPAQUE_SSE). Headers only: nothing is read back."""
    if not side.etag_is_md5 or side.writes.sse in evidence.OPAQUE_SSE:
        return True
    if side.is_snow:
        return False  # a Snowball names no encryption
    try:
        client = s3.client(side, cfg.settings)
        for key in keys[:PROBES]:
            got = s3.head(side, client, key)
            if got is not None and got.sse in evidence.OPAQUE_SSE:
                log.info("the %s's ETags are no MD5s (%r is encrypted with %s): objects of the same size are "
                         "compared by the ledgers' record", side.name, key, got.sse)
                return True
    except Exception as exc:  # noqa: BLE001 - no answer: ETags are taken for what they look like
        log.debug("cannot tell whether the %s's ETags are MD5s: %s", side.name, s3.describe_error(exc, side))
    return False
