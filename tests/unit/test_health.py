"""health.py (staging volumes that go, turn read-only or are too small; stalls) and check.py
(status.py --check's verdict)."""

from __future__ import annotations

import logging
import os
import shutil
import time
from types import SimpleNamespace

import pytest

from s5jtransfer import check, health
from s5jtransfer.errors import ConfigError
from s5jtransfer.health import GONE, OK, TOO_SMALL, Stall, VolumeWatch


def _cfg(tmp_path, roots, reserve=0):
    return SimpleNamespace(path=str(tmp_path / "config.yaml"), volumes=tuple(str(r) for r in roots),
                           directory=str(tmp_path), settings=SimpleNamespace(volume_reserve=reserve))


def test_volumes_smaller_than_the_reserve_are_named_and_none_usable_is_exit_2(tmp_path, caplog):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    with pytest.raises(ConfigError) as e:
        VolumeWatch(_cfg(tmp_path, [a, b], reserve=1 << 62), create=True, record_file=str(tmp_path / "rec"))
    assert e.value.exit_code == 2 and "volume_reserve_bytes" in str(e.value) and str(a) in str(e.value)
    assert not (a / "s5jtransfer").exists()  # nothing made on a volume that cannot be used
    # the destination side only reads the volumes: their size is not its concern
    assert VolumeWatch(_cfg(tmp_path, [a], reserve=1 << 62), create=False, stages=False,
                       record_file=str(tmp_path / "rec")).state == [OK]


def test_a_volume_whose_mark_goes_is_named_once_never_written_in_and_used_again_when_back(tmp_path, caplog):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    w = VolumeWatch(_cfg(tmp_path, [a, b]), create=True, record_file=str(tmp_path / "rec"))
    assert w.check() == [0, 1] and (a / "s5jtransfer" / health.MARK).is_file()
    kept = tmp_path / "kept"
    shutil.move(str(a / "s5jtransfer"), str(kept))  # unmounted: the mount point is a bare folder
    caplog.set_level(logging.ERROR, "s5jtransfer.volumes")
    assert w.check() == [1] and w.check() == [1]
    assert [r.getMessage() for r in caplog.records].count(f"staging volume {a}: {w.why(w.volumes[0], GONE)}") == 1
    assert not w.present(0) and os.listdir(a) == []
    (a / "s5jtransfer" / "partial").mkdir(parents=True)  # what a copy in flight made there (s5cmd)
    w.sweep_bare(busy={0})
    assert os.listdir(a) == ["s5jtransfer"]  # not while a copy to it is in flight
    w.sweep_bare(busy=set())
    assert os.listdir(a) == []  # the bare mount point stays empty
    shutil.move(str(kept), str(a / "s5jtransfer"))  # mounted again
    assert w.check() == [0, 1] and w.states()[0]["state"] == OK


def test_a_staged_copy_on_a_read_only_volume_stays_counted_and_never_fails_the_cycle(tmp_path, monkeypatch):
    a = tmp_path / "a"
    a.mkdir()
    w = VolumeWatch(_cfg(tmp_path, [a]), create=True, record_file=str(tmp_path / "rec"))
    path = w.volumes[0].staged_path("ab" + "0" * 38)
    open(path, "w").close()

    def erofs(p):
        raise OSError(30, "Read-only file system", p)

    monkeypatch.setattr(os, "remove", erofs)
    assert w.free(path) is False and w.free(path) is False
    assert w.states()[0]["state"] == health.READ_ONLY and w.states()[0]["unfreed"] == 1
    with pytest.raises(OSError):
        w.free(str(tmp_path / "elsewhere"))  # no staged copy of a volume: not this watch's to swallow


def test_a_side_is_stalled_only_with_work_left_and_says_what_it_waits_for(caplog):
    progress = SimpleNamespace(started=time.time() - 1000, last_progress=time.time() - 950, health={})
    stall = Stall("source", progress, 900)
    stall.note(False, "space")
    assert progress.health == {"work_left": False, "waiting_for": None, "stalled_seconds": None}
    caplog.set_level(logging.WARNING, "s5jtransfer.volumes")
    stall.note(True, "space")
    stall.note(True, "space")
    assert progress.health["stalled_seconds"] >= 950 and progress.health["waiting_for"] == "space"
    assert sum("source side stalled" in r.getMessage() for r in caplog.records) == 1  # once per stall_warning_seconds
    progress.last_progress = time.time()
    stall.note(True, "space")
    assert progress.health["stalled_seconds"] is None


