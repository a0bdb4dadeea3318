"""Bounded tries of one object: when to try it again, and when to set it aside (give up)."""

from __future__ import annotations

import logging
import time

from .progress import MAX_TRIES

log = logging.getLogger("s5jtransfer.dest")
MAX_RETRY_BACKOFF = 60.0  # seconds; a failed try is followed by another after 1, 2, 4 ... up to this


def next_wait(tries: int, max_backoff: float = MAX_RETRY_BACKOFF) -> float | None:
    """Seconds to wait after the `tries`-th failed try of an object; None: give it up."""
    if tries >= MAX_TRIES:
        return None
    return min(2.0 ** (tries - 1), max_backoff)


class Tries:
    """Per key: failed tries so far and when the next may start; given_up (key -> why) is shared
    with the side's Progress, so the state file names what was set aside."""

    def __init__(self, given_up: dict[str, str]) -> None:
        self.given_up = given_up
        self._at: dict[str, tuple[float, int]] = {}  # key -> (not before, failed tries)

    def due(self, key: str, now: float) -> bool:
        return key not in self.given_up and self._at.get(key, (0.0, 0))[0] <= now

    def failed(self, key: str, why: str, at_once: bool = False) -> bool:
        """One more failed try; True when the key is now given up (logged once, naming why)."""
        n = MAX_TRIES if at_once else self._at.get(key, (0.0, 0))[1] + 1
        wait = next_wait(n)
        if wait is None:
            self._at.pop(key, None)
            self.given_up[key] = why
            log.error("gave up on %r after %d tries: %s; it stays on its staging volume and is tried again after "
                      "a restart or repair_ledger.py", key, n, why)
            return True
        self._at[key] = (time.monotonic() + wait, n)
        log.warning("%r: %s (try %d of %d; again in %.0fs)", key, why, n, MAX_TRIES, wait)
        return False

    def succeeded(self, key: str) -> None:
        self._at.pop(key, None)

    def forgive(self) -> None:
        """The ledgers changed (repair_ledger.py): every key set aside gets its tries again."""
        if self.given_up:
            log.info("the ledgers changed: the %d objects set aside are tried again", len(self.given_up))
            self.given_up.clear()
