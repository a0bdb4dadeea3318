"""Hands-free completion: sync_mvol.py verifies the destination itself and moves again what is missing."""

from __future__ import annotations

import csv
import json
import os
import signal

from conftest import wait_for
from faultproxy import FaultProxy


def test_once_verifies_and_moves_again_objects_removed_mid_run(work):
    data = {f"f{i:03d}.bin": os.urandom(30_000) for i in range(40)}
    total = work.put_all(data)
    link = FaultProxy(work.server.url, bandwidth=total / 5).start()
    try:
        work.cfg["transfer_settings"].update(src_endpoint_url=link.url, src_workers=4)
        work.write_config()
        proc = work.start("sync_mvol.py", "--once", log_name="sync.log")
        try:
            # objects already confirmed (in dest_ledger.csv): only the final verification can notice
            def confirmed():
                try:
                    with open(work.path / "dest_ledger.csv", newline="") as fh:
                        keys = [row[0] for row in list(csv.reader(fh))[1:] if row]
                except FileNotFoundError:
                    return None
                return keys if len(keys) >= 5 else None

            c = work.server.client()
            removed = sorted(wait_for(confirmed, 60, "the first objects confirmed at the destination"))[:3]
            for k in removed:
                c.delete_object(Bucket=work.dst, Key="copy/" + k)  # behind the suite's back
            assert proc.wait(timeout=120) == 0
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
    finally:
        link.stop()
    for k, v in data.items():
        assert work.dest_bytes(k) == v
    rep = json.loads((work.path / "transfer_report.json").read_text())
    assert rep["complete"] is True
    assert rep["verification_rounds"] == 2
    assert rep["rounds"][0]["missing"] == 3 and rep["rounds"][-1]["moved"] == len(data)
    assert rep["categories"] == {"moved": len(data), "pending": 0, "missing": 0, "differ": 0}
    assert rep["moved_bytes"] == total and rep["source_objects"] == len(data)
    assert rep["verification_levels"]["source"] == {"md5": len(data)}
    log = (work.path / "sync.log").read_text()
    assert "verification round 1: 3 missing" in log and "==== transfer report ====" in log
    work.cfg["transfer_settings"]["src_endpoint_url"] = work.server.url  # the emulated link is gone
    work.write_config()
    assert work.run("repair_ledger.py").returncode == 0


def test_perpetual_run_verifies_when_idle(work):
    data = {f"g{i}.bin": os.urandom(5000) for i in range(5)}
    work.put_all(data)
    proc = work.start("sync_mvol.py", log_name="sync.log")
    try:
        report = work.path / "transfer_report.json"
        wait_for(report.exists, 60, "the idle verification report")
        assert json.loads(report.read_text())["complete"] is True
        work.server.client().delete_object(Bucket=work.dst, Key="copy/g2.bin")
        work.put("late.bin", b"late")  # new work: the ledgers change, so the next idle check verifies again
        wait_for(lambda: "late.bin" in work.listing(work.dst, "copy/"), 60, "the new object")
        wait_for(lambda: "g2.bin" in work.listing(work.dst, "copy/"), 60, "the removed object moved again")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert work.dest_bytes("g2.bin") == data["g2.bin"]


def test_perpetual_run_verifies_again_when_idle_after_a_change_at_the_destination_alone(work):
    """A deletion or a same-size overwrite at the destination changes no ledger: the idle run
    compares again every idle_verify_interval_seconds and moves the object again by itself."""
    data = {f"h{i}.bin": os.urandom(5000) for i in range(4)}
    work.put_all(data)
    work.cfg["transfer_settings"]["idle_verify_interval_seconds"] = 2
    work.write_config()
    proc = work.start("sync_mvol.py", log_name="sync.log")
    try:
        report = work.path / "transfer_report.json"
        wait_for(report.exists, 60, "the idle verification report")
        c = work.server.client()
        c.delete_object(Bucket=work.dst, Key="copy/h1.bin")
        c.put_object(Bucket=work.dst, Key="copy/h2.bin", Body=os.urandom(5000))  # same size, other bytes
        wait_for(lambda: "h1.bin" in work.listing(work.dst, "copy/"), 60, "the deleted object moved again")
        wait_for(lambda: work.dest_bytes("h2.bin") == data["h2.bin"], 60, "the overwritten object moved again")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert work.dest_bytes("h1.bin") == data["h1.bin"]