def _status(complete=False, src_pid=1, dst_pid=2, ledgered=5, confirmed=3, listed=10, src_given=0):
    def side(pid, done, given):
        return {"running_pid": pid, "done_objects": done, "done_bytes": done * 10, "total_objects": listed,
                "given_up_objects": given}
    return {"complete": complete, "source": side(src_pid, ledgered, src_given), "destination": side(dst_pid, confirmed, 0)}


STATE = {"source": {"total_objects": 10, "done_objects": 5}, "destination": {"started": 1}}


@pytest.mark.parametrize("status, states, code, says", [
    (_status(complete=True, src_pid=None, dst_pid=None), STATE, check.OK, "complete"),
    (_status(), STATE, check.OK, "moving"),
    (_status(src_pid=None), STATE, check.CRITICAL, "source side not running while work remains"),
    (_status(src_pid=None), {**STATE, "source": {"total_objects": 10, "done_objects": 10}}, check.OK, "moving"),
    (_status(dst_pid=None), STATE, check.CRITICAL, "destination side not running"),
    (_status(), {**STATE, "destination": {"stalled_seconds": 4000, "waiting_for": "endpoint"}}, check.WARNING,
     "destination side stalled for 1h06m: the endpoint does not answer"),
    (_status(src_given=2), STATE, check.WARNING, "source side: 2 objects set aside"),
    (_status(), {**STATE, "source": {**STATE["source"], "volumes": [{"path": "/v1", "state": GONE, "free_bytes": 9}]}},
     check.CRITICAL, "staging volume /v1 is missing"),
    (_status(), {**STATE, "source": {**STATE["source"], "volumes": [{"path": "/v1", "state": OK, "free_bytes": 0}]}},
     check.WARNING, "staging volume /v1 nearly full"),
    (_status(src_pid=None, dst_pid=None, ledgered=0), {"source": {}, "destination": {}}, check.UNKNOWN, "no side"),
])
def test_the_check_follows_the_monitoring_plugin_convention(status, states, code, says):
    v = check.verdict(status, states, 900, 0)
    assert v.code == code and says in v.line, v.line
    assert v.line.startswith(f"S5JTRANSFER {check.NAMES[code]} - ") and " | staged=" in v.line and "\n" not in v.line


def test_too_small_is_told_from_the_file_system_size(tmp_path):
    a = tmp_path / "a"
    a.mkdir()
    st = os.statvfs(a)
    size = st.f_blocks * st.f_frsize
    w = VolumeWatch(_cfg(tmp_path, [a], reserve=size - 100 * st.f_frsize), create=True,
                    record_file=str(tmp_path / "rec"))
    assert w.state == [OK]  # a little more than the reserve: usable
    assert "is not larger than transfer_settings.volume_reserve_bytes" in w.why(w.volumes[0], TOO_SMALL)


def test_only_an_s5cmd_that_moved_bytes_holds_off_a_stall_not_one_just_started():
    progress = SimpleNamespace(started=time.time() - 100, last_progress=time.time() - 100, health={})
    stall = Stall("destination", progress, 50)
    stall.note(True, "endpoint", {11: 500})
    assert progress.health["stalled_seconds"] >= 100  # no earlier look: nothing moved that it knows of
    stall.note(True, "endpoint", {11: 900})
    assert progress.health["stalled_seconds"] is None  # bytes moving: a large object on its way
    stall._io_at -= 60
    stall.note(True, "endpoint", {11: 900, 12: 40})  # a new s5cmd reading its start-up files
    assert progress.health["stalled_seconds"] >= 60


def test_an_s5cmd_with_objects_in_flight_that_reads_and_writes_nothing_is_frozen(tmp_path):
    from s5jtransfer import s5cmd

    results = []
    sleeper = tmp_path / "fake-s5cmd"
    sleeper.write_text("#!/bin/sh\nexec sleep 60\n")  # takes its input, answers nothing
    sleeper.chmod(0o755)
    stream = s5cmd.Stream(str(sleeper), [], {}, str(tmp_path / "run.txt"), lambda *a: results.append(a),
                          frozen_after=0.3)
    try:
        assert not stream.stuck()  # nothing in flight: idle, not frozen
        stream.add("cp a b", str(tmp_path / "b"), 10)
        assert not stream.stuck()  # the first look
        deadline = time.monotonic() + 10
        while not stream.stuck():
            assert time.monotonic() < deadline, "never taken for frozen"
            time.sleep(0.1)
        assert not stream.usable()
    finally:
        stream.close(timeout=5)
    assert results == [(str(tmp_path / "b"), False, "the endpoint did not answer for 0.3 s (s5cmd ended)")]
