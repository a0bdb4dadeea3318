"""Progress of one side: totals, rate over the last minute, ETA, and the state file status.py reads."""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque

from .atomic import write_atomic

SRC_STATE = ".src_state.json"
DEST_STATE = ".dest_state.json"
WINDOW = 60.0
MAX_TRIES = 5  # tries of one object (copies that fail or never verify, uploads that fail or never confirm) before it is set aside
GIVEN_UP_SHOWN = 100  # objects set aside that the state file names (all are counted)
GAVE_UP = 4  # exit code: done, except for objects set aside after MAX_TRIES (named in the log and report)


class Progress:
    """Counts objects and bytes done against the total known; thread-safe."""

    def __init__(self, side: str, state_file: str | None, window: float = WINDOW) -> None:
        self.side = side
        self.state_file = state_file
        self.window = window
        self.total = self.total_bytes = 0
        self.done = self.done_bytes = 0
        self.retries = 0
        self.given_up: dict[str, str] = {}  # key -> why: set aside after bounded tries (see MAX_TRIES)
        self.started = time.time()
        self._samples: deque[tuple[float, int, int]] = deque()
        self._lock = threading.Lock()
        self._last_write = 0.0
        # what the side says of its health (health.py: volumes, what it waits for), into the state file
        self.health: dict = {}
        # cumulative counters (metrics.py): never lower within the working folder, so seeded from
        # the side's last state file; done/done_bytes are gauges (set_totals lowers them)
        self.objects_total = self.bytes_total = 0
        self._retries_before = 0  # retries_total of the earlier runs in this folder; self.retries: this run's
        self.last_progress = self.started  # when the last object was counted (this process's start if none)
        self._seed()

    def _seed(self) -> None:
        prev = read_state(self.state_file) if self.state_file else None
        if not isinstance(prev, dict) or prev.get("side") != self.side:
            return
        try:
            self.objects_total = max(0, int(prev.get("objects_total") or 0))
            self.bytes_total = max(0, int(prev.get("bytes_total") or 0))
            self._retries_before = max(0, int(prev.get("retries_total") or 0))
        except (TypeError, ValueError):  # a state file edited by hand: the counters start again
            self.objects_total = self.bytes_total = self._retries_before = 0

    def set_totals(self, total: int, total_bytes: int, done: int, done_bytes: int) -> None:
        with self._lock:
            self.total, self.total_bytes = total, total_bytes
            self.done, self.done_bytes = done, done_bytes
            self._sample()

    def add(self, objects: int, nbytes: int) -> None:
        with self._lock:
            self.done += objects
            self.done_bytes += nbytes
            self._sample()

    def counted(self, objects: int, nbytes: int) -> None:
        """Objects done for good (verified and ledgered by the source side, confirmed by the
        destination side): the done gauge, and the cumulative counters the metrics publish."""
        self.add(objects, nbytes)
        with self._lock:
            self.objects_total += objects
            self.bytes_total += nbytes
            self.last_progress = time.time()

    def _sample(self) -> None:
        now = time.monotonic()
        self._samples.append((now, self.done, self.done_bytes))
        while len(self._samples) > 2 and now - self._samples[0][0] > self.window:
            self._samples.popleft()

    def rates(self) -> tuple[float, float]:
        """(objects/s, bytes/s) over the last minute (or since the first sample)."""
        with self._lock:
            if len(self._samples) < 2:
                return 0.0, 0.0
            t0, d0, b0 = self._samples[0]
            now = time.monotonic()
            span = max(now - t0, 1e-3)
            # never below 0: objects deleted at the source lower the done count, not the rate
            return max(0.0, (self.done - d0) / span), max(0.0, (self.done_bytes - b0) / span)

    def eta(self) -> float | None:
        """Seconds left at the last minute's rates: the longer of what the bytes left and the
        objects left need (many small or empty objects cost per object, not per byte); None
        when something is left and nothing moved in the last minute."""
        ops, bps = self.rates()
        with self._lock:
            left_bytes, left_objects = self.total_bytes - self.done_bytes, self.total - self.done
        out = 0.0
        for left, rate in ((left_bytes, bps), (left_objects, ops)):
            if left > 0:
                if rate <= 0:
                    return None
                out = max(out, left / rate)
        return out

    def snapshot(self) -> dict:
        ops, bps = self.rates()
        return {"side": self.side, "pid": os.getpid(), "updated": time.time(), "started": self.started,
                "total_objects": self.total, "total_bytes": self.total_bytes, "done_objects": self.done,
                "done_bytes": self.done_bytes, "objects_per_s": round(ops, 3), "bytes_per_s": round(bps, 1),
                "eta_s": None if self.eta() is None else round(self.eta(), 1), "retries": self.retries,
                "given_up_count": len(self.given_up),
                "given_up": dict(sorted(self.given_up.items())[:GIVEN_UP_SHOWN]),
                "objects_total": self.objects_total, "bytes_total": self.bytes_total,
                "retries_total": self._retries_before + self.retries, "last_progress": self.last_progress,
                **self.health}

    def line(self) -> str:
        ops, bps = self.rates()
        pct = 100.0 * self.done_bytes / self.total_bytes if self.total_bytes else 100.0
        eta = self.eta()
        return (f"{self.done}/{self.total} objects, {fmt_bytes(self.done_bytes)} of {fmt_bytes(self.total_bytes)} "
                f"({pct:.1f}%); last minute {fmt_bytes(bps)}/s, {ops:.1f} objects/s; ETA {fmt_eta(eta)}")

    def write_state(self, force: bool = False) -> None:
        """Write the state file (atomically), at most once a second unless forced."""
        if not self.state_file:
            return
        now = time.monotonic()
        if not force and now - self._last_write < 1.0:
            return
        self._last_write = now
        try:
            write_atomic(self.state_file, json.dumps(self.snapshot()), tmp=f"{self.state_file}.{os.getpid()}.tmp")
        except OSError:
            pass


def read_state(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def done_since(state: dict | None, since: float) -> int | None:
    """How many of a side's listed objects are done when its state file was written after `since`
    (wall clock) and counts every listed object done or set aside (given up); None otherwise (no
    state, an older one, work left)."""
    if not state or float(state.get("updated") or 0) <= since:
        return None
    total = int(state.get("total_objects") or 0)
    done = int(state.get("done_objects") or 0)
    return done if done + int(state.get("given_up_count") or 0) >= total else None


def given_up(*states: dict | None) -> dict[str, str]:
    """The objects the sides' state files name as set aside, key -> why."""
    out: dict[str, str] = {}
    for st in states:
        if st and isinstance(st.get("given_up"), dict):
            out.update({str(k): str(v) for k, v in st["given_up"].items()})
    return out


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def fmt_eta(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
