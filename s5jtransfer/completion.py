"""When the destination side's --once run is done: every source object confirmed at the
destination, or set aside (given up) by either side after its bounded tries."""

from __future__ import annotations

import time

from . import s3
from .index import Index
from .progress import SRC_STATE, done_since, read_state
from .runtime import Stopper, interruptible
from .shard import owns


def ends_given_up(gave: int, in_flight: int, missing: int | None) -> bool:
    """A --once run ends with GAVE_UP: nothing in flight, and what is still missing is only what
    either side set aside (gave)."""
    return bool(gave) and not in_flight and missing is not None and 0 < missing <= gave


class SourceCheck:
    """(source objects, how many are not yet confirmed here), or None while it cannot be known."""

    def __init__(self, cfg, stopper: Stopper, index: Index) -> None:
        self.cfg = cfg
        self.stopper = stopper
        self.index = index

    def by_source_state(self, since: float, gave: int) -> tuple[int, int] | None:
        """By the source side's word (supervised): its state file, written after `since`, counts
        every listed object ledgered (or set aside there); every ledgered object is confirmed
        here but the `gave` this side set aside."""
        state = read_state(SRC_STATE)
        ledgered = self._all_ledgered(state, since)
        if ledgered is None:
            return None
        total = int(state.get("total_objects") or ledgered)
        return total, total - ledgered + gave

    def worth_listing(self) -> bool:
        """Whether a check by listing can succeed now. While the source side reports objects still
        to stage (its state file), listing the source would only cost requests."""
        state = read_state(SRC_STATE)
        if not state or time.time() - float(state.get("updated") or 0) > 10 * self.cfg.settings.max_poll_interval + 60:
            return True  # no source side running here (or it stopped long ago): check for ourselves
        return self._all_ledgered(state) is not None

    def _all_ledgered(self, state: dict | None, since: float = 0.0) -> int | None:
        """How many listed objects the source side ledgered, when its state (written after
        `since`) counts every listed object ledgered or set aside and this side has absorbed as
        many ledger rows; None otherwise."""
        done = done_since(state, since)
        return done if done is not None and self.index.totals().src_objects >= done else None

    def by_listing(self) -> tuple[int, int]:
        """One listing of the source (this host's shard of it), streamed into the index and joined
        with the destination ledger (ledger.dest_done's rule, in SQL)."""
        keep = None if self.cfg.shard_spec is None else (lambda key: owns(key, self.cfg.shard_spec))

        def count(objs) -> tuple[int, int]:
            with self.index.lock:
                total, _bytes = self.index.load_listing("listed_check", objs, keep)
                missing = self.index.db.execute(
                    "SELECT count(*) FROM listed_check l LEFT JOIN dest d ON d.key = l.key WHERE d.key IS "
                    "NULL OR NOT (d.size = l.size AND (d.source_etag = l.etag OR d.source_etag = '' OR l.etag = ''))"
                ).fetchone()[0]
                self.index.drop_listing("listed_check")
            return total, missing

        def listed() -> tuple[tuple[int, int], int]:
            try:
                return s3.listing_any(self.cfg.source, self.cfg.settings, count)
            except Exception as exc:  # noqa: BLE001 - named for the source, not this side's destination
                raise s3.connect_error(exc, self.cfg.source) from None

        return interruptible(listed, self.stopper)[0]
