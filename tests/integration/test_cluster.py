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
