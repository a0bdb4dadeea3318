"""Bounded tries of one object: when to try it again, and when to set it aside (give up)."""

from __future__ import annotations

import logging
import os
import time
from typing import Callable

from .atomic import write_atomic
from .progress import MAX_TRIES

log = logging.getLogger("s5jtransfer.tries")
MAX_RETRY_BACKOFF = 60.0  # seconds; a failed try is followed by another after 1, 2, 4 ... up to this
ASK_AGAIN = ".retry_set_aside"  # repair_ledger.py rewrites it: running sides try what they set aside again


def ask_again() -> None:
    """Tell the sides running in this folder to try the objects they set aside again."""
    write_atomic(ASK_AGAIN, f"{time.time()}\n")


def _asked_at() -> int | None:
    try:
        return os.stat(ASK_AGAIN).st_mtime_ns
    except OSError:
        return None


def next_wait(tries: int, max_backoff: float = MAX_RETRY_BACKOFF) -> float | None:
    """Seconds to wait after the `tries`-th failed try of an object; None: give it up."""
    if tries >= MAX_TRIES:
        return None
    return min(2.0 ** (tries - 1), max_backoff)


class Tries:
    """Per key: failed tries so far and when the next may start; given_up (key -> why) is shared
    with the side's Progress, so the state file names what was set aside. A failed try whose why
    satisfies quiet_when is logged at debug level (one warning elsewhere speaks for many such
    tries: s5cmd.failed_with_its_s5cmd); it counts all the same, and giving up is always logged."""

    def __init__(self, given_up: dict[str, str], quiet_when: Callable[[str], bool] | None = None) -> None:
        self.given_up = given_up
        self.quiet_when = quiet_when
        self._at: dict[str, tuple[float, int]] = {}  # key -> (not before, failed tries)
        self._asked = _asked_at()

    def asked_again(self) -> bool:
        """True once after repair_ledger.py asked the sides to try again (tries.ask_again)."""
        now = _asked_at()
        if now == self._asked:
            return False
        self._asked = now
        return True

    @property
    def waiting(self) -> int:
        """Keys holding back after a failed try."""
        return len(self._at)

    def due(self, key: str, now: float) -> bool:
        return key not in self.given_up and self._at.get(key, (0.0, 0))[0] <= now

    def failed(self, key: str, why: str, at_once: bool = False, what: str = "") -> bool:
        """One more failed try; True when the key is now given up (logged once, naming why).
        at_once: no other try can help (why says what must change first). what: the warning's
        sentence for a try that is followed by another (default: key: why)."""
        n = MAX_TRIES if at_once else self._at.get(key, (0.0, 0))[1] + 1
        wait = next_wait(n)
        if wait is None:
            self._at.pop(key, None)
            self.given_up[key] = why
            log.error("gave up on %r %s: %s; it is tried again after a restart or repair_ledger.py",
                      key, "at once" if at_once else f"after {n} tries", why)
            return True
        self._at[key] = (time.monotonic() + wait, n)
        level = logging.DEBUG if self.quiet_when is not None and self.quiet_when(why) else logging.WARNING
        log.log(level, "%s (try %d of %d; again in %.3gs)", what or f"{key!r}: {why}", n, MAX_TRIES, wait)
        return False

    def succeeded(self, key: str) -> None:
        self._at.pop(key, None)

    def forgive(self) -> None:
        """The ledgers changed, or repair_ledger.py ran: every key set aside gets its tries again."""
        self._at.clear()
        if self.given_up:
            log.info("the %d objects set aside are tried again", len(self.given_up))
            self.given_up.clear()
