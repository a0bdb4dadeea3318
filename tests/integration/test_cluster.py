"""A Snowball cluster: several source endpoints; one stops answering mid-run."""

from __future__ import annotations

import os
import signal

from conftest import wait_for
from faultproxy import FaultProxy


def test_work_is_spread_over_endpoints_and_a_dead_one_is_set_aside(work):
    data = {f"f{i:03d}.bin": os.urandom(40_000) for i in range(60)}
    total = work.put_all(data)
    a = FaultProxy(work.server.url, bandwidth=total / 8).start()
    b = FaultProxy(work.server.url, bandwidth=total / 8).start()
    try:
        work.cfg["source"]["region"] = "snow"
        work.cfg["transfer_settings"].update(src_endpoint_url=[a.url, b.url], src_workers=4, retries=1)
        work.write_config()
        r = work.run("src_connect_test.py", "--quiet")
        assert r.returncode == 0, r.stderr
        assert f"Endpoint {a.url}: OK, 60 objects" in r.stdout and f"Endpoint {b.url}: OK, 60 objects" in r.stdout
        proc = work.start("sync_mvol.py", "--once", log_name="sync.log")
        try:
            # both endpoints carry object downloads, then one node goes down mid-run
            probes = a.stats["requests"], b.stats["requests"]  # the connect test's listings
            wait_for(lambda: work.ledger_lines() - 1 >= 5, 60, "the first objects to be staged")
            assert work.ledger_lines() - 1 < len(data)
            assert a.stats["requests"] > probes[0] + 5 and b.stats["requests"] > probes[1] + 5
            b.stop()
            assert proc.wait(timeout=120) == 0
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
        log = (work.path / "sync.log").read_text()
        assert f"source endpoint {b.url} set aside" in log
        for k, v in data.items():
            assert work.dest_bytes(k) == v
        assert work.ledger_lines() == len(data) + 1
        r = work.run("src_connect_test.py", "--quiet")
        assert r.returncode == 1
        assert f"Endpoint {a.url}: OK" in r.stdout and f"Endpoint {b.url}: FAILED: endpoint" in r.stdout
    finally:
        a.stop()
        b.stop()


def test_a_dead_first_endpoint_on_both_sides_does_not_stop_the_checks(work):
    """The completeness check, the comparison and repair list through any endpoint that
    answers: a cluster whose first node is down still finishes, exit 0 (they used the first)."""
    from conftest import free_port

    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    data = {f"g{i:02d}.bin": os.urandom(3000 + i) for i in range(12)}
    work.put_all(data)
    work.cfg["source"]["region"] = "snow"
    work.cfg["transfer_settings"].update(src_endpoint_url=[dead, work.server.url],
                                         dest_endpoint_url=[dead, work.server.url], retries=1)
    work.write_config()
    r = work.run("sync_mvol.py", "--once", "--log-file", "sync.log", timeout=180)
    log = (work.path / "sync.log").read_text()
    assert r.returncode == 0, log[-3000:]
    for k, v in data.items():
        assert work.dest_bytes(k) == v
    assert f"trying {work.server.url}" in log
    assert f"endpoint {dead} did not answer" in log
    r = work.run("repair_ledger.py")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "COMPLETE" in r.stdout


def test_a_dry_run_with_every_source_endpoint_down_ends_with_exit_1(work):
    from conftest import free_port

    dead = [f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"]
    work.put_all({"a.bin": b"x" * 100})
    work.cfg["source"]["region"] = "snow"
    work.cfg["transfer_settings"].update(src_endpoint_url=dead, retries=1)
    work.write_config()
    r = work.run("src_sync_mvol.py", "--dry-run", timeout=60)
    assert r.returncode == 1
    assert "dry run failed: no source endpoint answers" in r.stderr + r.stdout
    assert not (work.path / "src_ledger.csv").exists()
