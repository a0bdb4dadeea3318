"""metrics.py: the collector over hand-written state files, the writer; progress.py's counters."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from s5jtransfer import metrics, progress

KEY = "secret/customer 'x'.bin"  # an object key: it must never reach a label


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def src_state(**over) -> dict:
    st = {"side": "source", "pid": os.getpid(), "updated": time.time(), "started": time.time() - 60,
          "total_objects": 10, "total_bytes": 1000, "done_objects": 10, "done_bytes": 1000, "retries": 2,
          "given_up_count": 0, "given_up": {}, "objects_total": 12, "bytes_total": 1200, "retries_total": 3,
          "last_progress": 1_700_000_000.5}
    st.update(over)
    return st


def dest_state(**over) -> dict:
    st = src_state(side="destination", objects_total=10, bytes_total=1000, retries_total=0, retries=0)
    st.update(over)
    return st


def write(folder, name: str, state: dict | str) -> None:
    (folder / name).write_text(state if isinstance(state, str) else json.dumps(state))


def scrape(folder, **kw) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels) -> value, through the text format and its parser."""
    reg = CollectorRegistry()
    reg.register(metrics.StateCollector(str(folder), **kw))
    text = generate_latest(reg).decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def side(name: str) -> tuple:
    return (("side", name),)


def test_both_sides_counters_gauges_up_and_complete(tmp_path):
    write(tmp_path, progress.SRC_STATE, src_state(given_up={KEY: "copy failed"}))
    write(tmp_path, progress.DEST_STATE, dest_state())
    m = scrape(tmp_path)
    assert m[("s5jtransfer_objects_total", side("source"))] == 12
    assert m[("s5jtransfer_bytes_total", side("source"))] == 1200
    assert m[("s5jtransfer_retries_total", side("source"))] == 3
    assert m[("s5jtransfer_objects_total", side("destination"))] == 10
    assert m[("s5jtransfer_objects_listed", side("destination"))] == 10
    assert m[("s5jtransfer_objects_done", side("source"))] == 10
    assert m[("s5jtransfer_bytes_done", side("source"))] == 1000
    assert m[("s5jtransfer_set_aside_objects", side("source"))] == 0
    assert m[("s5jtransfer_last_progress_timestamp_seconds", side("source"))] == 1_700_000_000.5
    assert m[("s5jtransfer_up", side("source"))] == 1
    assert m[("s5jtransfer_up", side("destination"))] == 1
    assert m[("s5jtransfer_complete", ())] == 1
    # only the side and volume labels, never a key
    assert {k for _n, labels in m for k, _v in labels} <= {"side"}
    assert not any(KEY in v for _n, labels in m for _k, v in labels)


def test_missing_torn_or_odd_state_files_are_down_without_an_exception(tmp_path):
    assert scrape(tmp_path) == {("s5jtransfer_up", side("source")): 0, ("s5jtransfer_up", side("destination")): 0,
                                ("s5jtransfer_complete", ()): 0}
    write(tmp_path, progress.SRC_STATE, json.dumps(src_state())[:40])  # torn
    write(tmp_path, progress.DEST_STATE, "[1, 2]")  # JSON, but no state
    m = scrape(tmp_path)
    assert m[("s5jtransfer_up", side("source"))] == 0 and m[("s5jtransfer_up", side("destination"))] == 0
    assert m[("s5jtransfer_complete", ())] == 0
    write(tmp_path, progress.SRC_STATE, src_state(pid="x", updated="soon", objects_total=None, volumes="none",
                                                  done_objects=True))
    m = scrape(tmp_path)
    assert m[("s5jtransfer_up", side("source"))] == 0
    assert ("s5jtransfer_objects_total", side("source")) not in m
    assert ("s5jtransfer_objects_done", side("source")) not in m


