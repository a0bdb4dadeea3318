"""runtime.Appender: when ledger rows reach the disk (the other side starts on them)."""

from __future__ import annotations

import time

from conftest import wait_for
from s5jtransfer.runtime import Appender


class FakeLedger:
    def __init__(self) -> None:
        self.batches: list[list[tuple]] = []

    def append(self, rows: list[tuple]) -> None:
        self.batches.append(list(rows))


def test_the_first_row_is_written_at_once_then_rows_are_batched():
    ledger = FakeLedger()
    app = Appender(ledger, max_age=60)
    app.add(("a",))
    assert ledger.batches == [[("a",)]]  # nothing waits for a batch to fill before the first object
    app.add(("b",))
    app.add(("c",))
    assert ledger.batches == [[("a",)]]  # within max_age of the last write: held for one batch
    app.flush()
    assert ledger.batches == [[("a",)], [("b",), ("c",)]]


def test_a_full_batch_is_written_at_once():
    ledger = FakeLedger()
    app = Appender(ledger, max_rows=3, max_age=60)
    for k in "abcd":
        app.add((k,))
    assert ledger.batches == [[("a",)], [("b",), ("c",), ("d",)]]


def test_timed_rows_never_wait_longer_than_max_age_for_another_add():
    ledger = FakeLedger()
    app = Appender(ledger, max_age=0.2, timed=True)
    app.add(("a",))
    app.add(("b",))  # the last row for a while: no add() will come to write it
    t = time.monotonic()
    wait_for(lambda: len(ledger.batches) == 2, 5, "the timer to write the held row")
    assert ledger.batches == [[("a",)], [("b",)]]
    assert time.monotonic() - t < 2
    app.flush()  # nothing left: no empty batch
    assert len(ledger.batches) == 2


def test_rows_standing_for_max_bytes_are_written_at_once():
    ledger = FakeLedger()
    app = Appender(ledger, max_age=60, max_bytes=100)
    app.add(("first", 1))  # the first row, at once
    app.add(("small", 40))
    app.add(("small2", 40))
    assert ledger.batches == [[("first", 1)]]  # 80 bytes held: they wait for a batch
    app.add(("large", 500))  # a large object is not held back: the other side starts on it
    assert ledger.batches == [[("first", 1)], [("small", 40), ("small2", 40), ("large", 500)]]
    app.add(("small3", 60))
    assert len(ledger.batches) == 2  # the count starts again after a write
    app.add(("small4", 40))
    assert ledger.batches[-1] == [("small3", 60), ("small4", 40)]


class FullDiskLedger(FakeLedger):
    """Appends fail (ENOSPC) until `full` is cleared, as on a full file system."""

    def __init__(self) -> None:
        super().__init__()
        self.full = True
        self.path = "src_ledger.csv"

    def append(self, rows: list[tuple]) -> None:
        if self.full:
            raise OSError(28, "No space left on device")
        super().append(rows)


def test_rows_that_cannot_be_written_are_held_in_order_and_written_later_never_dropped():
    import pytest

    ledger = FullDiskLedger()
    freed = []
    app = Appender(ledger, max_age=60, after_flush=freed.extend)
    with pytest.raises(OSError):
        app.add(("a", 1))  # the first row goes at once: the disk is full
    app.add(("b", 2))
    with pytest.raises(OSError):
        app.flush()
    assert app.held == 2 and ledger.batches == [] and freed == []  # nothing freed: nothing is on disk
    ledger.full = False
    app.flush()
    assert ledger.batches == [[("a", 1), ("b", 2)]] and freed == [("a", 1), ("b", 2)] and app.held == 0


def test_a_timed_flush_that_fails_keeps_its_rows_and_raises_nothing_in_its_thread():
    ledger = FullDiskLedger()
    app = Appender(ledger, max_age=0.05, timed=True)
    try:
        app.add(("a", 1))
    except OSError:
        pass
    ledger.full = True
    app.add(("b", 2))  # held for the timer, whose flush fails
    wait_for(lambda: app._timer is None, 5, "the timed flush")
    assert app.held == 2
    ledger.full = False
    app.flush()
    assert ledger.batches == [[("a", 1), ("b", 2)]]
