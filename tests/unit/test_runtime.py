"""runtime.interruptible: a read-only step that a stop does not wait for."""

from __future__ import annotations

import threading

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