def test_up_needs_a_running_process_and_a_recent_state_file(tmp_path):
    write(tmp_path, progress.SRC_STATE, src_state(pid=dead_pid()))
    write(tmp_path, progress.DEST_STATE, dest_state(updated=time.time() - 121))
    m = scrape(tmp_path)
    assert m[("s5jtransfer_up", side("source"))] == 0
    assert m[("s5jtransfer_up", side("destination"))] == 0
    assert scrape(tmp_path, up_within=300)[("s5jtransfer_up", side("destination"))] == 1
    write(tmp_path, progress.SRC_STATE, src_state(pid=0))  # never "this process group"
    assert scrape(tmp_path)[("s5jtransfer_up", side("source"))] == 0


def test_complete_is_derived_from_the_counts_unless_a_side_says(tmp_path):
    write(tmp_path, progress.SRC_STATE, src_state(total_objects=11))
    write(tmp_path, progress.DEST_STATE, dest_state(total_objects=11))
    assert scrape(tmp_path)[("s5jtransfer_complete", ())] == 0  # the source has one left
    write(tmp_path, progress.SRC_STATE, src_state())
    write(tmp_path, progress.DEST_STATE, dest_state(done_objects=9))
    assert scrape(tmp_path)[("s5jtransfer_complete", ())] == 0  # one not confirmed
    write(tmp_path, progress.DEST_STATE, dest_state(given_up_count=1))
    assert scrape(tmp_path)[("s5jtransfer_complete", ())] == 0  # one set aside
    write(tmp_path, progress.DEST_STATE, dest_state(done_objects=9, complete=True))
    assert scrape(tmp_path)[("s5jtransfer_complete", ())] == 1  # its health's word
    write(tmp_path, progress.DEST_STATE, dest_state(complete=False))
    assert scrape(tmp_path)[("s5jtransfer_complete", ())] == 0
    write(tmp_path, progress.SRC_STATE, src_state(total_objects=0, done_objects=0, done_bytes=0))
    write(tmp_path, progress.DEST_STATE, dest_state(total_objects=0, done_objects=0))
    assert scrape(tmp_path)[("s5jtransfer_complete", ())] == 1  # an empty source


def test_volumes_and_stalled_from_the_health_keys(tmp_path):
    vols = [{"path": "/mnt/a", "free_bytes": 500, "staged_bytes": 20, "state": "ok"},
            {"path": "/mnt/b", "free_bytes": 0, "staged_bytes": 900, "state": "full"},
            {"path": "/mnt/c", "free_bytes": 7, "staged_bytes": 0, "state": "read-only"},
            {"path": "/mnt/d", "state": "missing"}, "junk", {"free_bytes": 1}]
    write(tmp_path, progress.SRC_STATE, src_state(volumes=vols, stalled_seconds=None, waiting_for=None,
                                                  work_left=False))
    write(tmp_path, progress.DEST_STATE, dest_state(volumes=vols[:1], stalled_seconds=950.0,
                                                    waiting_for="uploads", work_left=True))
    m = scrape(tmp_path)

    def vol(name, path, s="source"):
        return m.get((name, (("side", s), ("volume", path))))

    assert vol("s5jtransfer_volume_free_bytes", "/mnt/a") == 500
    assert vol("s5jtransfer_staged_bytes", "/mnt/b") == 900
    assert vol("s5jtransfer_volume_free_bytes", "/mnt/d") is None
    assert [vol("s5jtransfer_volume_usable", p) for p in ("/mnt/a", "/mnt/b", "/mnt/c", "/mnt/d")] == [1, 1, 0, 0]
    assert vol("s5jtransfer_staged_bytes", "/mnt/a", "destination") == 20
    assert m[("s5jtransfer_stalled", side("source"))] == 0
    assert m[("s5jtransfer_stalled", side("destination"))] == 1
    assert {k for _n, labels in m for k, _v in labels} == {"side", "volume"}


def test_no_stalled_or_volume_metrics_without_the_health_keys(tmp_path):
    write(tmp_path, progress.SRC_STATE, src_state())
    names = {n for n, _l in scrape(tmp_path)}
    assert not names & {"s5jtransfer_stalled", "s5jtransfer_volume_free_bytes", "s5jtransfer_volume_usable"}


