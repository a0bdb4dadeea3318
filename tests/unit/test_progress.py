"""progress.Progress: rates and the ETA."""

from __future__ import annotations

import pytest

from s5jtransfer import progress


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    return now


def test_eta_counts_objects_left_as_well_as_bytes(clock):
    """Thousands of empty objects left: the bytes say nothing is left, the objects do not."""
    p = progress.Progress("source", None)
    p.set_totals(total=1000, total_bytes=100, done=0, done_bytes=0)
    clock[0] += 10
    p.add(100, 100)  # 10 objects/s, and every byte is done
    assert p.eta() == pytest.approx(90.0)


def test_eta_follows_the_bytes_when_they_take_longer(clock):
    p = progress.Progress("source", None)
    p.set_totals(total=10, total_bytes=10_000, done=0, done_bytes=0)
    clock[0] += 10
    p.add(5, 1_000)  # objects: 1 s left; bytes: 90 s left
    assert p.eta() == pytest.approx(90.0)


def test_eta_is_unknown_when_nothing_moved_and_zero_when_done(clock):
    p = progress.Progress("source", None)
    p.set_totals(total=10, total_bytes=0, done=0, done_bytes=0)
    clock[0] += 10
    assert p.eta() is None
    p.add(10, 0)
    assert p.eta() == 0.0
