"""How the source side hands its landed copies to the verifying pool (landing.Landing.landed):
small copies that need no request in batches, the rest a task each; every copy finished once."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from s5jtransfer import checksum, landing, plan
from s5jtransfer.landing import Flight, Landing


def make_landing(matched: bool = True, opaque: bool = False) -> Landing:
    checker = SimpleNamespace(trust=SimpleNamespace(matched=matched), opaque_seen=opaque)
    sync = SimpleNamespace(ledger=None, settings=SimpleNamespace(part_size=50 * 1024 * 1024), checker=checker)
    return Landing(sync)


def expect(land: Landing, partial: str, size: int, checksum: str = "") -> None:
    item = plan.Item(partial.rsplit("/", 1)[-1], size, "0" * 32, checksum)
    land.expect(partial, Flight(item, 0, None, partial, 1, size))


def watch(land: Landing, monkeypatch, hold: threading.Event | None = None):
    """Record each _finish call and each pool task; the first _finish waits for `hold`."""
    finished: list[str] = []
    tasks: list[str] = []
    submit = land.pool.submit

    def _finish(partial, ok, error):  # the name a task of its own is recorded under
        if hold is not None and not finished:
            hold.wait(10)
        finished.append(partial)

    def counted_submit(fn, *args):
        tasks.append(fn.__name__)
        return submit(fn, *args)

    monkeypatch.setattr(land, "_finish", _finish)
    monkeypatch.setattr(land.pool, "submit", counted_submit)
    return finished, tasks


def test_small_copies_are_finished_in_batches_and_each_once(monkeypatch):
    land = make_landing()
    hold = threading.Event()
    finished, tasks = watch(land, monkeypatch, hold)
    small = [f"/v/p/s{i}" for i in range(200)]
    for p in small:
        expect(land, p, 1000)
    for p in small:  # the first holds its batch: the others pile up behind it, no task each
        land.landed(p, True, "")
    hold.set()
    land.pool.shutdown(wait=True)
    assert sorted(finished) == sorted(small)  # each once
    assert tasks.count("_drain") < 5 and "_finish" not in tasks


def test_copies_that_may_ask_the_store_or_are_large_get_a_task_each(monkeypatch):
    land = make_landing()
    finished, tasks = watch(land, monkeypatch)
    expect(land, "/v/p/large", checksum.INLINE_BELOW)
    expect(land, "/v/p/named", 10, checksum="CRC32C")  # the listing names a checksum: a HeadObject
    land.landed("/v/p/large", True, "")
    land.landed("/v/p/named", True, "")
    land.landed("/v/p/unknown", True, "")  # no flight (reported twice): _finish ignores it
    land.pool.shutdown(wait=True)
    assert tasks == ["_finish", "_finish", "_finish"]
    assert sorted(finished) == ["/v/p/large", "/v/p/named", "/v/p/unknown"]


def test_at_a_store_whose_etags_have_not_matched_or_are_opaque_every_copy_gets_a_task(monkeypatch):
    for land in (make_landing(matched=False), make_landing(opaque=True)):
        finished, tasks = watch(land, monkeypatch)
        for i in range(3):
            expect(land, f"/v/p/s{i}", 10)
            land.landed(f"/v/p/s{i}", True, "")
        land.pool.shutdown(wait=True)
        assert tasks == ["_finish"] * 3 and len(finished) == 3


def test_a_copy_whose_finish_fails_does_not_stop_the_batch(monkeypatch, caplog):
    land = make_landing()
    done: list[str] = []

    def finish(partial, ok, error):
        if partial.endswith("s0"):
            raise RuntimeError("boom")
        done.append(partial)

    monkeypatch.setattr(land, "_finish", finish)
    for i in range(3):
        expect(land, f"/v/p/s{i}", 10)
        land.landed(f"/v/p/s{i}", True, "")
    land.pool.shutdown(wait=True)
    assert sorted(done) == ["/v/p/s1", "/v/p/s2"] and not land._draining
    assert "boom" in caplog.text
    assert landing.log.name == "s5jtransfer.src"
