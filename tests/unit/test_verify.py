"""Unit tests for s5jtransfer.verify.classify: moved / pending / missing / differ, extras, complete;
and the ledger rows a comparison keeps (src_rows_to_keep, dest_rows_to_keep)."""

from __future__ import annotations

import hashlib

from s5jtransfer.s3 import Obj
from s5jtransfer.verify import DIFFER, MISSING, MOVED, PENDING, classify, dest_rows_to_keep, src_rows_to_keep
from s5jtransfer.volumes import staged_name


def md5(s: str) -> str:
    return hashlib.md5(s.encode()).hexdigest()


E1, E2 = md5("one"), md5("two")
MULTI = md5("parts") + "-3"


def src_row(size, etag, verified="1", md5sum=""):
    """A src_ledger row as Ledger.load returns it: (Size, ETag, Verified, MD5)."""
    return (size, etag, verified, md5sum)


def dest_row(size, dest_etag, source_etag, verified="1"):
    """A dest_ledger row as Ledger.load returns it: (Size, ETag, Verified, SourceETag)."""
    return (size, dest_etag, verified, source_etag)


def one(src, dst=None, src_rows=None, dest_rows=None, staged=None):
    rep = classify(src, dst or {}, src_rows or {}, dest_rows or {}, staged or {})
    return rep


def test_same_size_same_etag_is_moved():
    rep = one({"k": Obj("k", 10, E1)}, {"k": Obj("k", 10, E1)})
    assert rep.categories == {"k": MOVED}
    assert rep.sizes == {"k": 10}
    assert rep.complete


def test_multipart_source_confirmed_by_the_dest_ledger_is_moved():
    src = {"k": Obj("k", 100, MULTI)}
    dst = {"k": Obj("k", 100, E2)}  # uploaded again with another part layout: another ETag
    rep = one(src, dst, dest_rows={"k": dest_row(100, E2, MULTI)})
    assert rep.categories == {"k": MOVED}


def test_dest_ledger_confirmation_turns_differing_md5_etags_into_moved():
    src = {"k": Obj("k", 10, E1)}
    dst = {"k": Obj("k", 10, E2)}
    assert one(src, dst).categories == {"k": DIFFER}
    assert one(src, dst, dest_rows={"k": dest_row(10, E2, E1)}).categories == {"k": MOVED}


def test_dest_ledger_row_for_another_version_does_not_confirm():
    src = {"k": Obj("k", 10, E1)}
    dst = {"k": Obj("k", 10, E2)}
    for row in (dest_row(10, E2, md5("older source")),  # copied from an older source version
                dest_row(10, md5("older dest"), E1),  # destination object replaced since
                dest_row(11, E2, E1)):  # another size
        assert one(src, dst, dest_rows={"k": row}).categories == {"k": DIFFER}, row


def test_size_differs_is_differ():
    rep = one({"k": Obj("k", 10, E1)}, {"k": Obj("k", 11, E1)})
    assert rep.categories == {"k": DIFFER}
    assert not rep.complete


def test_size_differs_even_when_dest_ledger_claims_it():
    rep = one({"k": Obj("k", 10, E1)}, {"k": Obj("k", 11, E2)}, dest_rows={"k": dest_row(10, E2, E1)})
    assert rep.categories == {"k": DIFFER}


def test_md5_etags_that_differ_are_differ():
    rep = one({"k": Obj("k", 10, E1)}, {"k": Obj("k", 10, E2)})
    assert rep.categories == {"k": DIFFER}
    assert rep.keys(DIFFER) == ["k"]


def test_non_md5_etags_of_same_size_count_as_moved():
    # an ETag that is not an MD5 (SSE-KMS style) cannot be compared: same size counts as moved
    rep = one({"k": Obj("k", 10, "kms-etag-1")}, {"k": Obj("k", 10, "kms-etag-2")})
    assert rep.categories == {"k": MOVED}


MULTI_OTHER = md5("other parts") + "-2"