def test_once_lists_the_source_only_to_stage_and_to_verify(work):
    """sync_mvol.py --once: while the destination finishes, the source side does not list the
    source again, and the destination side does not list it at all: one listing to stage, one
    for the final comparison, made as soon as everything is staged. The destination is listed
    once, by the comparison, after the last upload was confirmed (never earlier: a store that
    loses an object after acknowledging it is caught by this run); the destination side confirms
    its 40 uploads with a HeadObject each (fewer than a listing page is worth:
    confirm.LIST_PAGE_COST)."""
    data = {f"d{i % 4}/f{i:03d}.bin": os.urandom(20_000) for i in range(40)}
    total = work.put_all(data)
    link = FaultProxy(work.server.url, bandwidth=total / 2).start()  # uploads take two seconds
    try:
        # max_poll_interval_seconds is 1 s in the test config: the source side's fallback listing
        # would come every second; at the default of 30 s it never comes in a run this short
        work.cfg["transfer_settings"].update(dest_endpoint_url=link.url, max_poll_interval_seconds=30)
        work.write_config()
        log_start = work.server.log_path.stat().st_size
        r = work.run("sync_mvol.py", "--once", timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
    finally:
        link.stop()
    for k, v in data.items():
        assert work.dest_bytes(k) == v
    with open(work.server.log_path, "rb") as fh:
        fh.seek(log_start)
        log = fh.read().decode("utf-8", "replace")
    listings = [ln for ln in log.splitlines() if f"GET /{work.src}?" in ln or f"GET /{work.src} " in ln]
    assert len(listings) == 2, "\n".join(listings) + r.stderr
    dest_listings = [ln for ln in log.splitlines() if f"GET /{work.dst}?" in ln and "list-type=2" in ln]
    assert len(dest_listings) == 1, "\n".join(dest_listings) + r.stderr
    # the source was listed for the comparison as soon as everything was staged; the destination
    # after the destination side finished
    assert "listing the source" not in r.stderr and "listing the destination" in r.stderr, r.stderr
    report = json.loads((work.path / "transfer_report.json").read_text())
    assert report["complete"] is True


def test_a_source_side_done_before_the_destination_side_is_up_still_counts_for_its_round(work):
    """sync_mvol.py starts both sides at once; a quick source side can list, stage and report
    everything done before the destination side has even started. Its state file is newer than
    the round (--round-start), so the destination side finishes once it has confirmed every
    object, instead of waiting for a state file newer than itself that never comes."""
    import time

    data = {f"q{i}.bin": os.urandom(3000) for i in range(6)}
    work.put_all(data)
    work.cfg["transfer_settings"].update(max_poll_interval_seconds=30)
    work.write_config()
    round_start = time.time()
    assert work.run("src_sync_mvol.py", "--once").returncode == 0  # everything staged, state written
    t = time.monotonic()
    r = work.run("dest_sync_mvol.py", "--once", "--supervised", "--round-start", repr(round_start), timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    assert time.monotonic() - t < 30, "waited for a newer source state file"
    assert "all 6 source objects are confirmed" in r.stderr
    for k, v in data.items():
        assert work.dest_bytes(k) == v
    # a state file from before the round is not taken: the side waits (stopped here after 3 s)
    work.put("late.bin", b"late")
    assert work.run("src_sync_mvol.py", "--once").returncode == 0
    proc = work.start("dest_sync_mvol.py", "--once", "--supervised", "--round-start", repr(time.time()),
                      log_name="dest.log")
    try:
        wait_for(lambda: "late.bin" in work.listing(work.dst, "copy/"), 30, "the late object uploaded")
        time.sleep(3)  # any finish would come within a cycle or two; none may come
        assert proc.poll() is None, (work.path / "dest.log").read_text()[-2000:]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_a_run_with_nothing_to_do_reports_its_own_round_and_no_retries_of_an_earlier_run(work):
    work.put("a.bin", b"a" * 10)
    assert work.run("sync_mvol.py", "--once").returncode == 0
    state = work.path / ".src_state.json"
    st = json.loads(state.read_text())
    st["retries"] = 5  # an earlier run's failed copies
    state.write_text(json.dumps(st))
    r = work.run("sync_mvol.py", "--once")
    assert r.returncode == 0 and "nothing to do" in r.stderr
    rep = json.loads((work.path / "transfer_report.json").read_text())
    assert rep["verification_rounds"] == 1 and rep["retries"]["source_failed_copies"] == 0, rep
    assert "over 1 verification round(s)" in r.stdout


def test_a_run_cut_short_after_its_last_uploads_is_finished_without_uploading_again(work):
    """A power cut after the uploads, before their destination rows (and the staged copies'
    deletion): the next sync_mvol.py --once does not take "nothing to do" with copies left on the
    volumes; the comparison ledgers what the ETags prove, so the staged copies are freed without
    being uploaded again; a torn last line of dest_ledger.csv is cut."""
    data = {f"p{i}.bin": os.urandom(3000 + i) for i in range(6)}
    work.put_all(data)
    assert work.run("src_sync_mvol.py", "--once").returncode == 0
    c = work.server.client()
    for k, v in data.items():  # uploaded, then the power cut: no rows, copies still staged
        c.put_object(Bucket=work.dst, Key="copy/" + k, Body=v)
    (work.path / "dest_ledger.csv").write_text("Key,Size,ETag,Verified,SourceETag\np0.bin,30")  # torn
    assert len(work.staged_files()) == len(data)
    mark = work.server.log_path.stat().st_size
    r = work.run("sync_mvol.py", "--once")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "nothing to do" not in r.stderr
    assert work.staged_files() == []
    assert work.ledger_lines("dest_ledger.csv") == len(data) + 1
    with open(work.server.log_path, "rb") as fh:
        fh.seek(mark)
        assert b"PUT /" + work.dst.encode() + b"/copy/" not in fh.read()  # nothing uploaded again
    for k, v in data.items():
        assert work.dest_bytes(k) == v
