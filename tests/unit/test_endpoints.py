"""endpoints: which endpoints a cycle uses, and how long one that fails is set aside (Endpoints,
and its pure decisions due_for_probing and next_backoff)."""

from __future__ import annotations

import pytest

from s5jtransfer import endpoints
from s5jtransfer.config import Secret, Side
from s5jtransfer.errors import ConnectError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def eps(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(endpoints.time, "monotonic", clock)
    side = Side(name="source", bucket="b", prefix="", region="snow", access_key=Secret("a"),
                secret_key=Secret("b"), endpoints=("http://127.0.0.1:1", "http://127.0.0.1:2"))
    e = endpoints.Endpoints(side, settings=None)
    e.down: set[int] = set()
    monkeypatch.setattr(e, "_probe", lambda i: OSError("refused") if i in e.down else None)
    e.clock = clock
    return e


def test_a_failing_endpoint_is_set_aside_with_a_doubling_backoff(eps):
    eps.down = {1}
    assert eps.live() == [0]
    assert eps._aside[1][1] == endpoints.FIRST_BACKOFF
    eps.clock.now += 5
    assert eps.live() == [0]  # not due: not probed, backoff unchanged
    assert eps._aside[1][1] == endpoints.FIRST_BACKOFF
    eps.clock.now += 11
    assert eps.live() == [0]  # due, failed again: doubled
    assert eps._aside[1][1] == 2 * endpoints.FIRST_BACKOFF
    eps.down = set()
    eps.clock.now += 31
    assert eps.live() == [0, 1] and 1 not in eps._aside


def test_every_endpoint_down_does_not_grow_the_backoff_each_cycle(eps):
    """When all are set aside, each cycle asks them all anyway; failing then, before their
    backoff ran out, does not double it (it reached 10 minutes within seconds)."""
    eps.down = {0, 1}
    for _ in range(10):
        with pytest.raises(ConnectError, match="no source endpoint answers"):
            eps.live()
        eps.clock.now += 1
    assert all(backoff == endpoints.FIRST_BACKOFF for _until, backoff in eps._aside.values())
    eps.down = {0}  # the second comes back: used at the next cycle
    assert eps.live() == [1]


def test_a_single_endpoint_is_never_probed(eps, monkeypatch):
    eps.urls = eps.urls[:1]
    monkeypatch.setattr(eps, "_probe", lambda i: pytest.fail("probed"))
    assert eps.live() == [0]


# -- the decisions, with plain values ------------------------------------------------------------
def test_next_backoff_starts_at_15s_and_doubles_to_10_minutes():
    assert endpoints.next_backoff(None, forced=False) == 15.0
    seen, b = [], None
    for _ in range(8):
        b = endpoints.next_backoff(b, forced=False)
        seen.append(b)
    assert seen == [15.0, 30.0, 60.0, 120.0, 240.0, 480.0, 600.0, 600.0]


def test_next_backoff_of_a_forced_probe_stays_as_it_was():
    assert endpoints.next_backoff(None, forced=True) == 15.0  # set aside for the first time
    assert endpoints.next_backoff(15.0, forced=True) == 15.0
    assert endpoints.next_backoff(240.0, forced=True) == 240.0


def test_due_for_probing_waits_out_each_backoff_and_forces_all_when_every_one_is_aside():
    assert endpoints.due_for_probing(3, {}, 100.0) == ([0, 1, 2], False)
    assert endpoints.due_for_probing(3, {1: 115.0}, 100.0) == ([0, 2], False)
    assert endpoints.due_for_probing(3, {1: 100.0}, 100.0) == ([0, 1, 2], False)  # its time has come
    assert endpoints.due_for_probing(2, {0: 115.0, 1: 130.0}, 100.0) == ([0, 1], True)
    assert endpoints.due_for_probing(2, {0: 115.0, 1: 130.0}, 120.0) == ([0], False)