def test_writer_writes_the_file_and_its_own_side_is_down_once_closed(tmp_path):
    write(tmp_path, progress.SRC_STATE, src_state())
    out = tmp_path / "m" / "s5jtransfer.prom"
    out.parent.mkdir()
    w = metrics.MetricsWriter(str(out), collector=metrics.StateCollector(str(tmp_path)), every=0.05).start()
    try:
        first = out.read_text()  # written at start
        assert 's5jtransfer_up{side="source"} 1.0' in first
        write(tmp_path, progress.SRC_STATE, src_state(objects_total=13))
        deadline = time.monotonic() + 5
        while 's5jtransfer_objects_total{side="source"} 13.0' not in out.read_text():
            assert time.monotonic() < deadline, "the writer did not write again"
            time.sleep(0.02)
    finally:
        w.close()
    assert 's5jtransfer_up{side="source"} 0.0' in out.read_text()  # this process ended
    assert os.listdir(out.parent) == ["s5jtransfer.prom"]  # no temporary file left
    assert all(f.samples for f in text_string_to_metric_families(out.read_text()))


def test_a_write_failure_is_logged_once_and_never_raises(tmp_path, caplog):
    w = metrics.MetricsWriter(str(tmp_path / "gone" / "s5jtransfer.prom"),
                              collector=metrics.StateCollector(str(tmp_path)))
    with caplog.at_level(logging.WARNING, logger="s5jtransfer.metrics"):
        for _ in range(3):
            w.write()
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "cannot write the metrics file" in caplog.records[0].getMessage()


def test_the_port_is_served_and_a_taken_one_is_left_to_its_holder(tmp_path, caplog):
    write(tmp_path, progress.DEST_STATE, dest_state())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    w = metrics.MetricsWriter(None, port, collector=metrics.StateCollector(str(tmp_path)), every=60).start()
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert 's5jtransfer_up{side="destination"} 1.0' in body
        assert "process_cpu_seconds_total" not in body and "python_info" not in body  # only ours
        other = metrics.MetricsWriter(None, port, collector=metrics.StateCollector(str(tmp_path)), every=60)
        with caplog.at_level(logging.INFO, logger="s5jtransfer.metrics"):
            other.tick()
            other.tick()
        said = [r.getMessage() for r in caplog.records if "is taken" in r.getMessage()]
        assert len(said) == 1 and str(port) in said[0]
        other.close()
    finally:
        w.close()


def test_no_writer_without_a_file_or_a_port():
    assert metrics.start(None, 0) is None


# -- progress.py: the counters the metrics publish -------------------------------------------


def test_counters_grow_with_counted_and_not_with_the_gauges(tmp_path):
    p = progress.Progress("source", str(tmp_path / "state.json"))
    assert p.snapshot()["last_progress"] == p.started
    p.set_totals(10, 100, 5, 50)
    p.counted(2, 20)
    p.retries += 1
    p.set_totals(10, 100, 3, 30)  # objects handed back: the gauge goes down, the counters do not
    snap = p.snapshot()
    assert (snap["done_objects"], snap["objects_total"], snap["bytes_total"], snap["retries_total"]) == (3, 2, 20, 1)
    assert snap["last_progress"] >= p.started
    p.add(1, 1)  # the gauge alone
    assert p.snapshot()["objects_total"] == 2


def test_counters_are_seeded_from_the_sides_last_state_file(tmp_path):
    path = str(tmp_path / "state.json")
    p = progress.Progress("destination", path)
    p.counted(4, 400)
    p.retries = 3
    p.write_state(force=True)
    again = progress.Progress("destination", path)
    again.retries = 1  # this run's retries (the report's) start at 0; the total goes on
    snap = again.snapshot()
    assert (snap["objects_total"], snap["bytes_total"], snap["retries_total"], snap["retries"]) == (4, 400, 4, 1)
    assert snap["last_progress"] == again.started  # nothing counted by this process yet
    assert progress.Progress("source", path).snapshot()["objects_total"] == 0  # another side's file


@pytest.mark.parametrize("text", ["{", '{"side": "source", "objects_total": "many"}', "[]"])
def test_a_bad_previous_state_file_starts_the_counters_at_zero(tmp_path, text):
    path = tmp_path / "state.json"
    path.write_text(text)
    assert progress.Progress("source", str(path)).snapshot()["objects_total"] == 0
