"""The final comparison's early listings (supervisor.EarlyListings), against a real S3 server:
objects confirmed after the destination listing began are each seen by a HeadObject, never
taken on the destination ledger's word; whatever does not fit leaves the listing to the
comparison."""

from __future__ import annotations

import hashlib
import json
import re
import time

import pytest

from conftest import wait_for
from s5jtransfer import config, supervisor
from s5jtransfer.ledger import DEST_COLUMNS, DEST_LEDGER, Ledger
from s5jtransfer.progress import DEST_STATE, SRC_STATE


def write_state(path: str, total: int, done: int, total_bytes: int = 10_000, done_bytes: int = 10_000) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump({"updated": time.time(), "total_objects": total, "done_objects": done,
                   "total_bytes": total_bytes, "done_bytes": done_bytes}, fh)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.fixture
def early(work, monkeypatch):
    """A round whose source side has staged everything; returns (work, cfg, EarlyListings,
    dest ledger, objects): objects a.bin and b.bin are at the destination and ledgered."""
    monkeypatch.chdir(work.path)
    objects = {"a.bin": b"a" * 1000, "b.bin": b"b" * 2000, "c.bin": b"c" * 3000, "d.bin": b"d" * 4000}
    work.put_all(objects)
    c = work.server.client()
    ledger = Ledger(DEST_LEDGER, DEST_COLUMNS)
    for k in ("a.bin", "b.bin"):
        c.put_object(Bucket=work.dst, Key="copy/" + k, Body=objects[k])
    ledger.append([(k, len(objects[k]), md5(objects[k]), "md5", md5(objects[k])) for k in ("a.bin", "b.bin")])
    cfg = config.load()
    listings = supervisor.EarlyListings(cfg)
    write_state(SRC_STATE, 4, 4)
    return work, cfg, listings, ledger, objects


def start_destination_listing(listings) -> None:
    wait_for(lambda: listings.poll() or listings._dst is not None, 30, "the destination listing to start")
    assert listings.dest_listed.wait(30), "the destination listing never finished"


def test_objects_confirmed_after_the_destination_listing_are_each_checked_with_a_head(early):
    work, _cfg, listings, ledger, objects = early
    write_state(DEST_STATE, 4, 2)
    start_destination_listing(listings)
    c = work.server.client()
    # after the listing: c.bin uploaded and confirmed; b.bin replaced by a newer upload; the
    # ledger claims d.bin, which is not at the destination (a bug, or deleted at once)
    c.put_object(Bucket=work.dst, Key="copy/c.bin", Body=objects["c.bin"])
    newer_b = b"B" * 2000
    c.put_object(Bucket=work.dst, Key="copy/b.bin", Body=newer_b)
    ledger.append([("c.bin", 3000, md5(objects["c.bin"]), "md5", md5(objects["c.bin"])),
                   ("b.bin", 2000, md5(newer_b), "md5", md5(objects["b.bin"])),
                   ("d.bin", 4000, md5(objects["d.bin"]), "md5", md5(objects["d.bin"]))])
    log_start = work.server.log_path.stat().st_size
    src, dst = listings.result()
    assert sorted(src) == ["a.bin", "b.bin", "c.bin", "d.bin"]
    assert sorted(dst) == ["a.bin", "b.bin", "c.bin"]  # the HeadObject found no d.bin
    assert dst["a.bin"].etag == md5(objects["a.bin"])  # from the listing
    assert dst["b.bin"].etag == md5(newer_b)  # seen again after its row, not the listed version
    assert dst["c.bin"].size == 3000 and dst["c.bin"].etag == md5(objects["c.bin"])
    with open(work.server.log_path, "rb") as fh:
        fh.seek(log_start)
        log = fh.read().decode("utf-8", "replace")
    heads = sorted(re.findall(rf"HEAD /{work.dst}/copy/(\S+) HTTP", log))
    assert heads == ["b.bin", "c.bin", "d.bin"], log
    assert f"GET /{work.dst}?" not in log  # no listing at the end


def test_a_rewritten_destination_ledger_leaves_the_destination_to_the_comparison(early):
    work, _cfg, listings, ledger, objects = early
    write_state(DEST_STATE, 4, 2)
    start_destination_listing(listings)
    ledger.rewrite({"a.bin": (1000, md5(objects["a.bin"]), "md5", md5(objects["a.bin"]))})  # repair, say
    src, dst = listings.result()
    assert src is not None and dst is None


def test_more_objects_after_the_listing_than_it_may_check_leave_it_to_the_comparison(early, monkeypatch):
    work, _cfg, listings, ledger, objects = early
    monkeypatch.setattr(supervisor, "EARLY_HEADS", 1)
    write_state(DEST_STATE, 4, 3)
    start_destination_listing(listings)
    for k in ("c.bin", "d.bin"):
        work.server.client().put_object(Bucket=work.dst, Key="copy/" + k, Body=objects[k])
    ledger.append([(k, len(objects[k]), md5(objects[k]), "md5", md5(objects[k])) for k in ("c.bin", "d.bin")])
    src, dst = listings.result()
    assert src is not None and dst is None


@pytest.mark.parametrize("left", ["objects", "bytes"])
def test_the_destination_is_not_listed_early_while_much_is_left(early, monkeypatch, left):
    work, _cfg, listings, ledger, objects = early
    monkeypatch.setattr(supervisor, "EARLY_HEADS", 2)
    monkeypatch.setattr(supervisor, "EARLY_BYTES", 5000)
    if left == "objects":  # three left: more than it may check one by one
        write_state(DEST_STATE, 4, 1)
    else:  # two objects, but more bytes than may be left (the listing would be made long before the end)
        write_state(DEST_STATE, 4, 2, total_bytes=10_000, done_bytes=3000)
    wait_for(lambda: listings.poll() or listings.source_listed.is_set(), 30, "the source listing")
    for _ in range(5):
        listings.poll()
    assert listings._dst is None
    src, dst = listings.result()
    assert sorted(src) == ["a.bin", "b.bin", "c.bin", "d.bin"] and dst is None


def test_a_state_file_from_before_the_round_starts_nothing(early):
    work, cfg, _listings, _ledger, _objects = early
    write_state(DEST_STATE, 4, 4)
    later = supervisor.EarlyListings(cfg)  # a new round: the source state above is older
    for _ in range(5):
        later.poll()
    assert later.result() == (None, None)
