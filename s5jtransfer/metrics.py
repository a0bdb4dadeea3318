"""Prometheus metrics of a working folder, read from the two sides' state files (so one writer
publishes both sides, under sync_mvol.py or not): the collector, and the writer that publishes it
as a text file for node_exporter and, optionally, over HTTP. No label ever carries an object key."""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable, Iterator

from prometheus_client import CollectorRegistry, start_http_server, write_to_textfile
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .progress import DEST_STATE, SRC_STATE, read_state

log = logging.getLogger(__name__)

EVERY = 5.0  # seconds between two writes of the text file
UP_WITHIN = 120.0  # a side is up when its process runs and its state file is this recent
SIDES = (("source", SRC_STATE), ("destination", DEST_STATE))
USABLE = ("ok", "full")  # the volume states (state file's "volumes") a side can still use

# metric (without _total for counters), the state file's key, help
COUNTERS = (
    ("s5jtransfer_objects", "objects_total",
     "Objects done for good: verified and ledgered (source), confirmed (destination); never lower in a folder"),
    ("s5jtransfer_bytes", "bytes_total", "Bytes of the objects counted in s5jtransfer_objects_total"),
    ("s5jtransfer_retries", "retries_total", "Failed tries: copies that failed or did not verify (source), "
                                             "uploads that failed or did not confirm (destination)"),
)
GAUGES = (
    ("s5jtransfer_objects_listed", "total_objects", "Objects of the source's last listing (what the side must do)"),
    ("s5jtransfer_bytes_listed", "total_bytes", "Bytes of the objects in s5jtransfer_objects_listed"),
    ("s5jtransfer_objects_done", "done_objects", "Listed objects the side's ledger holds (lowered when objects "
                                                 "are handed back)"),
    ("s5jtransfer_bytes_done", "done_bytes", "Bytes of the objects in s5jtransfer_objects_done"),
    ("s5jtransfer_set_aside_objects", "given_up_count", "Objects set aside after their bounded tries"),
    ("s5jtransfer_last_progress_timestamp_seconds", "last_progress",
     "When the side last counted an object (its process's start if none since)"),
)
VOLUME_GAUGES = (
    ("s5jtransfer_volume_free_bytes", "free_bytes", "Free bytes of a staging volume's file system"),
    ("s5jtransfer_staged_bytes", "staged_bytes", "Bytes staged on a staging volume"),
)


def alive(pid: object) -> bool:
    """Whether a process of this host runs with this PID (a zombie does not)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True  # another user's process: it runs
    except (OSError, OverflowError):
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as fh:
            return fh.read().rpartition(")")[2].split()[:1] != ["Z"]
    except OSError:
        return True  # no /proc: the signal's answer stands


def _num(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def is_up(state: dict | None, now: float, running: Callable[[object], bool], up_within: float = UP_WITHIN) -> bool:
    """A side is up when its state file names a running process and was written in the last up_within seconds."""
    if not state:
        return False
    updated = _num(state.get("updated"))
    return updated is not None and now - updated <= up_within and running(state.get("pid"))


def side_complete(state: dict | None, listed: float) -> bool:
    """The side's own word (its health's "complete") when it gives one; else every one of the
    `listed` objects done and none set aside."""
    if not state:
        return False
    if isinstance(state.get("complete"), bool):
        return state["complete"]
    done, aside = _num(state.get("done_objects")) or 0.0, _num(state.get("given_up_count")) or 0.0
    return done >= listed and aside == 0


def complete(src: dict | None, dest: dict | None) -> bool:
    """The transfer is complete: both sides are (side_complete), against the source's listed total."""
    if not src or not dest:
        return False
    listed = _num(src.get("total_objects")) or 0.0
    return side_complete(src, listed) and side_complete(dest, max(listed, _num(dest.get("total_objects")) or 0.0))