def test_incomparable_etags_of_same_size_are_moved_only_when_no_ledger_knows_another_version():
    src = {"k": Obj("k", 100, MULTI)}
    dst = {"k": Obj("k", 100, MULTI_OTHER)}  # uploaded with another part size: cannot be compared
    assert one(src, dst).categories == {"k": MOVED}  # moved by other means: size is all there is
    assert one(src, dst, src_rows={"k": src_row(100, MULTI)}).categories == {"k": MOVED}
    for kwargs in (
        # the destination object was confirmed with another ETag: replaced since, same size
        {"dest_rows": {"k": dest_row(100, md5("confirmed") + "-2", MULTI)}},
        # the destination object was confirmed for an older source version (the source changed)
        {"dest_rows": {"k": dest_row(100, MULTI_OTHER, md5("older source") + "-3")}},
        # the source object was ledgered with another ETag: it changed since it was staged
        {"src_rows": {"k": src_row(100, md5("older source") + "-3")}},
    ):
        assert one(src, dst, **kwargs).categories == {"k": DIFFER}, kwargs
    # rows of the original scripts' two-column ledgers carry no ETag: they know no other version
    assert one(src, dst, src_rows={"k": src_row(100, "")}, dest_rows={"k": dest_row(100, "", "")}).categories == \
        {"k": MOVED}
    # the last comparison found it so, and took those rows away: it stays to be moved
    assert classify(src, dst, {}, {}, {}, frozenset({"k"})).categories == {"k": DIFFER}
    assert classify(src, src, {}, {}, {}, frozenset({"k"})).categories == {"k": MOVED}  # the same ETag


def test_ledgered_and_staged_with_same_size_is_pending():
    key = "dir/file name.bin"
    src = {key: Obj(key, 42, E1)}
    rep = one(src, src_rows={key: src_row(42, E1)}, staged={staged_name(key): 42})
    assert rep.categories == {key: PENDING}
    assert not rep.complete


def test_pending_wins_over_differ_when_the_new_version_is_staged():
    key = "k"
    src = {key: Obj(key, 42, E1)}
    dst = {key: Obj(key, 40, E2)}  # older version at the destination
    rep = one(src, dst, src_rows={key: src_row(42, E1)}, staged={staged_name(key): 42})
    assert rep.categories == {key: PENDING}


def test_staged_file_of_another_size_is_not_pending():
    key = "k"
    src = {key: Obj(key, 42, E1)}
    rep = one(src, src_rows={key: src_row(42, E1)}, staged={staged_name(key): 41})
    assert rep.categories == {key: MISSING}


def test_staged_but_ledgered_with_another_etag_is_not_pending():
    key = "k"
    src = {key: Obj(key, 42, E1)}
    rep = one(src, src_rows={key: src_row(42, E2)}, staged={staged_name(key): 42})
    assert rep.categories == {key: MISSING}


def test_ledgered_but_not_staged_is_missing():
    key = "k"
    src = {key: Obj(key, 42, E1)}
    rep = one(src, src_rows={key: src_row(42, E1)}, staged={staged_name("other"): 42})
    assert rep.categories == {key: MISSING}


def test_staged_under_the_key_itself_rather_than_its_hash_is_not_pending():
    key = "k"
    rep = one({key: Obj(key, 5, E1)}, src_rows={key: src_row(5, E1)}, staged={key: 5})
    assert rep.categories == {key: MISSING}


def test_absent_at_destination_is_missing():
    rep = one({"a": Obj("a", 1, E1), "b": Obj("b", 2, E2)}, {"a": Obj("a", 1, E1)})
    assert rep.categories == {"a": MOVED, "b": MISSING}
    assert rep.keys(MISSING) == ["b"]
    assert rep.keys(MISSING, DIFFER) == ["b"]
    assert not rep.complete


def test_extra_objects_at_destination_are_counted_not_classified():
    src = {"a": Obj("a", 1, E1)}
    dst = {"a": Obj("a", 1, E1), "x": Obj("x", 5, E2), "y": Obj("y", 6, E2)}
    rep = one(src, dst)
    assert rep.extra_at_destination == 2
    assert set(rep.categories) == {"a"}
    assert rep.complete


def test_complete_only_when_every_source_object_is_moved():
    src = {k: Obj(k, 1, E1) for k in ("a", "b", "c")}
    dst = dict(src)
    assert one(src, dst).complete
    del dst["c"]
    assert not one(src, dst).complete
    assert one({}, {"z": Obj("z", 1, E1)}).complete  # nothing to move


