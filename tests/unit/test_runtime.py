"""runtime.interruptible: a read-only step that a stop does not wait for."""

from __future__ import annotations

import threading
import time

import pytest

from s5jtransfer import runtime


def test_interruptible_returns_the_value_and_raises_the_error():
    stopper = runtime.Stopper()
    assert runtime.interruptible(lambda: 42, stopper) == 42

    def boom():
        raise KeyError("x")

    with pytest.raises(KeyError):
        runtime.interruptible(boom, stopper)


def test_interruptible_is_given_up_when_a_stop_is_asked_for():
    stopper = runtime.Stopper()
    release = threading.Event()
    threading.Timer(0.2, stopper.event.set).start()  # the stop, while the step still waits
    try:
        with pytest.raises(runtime.Interrupted):
            runtime.interruptible(lambda: release.wait(30), stopper)
    finally:
        release.set()


# -- bounded tries (tries.py) -----------------------------------------------------------------
def test_tries_back_off_then_give_up_after_max_tries_and_are_forgiven(tmp_path, monkeypatch):
    from s5jtransfer import tries
    from s5jtransfer.progress import MAX_TRIES

    monkeypatch.chdir(tmp_path)
    assert [tries.next_wait(n) for n in range(1, MAX_TRIES + 1)] == [1.0, 2.0, 4.0, 8.0, None]
    assert tries.next_wait(3, max_backoff=3.0) == 3.0
    given_up: dict[str, str] = {}
    t = tries.Tries(given_up)
    assert t.due("k", 0.0)
    for n in range(1, MAX_TRIES):
        assert t.failed("k", f"why {n}") is False
        assert not t.due("k", 0.0)  # held back
    assert t.failed("k", "the last why") is True
    assert given_up == {"k": "the last why"} and not t.due("k", 1e12)
    assert t.failed("other", "damaged", at_once=True) is True  # no backoff: set aside at once
    assert not t.asked_again()
    tries.ask_again()  # repair_ledger.py ran
    assert t.asked_again() and not t.asked_again()  # once
    t.forgive()
    assert given_up == {} and t.due("k", 0.0) and t.waiting == 0


def test_a_source_side_lists_again_only_when_its_pass_is_done_and_never_back_to_back():
    from types import SimpleNamespace

    from s5jtransfer.src_sync import IN_FLIGHT_POLL, CycleStats, next_pause

    settings = SimpleNamespace(max_poll_interval=60.0, poll_interval=5.0)
    sync = SimpleNamespace(relist_at=None, list_seconds=300.0)  # a huge prefix: five minutes a listing
    assert next_pause(CycleStats(todo=3, in_flight=2), settings, sync, True, 1.0) == IN_FLIGHT_POLL
    assert sync.relist_at is None  # work left: no listing due
    pause = next_pause(CycleStats(), settings, sync, True, 1.0)  # the pass is done
    due = sync.relist_at - time.monotonic()
    assert pause == 60.0 and 590 < due <= 600  # twice the listing's time, slept through in steps
    next_pause(CycleStats(), settings, sync, True, 1.0)
    assert abs(sync.relist_at - time.monotonic() - due) < 5  # a wake (objects handed back) does not move it
    once = SimpleNamespace(relist_at=None, list_seconds=1.0)
    assert next_pause(CycleStats(), settings, once, False, 1.0) == 60.0 and once.relist_at is None  # --once


def test_objects_waiting_for_space_are_logged_when_they_start_then_at_most_once_a_minute():
    from s5jtransfer.src_sync import WAITING_EVERY, say_waiting

    assert not say_waiting(0, None, 100.0)  # nothing waits: no line
    assert say_waiting(20_000, None, 100.0)  # the first time objects wait
    # staging stays full: their number changes at nearly every cycle (four a second), no line for it
    assert not any(say_waiting(19_000 + i, 100.0, 100.0 + 0.25 * i) for i in range(1, int(4 * WAITING_EVERY)))
    assert say_waiting(19_500, 100.0, 100.0 + WAITING_EVERY)  # a minute on, one line again
