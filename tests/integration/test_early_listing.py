"""The final comparison of sync_mvol.py --once (supervisor.EarlyListings): the source may be
listed early, once the source side has staged everything; the destination only after the
destination side finished, so a store that acknowledges an object and then loses it is caught by
the run that moved it."""

from __future__ import annotations

import json
import threading
import time

import pytest

from conftest import wait_for
from faultproxy import FaultProxy
from s5jtransfer import config, supervisor
from s5jtransfer.index import Index
from s5jtransfer.progress import SRC_STATE


def write_state(path: str, total: int, done: int) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump({"updated": time.time(), "total_objects": total, "done_objects": done,
                   "total_bytes": 10_000, "done_bytes": 10_000}, fh)


@pytest.fixture
def early(work, monkeypatch):
    monkeypatch.chdir(work.path)
    work.put_all({"a.bin": b"a" * 1000, "b.bin": b"b" * 2000})
    return work, config.load()


def test_the_source_is_listed_once_staged_and_the_destination_never_early(early):
    work, cfg = early
    index = Index()
    listings = supervisor.EarlyListings(cfg, index)
    listings.poll()
    assert listings._src is None  # no state file of this round yet
    write_state(SRC_STATE, 2, 2)
    wait_for(lambda: listings.poll() or listings.source_listed.is_set(), 30, "the early source listing")
    assert listings.result() is True
    db = index.db
    assert {k for k, in db.execute("SELECT key FROM listed_src")} == {"copy/a.bin", "copy/b.bin"} or \
        {k for k, in db.execute("SELECT key FROM listed_src")} == {"a.bin", "b.bin"}
    assert "x_listed_dst" not in [r[1] for r in db.execute("PRAGMA database_list")]  # the destination: not yet


def test_a_state_file_from_before_the_round_starts_nothing(early):
    work, cfg = early
    write_state(SRC_STATE, 2, 2)
    later = supervisor.EarlyListings(cfg, Index())  # a new round: the state above is older
    for _ in range(5):
        later.poll()
    assert later.result() is False and later._src is None


def test_an_object_the_destination_loses_after_confirming_it_is_moved_again_by_the_same_run(work):
    data = {"kept.bin": b"k" * 3000, "lost.bin": b"l" * 5000}
    work.put_all(data)
    lost = threading.Event()

    def lose_after_confirming(method, target, status, headers, body):
        # the destination answers the confirmation of lost.bin, then loses the object
        if method in ("HEAD", "GET") and "lost.bin" in target and status == 200 and not lost.is_set() \
                and f"/{work.dst}" in target:
            lost.set()
            work.server.client().delete_object(Bucket=work.dst, Key="copy/lost.bin")
        return None

    with FaultProxy(work.server.url, lie=lose_after_confirming) as link:
        work.cfg["transfer_settings"]["dest_endpoint_url"] = link.url
        work.write_config()
        r = work.run("sync_mvol.py", "--once", timeout=120)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert lost.is_set()
    assert work.dest_bytes("lost.bin") == data["lost.bin"]
    report = json.loads((work.path / "transfer_report.json").read_text())
    assert report["complete"] and report["verification_rounds"] >= 2
    assert report["rounds"][0]["missing"] + report["rounds"][0]["differ"] >= 1


def test_the_state_file_is_read_when_it_changes_not_at_every_poll(early, monkeypatch):
    work, cfg = early
    reads = []
    real = supervisor.read_state
    monkeypatch.setattr(supervisor, "read_state", lambda path: reads.append(path) or real(path))
    listings = supervisor.EarlyListings(cfg, Index())
    write_state(SRC_STATE, 2, 1)  # a round's state, with work left
    for _ in range(20):
        listings.poll()
    assert len(reads) == 1 and listings._src is None
    write_state(SRC_STATE, 2, 2)  # rewritten in place, the same size: everything staged
    wait_for(lambda: listings.poll() or listings.source_listed.is_set(), 30, "the early source listing")
    assert listings.result() is True