def test_counts_and_keys_over_a_mixed_listing():
    src = {
        "moved": Obj("moved", 1, E1),
        "pending": Obj("pending", 2, E1),
        "missing": Obj("missing", 3, E1),
        "differ": Obj("differ", 4, E1),
    }
    dst = {"moved": Obj("moved", 1, E1), "differ": Obj("differ", 5, E1), "extra": Obj("extra", 9, E1)}
    rep = classify(src, dst, {"pending": src_row(2, E1)}, {}, {staged_name("pending"): 2})
    assert rep.categories == {"moved": MOVED, "pending": PENDING, "missing": MISSING, "differ": DIFFER}
    assert rep.counts() == {MOVED: 1, PENDING: 1, MISSING: 1, DIFFER: 1}
    assert rep.keys(MISSING, DIFFER) == ["differ", "missing"]
    assert rep.extra_at_destination == 1
    assert rep.sizes == {"moved": 1, "pending": 2, "missing": 3, "differ": 4}
    assert not rep.complete


# -- the ledger rows a comparison keeps ----------------------------------------------------------
def test_source_rows_kept_for_pending_and_moved_objects_only():
    src = {"pend": Obj("pend", 5, E1), "moved": Obj("moved", 10, E1), "new": Obj("new", 10, E2),
           "gone": Obj("gone", 3, E1)}
    dst = {"moved": Obj("moved", 10, E1), "new": Obj("new", 10, E2)}
    rows = {"pend": src_row(5, E1), "moved": src_row(10, E1, "md5"), "new": src_row(10, E1), "gone": src_row(3, E1)}
    rep = one(src, dst, rows, staged={staged_name("pend"): 5})
    assert rep.categories == {"pend": PENDING, "moved": MOVED, "new": MOVED, "gone": MISSING}
    keep = src_rows_to_keep(rep, src, rows)
    # a row that still covers the object stays as it is; one for another version is replaced by
    # the listing's (verified at the destination); a missing object's row goes, so it moves again
    assert keep == {"pend": rows["pend"], "moved": rows["moved"], "new": (10, E2, "destination", "")}


def test_destination_rows_kept_only_as_the_object_is_there_and_lost_ones_come_from_the_listing():
    src = {"ok": Obj("ok", 10, E1), "orig": Obj("orig", 7, E1), "edited": Obj("edited", 10, E1),
           "lost": Obj("lost", 10, MULTI), "lost_other": Obj("lost_other", 10, "kms-etag"),
           "missing": Obj("missing", 4, E1)}
    dst = {k: Obj(k, o.size, o.etag) for k, o in src.items() if k != "missing"}
    rows = {"ok": dest_row(10, E1, E1), "orig": (7, "", "", ""),  # the original's two-column ledger: size only
            "edited": dest_row(10, E2, E1), "missing": dest_row(4, E1, E1)}
    rep = one(src, dst, dest_rows=rows)
    keep = dest_rows_to_keep(rep, src, dst, rows)
    assert keep == {"ok": rows["ok"], "orig": rows["orig"],
                    "edited": (10, E1, "md5", E1),  # a row of another ETag is dropped, then ledgered from the listing
                    "lost": (10, MULTI, "multipart", MULTI)}
    # an ETag that proves nothing about the bytes (SSE-KMS) is not ledgered; the destination side confirms it
    assert "lost_other" not in keep and "missing" not in keep


def test_md5_etags_that_differ_are_compared_by_size_where_a_sides_etags_are_no_md5s():
    """Two ETags of an MD5's form that differ: the objects differ, unless a side's ETags are no
    MD5s (SSE-KMS); then the same size moves it, where the ledgers know no other version."""
    src, dst = {"k": Obj("k", 10, E1)}, {"k": Obj("k", 10, E2)}
    rep = classify(src, dst, {}, {}, {})
    assert rep.categories == {"k": DIFFER} and rep.by_etag == ["k"]
    for opaque in ((True, False), (False, True)):
        assert classify(src, dst, {}, {}, {}, opaque=opaque).categories == {"k": MOVED}
    # ... but a ledger that moved another version still says it differs
    other = {"k": dest_row(10, md5("older"), md5("older source"))}
    assert classify(src, dst, {}, other, {}, opaque=(False, True)).categories == {"k": DIFFER}
    assert classify(src, {"k": Obj("k", 11, E2)}, {}, {}, {}, opaque=(True, True)).categories == {"k": DIFFER}
