"""The endpoints of one side (a Snowball cluster has several): which answer, and a client for each."""

from __future__ import annotations

import logging
import time

from . import s3
from .config import Settings, Side
from .errors import ConnectError

log = logging.getLogger("s5jtransfer.endpoints")
FIRST_BACKOFF = 15.0
MAX_BACKOFF = 600.0


def due_for_probing(count: int, aside_until: dict[int, float], now: float) -> tuple[list[int], bool]:
    """Pure: the endpoints (of count) to probe now, and whether that is forced. One set aside
    waits until its time has come; when every one is set aside, all are probed rather than stall."""
    due = [i for i in range(count) if aside_until.get(i, 0.0) <= now]
    if due:
        return due, False
    return list(range(count)), True


def next_backoff(previous: float | None, forced: bool) -> float:
    """Pure: how long an endpoint that failed its probe is set aside. previous: its backoff when
    it was already set aside (None: it was in use). 15 s, doubling at each failed probe up to
    10 min; a probe forced before the backoff ran out (every endpoint aside) leaves it as it was."""
    if previous is None:
        return FIRST_BACKOFF
    if forced:
        return previous
    return min(previous * 2, MAX_BACKOFF)


class Endpoints:
    """Work is spread over every endpoint that answers; one that stops answering is set aside,
    logged, and probed again after a backoff (15 s doubling to 10 min)."""

    def __init__(self, side: Side, settings: Settings, pool: int = 10) -> None:
        self.side = side
        self.settings = settings
        self.pool = pool
        self.urls: list[str | None] = list(side.endpoints) or [None]
        self._clients: dict[int, object] = {}
        self._probes: dict[int, object] = {}
        self._aside: dict[int, tuple[float, float]] = {}  # index -> (until, backoff)

    def name(self, i: int) -> str:
        return self.urls[i] or f"AWS {self.side.region}"

    def client(self, i: int = 0):
        if i not in self._clients:
            self._clients[i] = s3.client(self.side, self.settings, index=i, pool=self.pool)
        return self._clients[i]

    def _probe(self, i: int) -> BaseException | None:
        if i not in self._probes:
            self._probes[i] = s3.client(self.side, self.settings, index=i, probe=True)
        try:
            self._probes[i].head_bucket(Bucket=self.side.bucket)
            return None
        except Exception as exc:  # noqa: BLE001 - any failure sets the endpoint aside
            return exc

    def live(self) -> list[int]:
        """Indexes of the endpoints to use this cycle (a single endpoint is never probed)."""
        if len(self.urls) == 1:
            return [0]
        now = time.monotonic()
        due, forced = due_for_probing(len(self.urls), {i: until for i, (until, _b) in self._aside.items()}, now)
        out = []
        for i in due:
            exc = self._probe(i)
            if exc is None:
                if i in self._aside:
                    log.info("%s endpoint %s answers again; back in use", self.side.name, self.name(i))
                    del self._aside[i]
                out.append(i)
                continue
            backoff = next_backoff(self._aside[i][1] if i in self._aside else None, forced)
            self._aside[i] = (now + backoff, backoff)
            log.warning("%s endpoint %s set aside for %.0fs: %s", self.side.name, self.name(i), backoff,
                        s3.describe_error(exc, self.side, at=self.name(i)))
        if not out:
            raise ConnectError(f"no {self.side.name} endpoint answers ({', '.join(self.name(i) for i in due)})")
        return out

    def failed(self, i: int, why: str) -> None:
        """Set an endpoint aside after a failure seen during a transfer."""
        if len(self.urls) == 1 or i in self._aside:
            return
        self._aside[i] = (time.monotonic() + FIRST_BACKOFF, FIRST_BACKOFF)
        log.warning("%s endpoint %s set aside for %.0fs: %s", self.side.name, self.name(i), FIRST_BACKOFF, why)


def split_by_bytes(items: list, sizes: list[int], n: int) -> list[list]:
    """Spread items over n groups, balancing bytes (largest first to the lightest group)."""
    groups: list[list] = [[] for _ in range(n)]
    loads = [0] * n
    for item, size in sorted(zip(items, sizes), key=lambda t: -t[1]):
        j = loads.index(min(loads))
        groups[j].append(item)
        loads[j] += size
    return groups
