"""status.py reads progress from local files only, while the syncs run."""

from __future__ import annotations

import json
import os
import signal

from conftest import wait_for
from faultproxy import FaultProxy


def test_status_during_a_run_and_after(work):
    data = {f"f{i:03d}.bin": os.urandom(50_000) for i in range(40)}
    total = work.put_all(data)
    # a slow source link so the run is still going while status.py looks at it
    link = FaultProxy(work.server.url, bandwidth=total / 6).start()
    work.cfg["transfer_settings"].update(src_endpoint_url=link.url, src_workers=4)
    work.write_config()
    proc = work.start("sync_mvol.py", "--once")
    try:
        def mid_run():
            r = work.run("status.py", "--json")
            assert r.returncode == 0, r.stderr
            s = json.loads(r.stdout)
            # both sides up (the source side may stage its first objects while the destination
            # side still starts) and the source side part way
            up = s["source"]["running_pid"] and s["destination"]["running_pid"]
            return s if up and 0 < s["source"]["done_objects"] < len(data) else None

        s = wait_for(mid_run, 60, "status.py to show a run in progress, both sides running")
        assert s["sync_mvol_pid"] == proc.pid
        assert s["source"]["total_objects"] == len(data) and s["source"]["total_bytes"] == total
        assert s["complete"] is False
        assert len(s["volumes"]) == 2 and all(v["free_bytes"] > 0 for v in s["volumes"])
        text = work.run("status.py").stdout
        assert "Source -> staging: running" in text and "Staging volumes:" in text and "ETA" in text
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        link.stop()
    s = json.loads(work.run("status.py", "--json").stdout)
    assert s["complete"] is True
    assert s["destination"]["done_objects"] == len(data) and s["destination"]["done_bytes"] == total
    assert s["source"]["running_pid"] is None
    assert sum(v["staged_objects"] for v in s["volumes"]) == 0


def test_status_watch_refreshes_until_stopped(work):
    import subprocess

    from conftest import script_env

    work.put("a.txt", b"a")
    proc = subprocess.Popen(work.argv("status.py", "--watch", "0.2"), cwd=work.path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=script_env(), stdin=subprocess.DEVNULL, text=True)
    try:
        out = []

        def two_reports():
            line = proc.stdout.readline()
            out.append(line)
            return sum(1 for x in out if x.startswith("s5jtransfer status of")) >= 2

        wait_for(two_reports, 30, "two refreshes of status.py --watch")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
    assert proc.returncode == 130
    assert "Traceback" not in proc.stderr.read()


def test_complete_follows_source_deletions_additions_and_changes_in_split_mode(work):
    """The sides run on their own (split mode): after an object is deleted at the source and
    another added, or one replaced, status.py says complete only once the destination holds
    what the source side ledgered (the deleted object's rows stay and no longer make up the count)."""
    data = {f"f{i}.bin": os.urandom(2000 + i) for i in range(4)}
    work.put_all(data)
    assert work.run("sync_mvol.py", "--once").returncode == 0

    def status() -> dict:
        r = work.run("status.py", "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    assert status()["complete"] is True
    work.server.client().delete_object(Bucket=work.src, Key="data/f0.bin")
    work.put("new.bin", b"n" * 500)
    assert work.run("src_sync_mvol.py", "--once").returncode == 0
    s = status()
    assert s["complete"] is False
    assert s["destination"]["done_objects"] == 4  # f0..f3 confirmed; new.bin not yet
    assert work.run("dest_sync_mvol.py", "--once").returncode == 0
    assert status()["complete"] is True
    work.put("f1.bin", b"another version of f1")  # replaced at the source
    assert work.run("src_sync_mvol.py", "--once").returncode == 0
    s = status()
    assert s["complete"] is False and s["destination"]["done_objects"] == 4  # f1's confirmed row is the old version
    assert work.run("dest_sync_mvol.py", "--once").returncode == 0
    assert status()["complete"] is True