def families(states: dict[str, dict | None], now: float, running: Callable[[object], bool] = alive,
             up_within: float = UP_WITHIN) -> list[Metric]:
    """The metrics of both sides' states (side -> its state file's dict, or None when there is none)."""
    side = ["side"]
    counters = [(CounterMetricFamily(name, doc, labels=side), key) for name, key, doc in COUNTERS]
    gauges = [(GaugeMetricFamily(name, doc, labels=side), key) for name, key, doc in GAUGES]
    up = GaugeMetricFamily("s5jtransfer_up", "1 when the side's process runs and wrote its state file in the last "
                                             f"{up_within:.0f}s", labels=side)
    stalled = GaugeMetricFamily("s5jtransfer_stalled", "1 when the side says it is stalled (work queued, nothing "
                                                       "moved for stall_warning_seconds)", labels=side)
    per_volume = [(GaugeMetricFamily(name, doc, labels=["side", "volume"]), key) for name, key, doc in VOLUME_GAUGES]
    usable = GaugeMetricFamily("s5jtransfer_volume_usable", "1 when the side can use the staging volume (ok or full), "
                                                            "0 when read-only, missing or too small",
                               labels=["side", "volume"])
    for name, state in states.items():
        up.add_metric([name], 1.0 if is_up(state, now, running, up_within) else 0.0)
        if not state:
            continue
        for family, key in counters + gauges:
            value = _num(state.get(key))
            if value is not None:
                family.add_metric([name], value)
        if "stalled_seconds" in state:
            stalled.add_metric([name], 0.0 if state["stalled_seconds"] is None else 1.0)
        _volumes(name, state.get("volumes"), per_volume, usable)
    done = GaugeMetricFamily("s5jtransfer_complete", "1 when every listed source object is confirmed at the "
                                                     "destination and none is set aside")
    done.add_metric([], 1.0 if complete(states.get("source"), states.get("destination")) else 0.0)
    out = [f for f, _k in counters + gauges] + [up, stalled, *(f for f, _k in per_volume), usable, done]
    return [f for f in out if f.samples]


def _volumes(side: str, volumes: object, per_volume: list, usable: GaugeMetricFamily) -> None:
    if not isinstance(volumes, list):
        return
    for v in volumes:
        if not isinstance(v, dict) or not isinstance(v.get("path"), str):
            continue
        for family, key in per_volume:
            value = _num(v.get(key))
            if value is not None:
                family.add_metric([side, v["path"]], value)
        if isinstance(v.get("state"), str):
            usable.add_metric([side, v["path"]], 1.0 if v["state"] in USABLE else 0.0)


class StateCollector(Collector):
    """Both sides' metrics, read from their state files at each collection (each write, each scrape)."""

    def __init__(self, folder: str | None = None, up_within: float = UP_WITHIN) -> None:
        folder = os.path.abspath(folder or os.getcwd())  # the working folder, whatever the cwd later
        self.paths = {side: os.path.join(folder, name) for side, name in SIDES}
        self.up_within = up_within
        self.ended: set[int] = set()  # processes that are ending: not up, whatever their state file says

    def collect(self) -> Iterator[Metric]:
        states = {}
        for side, path in self.paths.items():
            state = read_state(path)
            states[side] = state if isinstance(state, dict) else None
        yield from families(states, time.time(), lambda pid: pid not in self.ended and alive(pid), self.up_within)


class MetricsWriter:
    """Writes the collector's metrics to `path` (atomically: write_to_textfile writes a temporary
    file beside it and renames it) every EVERY seconds and at close(), and serves them on
    0.0.0.0:`port` when `port` is set and free. A failure is logged once and never stops the side."""

    def __init__(self, path: str | None, port: int = 0, collector: StateCollector | None = None,
                 every: float = EVERY) -> None:
        self.path, self.port, self.every = path, port, every
        self.collector = collector or StateCollector()
        self.registry = CollectorRegistry(auto_describe=False)  # no process or platform metrics: only ours
        self.registry.register(self.collector)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._server = None
        self._failing = False
        self._port_said = False

    def start(self) -> MetricsWriter:
        self.tick()
        self._thread = threading.Thread(target=self._loop, name="metrics", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self.tick()

    def tick(self) -> None:
        if self.port and self._server is None:
            self._serve()
        self.write()

    def write(self) -> None:
        if not self.path:
            return
        try:
            write_to_textfile(self.path, self.registry)
        except Exception as exc:  # noqa: BLE001 - metrics never stop a side
            if not self._failing:
                log.warning("cannot write the metrics file %s (%s); the transfer goes on, the metrics are written "
                            "again once it can be", self.path, getattr(exc, "strerror", None) or exc)
            self._failing = True
        else:
            self._failing = False

    def _serve(self) -> None:
        """Serve /metrics unless another process of the folder does (the other side, sync_mvol.py);
        tried again at each tick, so one of the scripts still running takes over when it ends."""
        try:
            self._server, _thread = start_http_server(self.port, addr="0.0.0.0", registry=self.registry)
        except OSError as exc:
            if not self._port_said:
                self._port_said = True
                log.info("metrics: port %d is taken (%s), most likely by the other side or sync_mvol.py, which "
                         "serve the same metrics; not serving them from this process", self.port,
                         exc.strerror or exc)
            return
        log.info("metrics: serving http://0.0.0.0:%d/metrics", self.port)

    def close(self) -> None:
        """The last write: this process is no longer up."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.collector.ended.add(os.getpid())
        self.write()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def start(path: str | None, port: int) -> MetricsWriter | None:
    """A writer for the running script, when config.yaml asks for metrics (metrics_file, metrics_port)."""
    if not path and not port:
        return None
    return MetricsWriter(path, port).start()
