"""The whole suite through a faulty network: 503 SlowDown, reset connections and GET bodies cut
short, injected by tests/faultproxy.py between the scripts and the moto S3 server.

Every case must still end with exit code 0, every object byte-for-byte at the destination, one
ledger row per object, no staged copy left, and nothing corrupt ever ledgered.
"""

from __future__ import annotations

import csv
import hashlib
import http.client
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import wait_for

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from faultproxy import FaultProxy  # noqa: E402

MIB = 1024 * 1024
# moto does not check signatures, but treats a request without Authorization as anonymous
AUTH = {"Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, "
                         "SignedHeaders=host, Signature=0"}
RUN_TIMEOUT = 110  # seconds per sync_mvol.py --once run (the brief allows <= 120)


def seed(work, n_small: int = 8) -> dict[str, bytes]:
    """Small objects of assorted sizes, an empty one, and one multipart object (> 5 MiB, 2 parts)."""
    data = {f"dir{i % 3}/file{i}.bin": os.urandom(500 + 4099 * i) for i in range(n_small)}
    data["empty.txt"] = b""
    work.put_all(data)
    data["big/multipart.bin"] = os.urandom(6 * MIB + 4321)
    work.put_multipart("big/multipart.bin", data["big/multipart.bin"])
    return data


def pick_seed(need: dict[str, int], first: int = 8, **rates: float) -> int:
    """The first seed whose first `first` draws (one per fault-eligible request, as FaultProxy
    draws them) inject at least need[kind] faults of each kind: every run injects them, whatever
    order the clients' threads send their requests in."""
    bands = [(k, rates.get(f"{k}_rate", 0.0)) for k in ("fail", "drop", "truncate", "short", "corrupt")]
    for s in range(100_000):
        rng, got = random.Random(s), dict.fromkeys(need, 0)
        for _ in range(first):
            r, edge = rng.random(), 0.0
            for kind, rate in bands:
                edge += rate
                if r < edge:
                    if kind in got:
                        got[kind] += 1
                    break
        if all(got[k] >= n for k, n in need.items()):
            return s
    raise AssertionError(f"no seed injects {need} in {first} draws at {rates}")


def make_proxy(proxies, work, need: dict[str, int], **kw) -> FaultProxy:
    rates = {k: v for k, v in kw.items() if k.endswith("_rate")}
    return proxies(work.server.url, seed=pick_seed(need, **rates), **kw)


@pytest.fixture
def proxies():
    started: list[FaultProxy] = []

    def make(upstream: str, **kw) -> FaultProxy:
        p = FaultProxy(upstream, **kw).start()
        started.append(p)
        return p

    yield make
    for p in started:
        p.stop()


def configure(work, side: str, proxy: FaultProxy, **settings) -> None:
    ts = work.cfg["transfer_settings"]
    ts[f"{side}_endpoint_url"] = proxy.url
    ts["retries"] = 3
    ts["src_workers"] = 8
    ts["dest_workers"] = 8
    ts.update(settings)
    work.write_config()


def run_once(work):
    return work.run("sync_mvol.py", "--once", timeout=RUN_TIMEOUT)


def src_ledger_rows(work) -> list[dict[str, str]]:
    with open(work.path / "src_ledger.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def assert_complete(work, data: dict[str, bytes], r) -> None:
    (work.path / "sync.stderr").write_text(r.stderr)  # kept in the test's tmp folder for a post-mortem
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stderr[-6000:]}"
    # a network fault is handled, never a crash: no traceback, no child restarted by sync_mvol.py
    assert "Traceback" not in r.stderr, r.stderr[-6000:]
    assert "restarting in" not in r.stderr, r.stderr[-6000:]
    assert set(work.listing(work.dst, "copy/")) == set(data)
    for k, v in data.items():
        assert work.dest_bytes(k) == v, k
    assert work.ledger_lines() == len(data) + 1
    assert work.ledger_lines("dest_ledger.csv") == len(data) + 1
    assert work.staged_files() == []
    # nothing corrupt is ever ledgered: every row's size and MD5 are those of the real bytes
    rows = src_ledger_rows(work)
    assert sorted(r["Key"] for r in rows) == sorted(data)
    for row in rows:
        v = data[row["Key"]]
        assert int(row["Size"]) == len(v), row
        assert row["Verified"] in ("md5", "multipart"), row
        if row["MD5"] or row["Verified"] == "md5":
            assert row["MD5"] == hashlib.md5(v).hexdigest(), row
        else:  # verified by the source's parts alone (one MD5 pass): they are those of the real bytes
            assert row["ETag"] == real_multipart_etag(v, 5 * 1024 * 1024), row


def real_multipart_etag(data: bytes, part: int) -> str:
    digests = b"".join(hashlib.md5(data[i:i + part]).digest() for i in range(0, len(data), part))
    return f"{hashlib.md5(digests).hexdigest()}-{-(-len(data) // part)}"


# -- the proxy itself (fast, no scripts) --------------------------------------------------------


def test_proxy_forwards_faithfully_and_injects_only_on_objects(s3server, proxies):
    bucket = s3server.new_bucket("px")
    c = s3server.client()
    body = os.urandom(3 * MIB + 17)
    c.put_object(Bucket=bucket, Key="a/b.bin", Body=body)
    clean = proxies(s3server.url)
    # a chunked PUT with Expect: 100-continue: 100 first, then the body, de-chunked upstream
    s = socket.create_connection(("127.0.0.1", clean.port), timeout=10)
    s.sendall(f"PUT /{bucket}/chunked.txt HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
              f"Expect: 100-continue\r\nAuthorization: {AUTH['Authorization']}\r\n\r\n".encode())
    assert s.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    payload = b"0123456789" * 3000
    for i in range(0, len(payload), 7000):
        s.sendall(b"%x\r\n%s\r\n" % (len(payload[i:i + 7000]), payload[i:i + 7000]))
    s.sendall(b"0\r\n\r\n")
    assert s.recv(4096).startswith(b"HTTP/1.1 200")
    s.close()
    assert c.get_object(Bucket=bucket, Key="chunked.txt")["Body"].read() == payload
    # a multi-MB GET streams back whole over one keep-alive connection
    conn = http.client.HTTPConnection("127.0.0.1", clean.port, timeout=10)
    for _ in range(2):
        conn.request("GET", f"/{bucket}/a/b.bin", headers=AUTH)
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == body
    conn.close()

    # every object request fails: 503 SlowDown with an S3 XML body; listings are never faulted
    failing = proxies(s3server.url, fail_rate=1.0, seed=1)
    conn = http.client.HTTPConnection("127.0.0.1", failing.port, timeout=10)
    conn.request("GET", f"/{bucket}/a/b.bin", headers=AUTH)
    resp = conn.getresponse()
    assert resp.status == 503
    assert b"<Code>SlowDown</Code><Message>Please reduce your request rate.</Message>" in resp.read()
    conn.request("PUT", f"/{bucket}/x", body=b"abc", headers=AUTH)  # the body is drained: keep-alive still usable
    resp = conn.getresponse()
    assert resp.status == 503 and b"SlowDown" in resp.read()
    conn.request("GET", f"/{bucket}?list-type=2", headers=AUTH)
    resp = conn.getresponse()
    assert resp.status == 200 and b"a/b.bin" in resp.read()
    conn.request("GET", f"/{bucket}/?list-type=2&prefix=a/", headers=AUTH)
    resp = conn.getresponse()
    assert resp.status == 200 and b"a/b.bin" in resp.read()
    conn.close()
    st = failing.stats
    assert st["fail"] == 2 and st["faults"] == 2 and st["requests"] == 4 and st["object_requests"] == 2

    # drops reset the connection; max_faults caps them; truncation cuts a GET body short
    dropping = proxies(s3server.url, drop_rate=1.0, max_faults=1)
    conn = http.client.HTTPConnection("127.0.0.1", dropping.port, timeout=10)
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        conn.request("GET", f"/{bucket}/a/b.bin", headers=AUTH)
        conn.getresponse().read()
    conn.close()
    conn = http.client.HTTPConnection("127.0.0.1", dropping.port, timeout=10)
    conn.request("HEAD", f"/{bucket}/a/b.bin", headers=AUTH)
    resp = conn.getresponse()
    assert resp.status == 200 and int(resp.getheader("Content-Length")) == len(body)
    resp.read()
    conn.close()
    assert dropping.stats["drop"] == 1
    cutting = proxies(s3server.url, truncate_rate=1.0, seed=2)
    conn = http.client.HTTPConnection("127.0.0.1", cutting.port, timeout=10)
    conn.request("GET", f"/{bucket}/a/b.bin", headers=AUTH)
    resp = conn.getresponse()
    assert resp.status == 200
    with pytest.raises((http.client.IncompleteRead, ConnectionError)):
        resp.read()
    conn.close()
    assert cutting.stats["truncate"] == 1

    # stop() ends every connection thread, even with an idle keep-alive client still connected
    idle = http.client.HTTPConnection("127.0.0.1", clean.port, timeout=10)
    idle.request("GET", f"/{bucket}?list-type=2", headers=AUTH)
    idle.getresponse().read()
    for p in (clean, failing, dropping, cutting):
        p.stop()
    assert clean.stats["open_connections"] == 0
    left = [t.name for t in threading.enumerate() if "process_request" in t.name or t.name.startswith("faultproxy")]
    assert left == []
    idle.close()


# -- the suite through faults ----------------------------------------------------------------


def test_source_503_slowdown(work, proxies):
    data = seed(work)
    proxy = make_proxy(proxies, work, {"fail": 2}, fail_rate=0.2, max_faults=4)
    configure(work, "src", proxy)
    r = run_once(work)
    assert_complete(work, data, r)
    assert proxy.stats["fail"] > 0, proxy.stats


def test_source_dropped_connections(work, proxies):
    data = seed(work)
    proxy = make_proxy(proxies, work, {"drop": 2}, drop_rate=0.1, max_faults=6)
    configure(work, "src", proxy)
    r = run_once(work)
    assert_complete(work, data, r)
    assert proxy.stats["drop"] > 0, proxy.stats


def test_destination_503_and_dropped_connections(work, proxies):
    """Uploads (single PUT, and multipart: part_size_mb 5 splits the 6 MiB object) and the
    confirming HeadObjects fail with 503s and resets."""
    data = seed(work)
    proxy = make_proxy(proxies, work, {"fail": 2, "drop": 2}, fail_rate=0.2, drop_rate=0.1, max_faults=10)
    configure(work, "dest", proxy, part_size_mb=5)
    r = run_once(work)
    assert_complete(work, data, r)
    st = proxy.stats
    assert st["fail"] > 0 and st["drop"] > 0, st
    dest_rows = (work.path / "dest_ledger.csv").read_text()
    assert ",multipart," in dest_rows  # the big object really went up in parts


def test_native_source_503_and_dropped_connections(work, proxies):
    """src_use_native_s3: boto3's transfer manager (ranged GETs at part_size_mb 5) through faults."""
    data = seed(work)
    proxy = make_proxy(proxies, work, {"fail": 2, "drop": 2}, fail_rate=0.2, drop_rate=0.1, max_faults=8)
    configure(work, "src", proxy, src_use_native_s3=True, part_size_mb=5)
    r = run_once(work)
    assert_complete(work, data, r)
    st = proxy.stats
    assert st["fail"] > 0 and st["drop"] > 0, st


@pytest.mark.parametrize("native", [False, True], ids=["s5cmd", "native"])
def test_source_truncated_gets_never_ledgered(work, proxies, native):
    """GET bodies cut short: reset mid-transfer (the client's HTTP layer notices and retries), and
    well-formed responses with a lowered Content-Length (it cannot notice: the file on the volume
    is short). The size/checksum check must reject the partial data, the copy is retried, and
    every src_ledger.csv row carries the MD5 of the real bytes."""
    data = seed(work)
    proxy = make_proxy(proxies, work, {"truncate": 2, "short": 2}, truncate_rate=0.2, short_rate=0.2,
                       max_faults=8, methods={"GET"})
    configure(work, "src", proxy, src_use_native_s3=native, part_size_mb=5)
    r = run_once(work)
    assert_complete(work, data, r)
    st = proxy.stats
    assert st["truncate"] > 0 and st["short"] > 0, st
    assert "checksum mismatch for" in r.stderr  # the package itself caught short data


@pytest.mark.parametrize("native", [False, True], ids=["s5cmd", "native"])
def test_source_corrupted_gets_never_ledgered(work, proxies, native):
    """One byte of a GET body changed in transit, length unchanged: only the MD5/multipart ETag
    check can notice. Nothing corrupt may reach the ledger, the staging volume or the destination."""
    data = seed(work)
    proxy = make_proxy(proxies, work, {"corrupt": 2}, corrupt_rate=0.3, max_faults=6, methods={"GET"})
    configure(work, "src", proxy, src_use_native_s3=native, part_size_mb=5)
    r = run_once(work)
    assert_complete(work, data, r)
    st = proxy.stats
    assert st["corrupt"] > 0, st
    assert "checksum mismatch for" in r.stderr


@pytest.mark.parametrize("side,native", [("src", False), ("src", True), ("dest", False)],
                         ids=["src-s5cmd", "src-native", "dest"])
def test_client_retries_exhausted_package_retries_next_cycle(work, proxies, side, native):
    """An outage longer than the S3 clients' retries (retries 1): every object request fails until
    the package has given up on some copies/uploads for this cycle; then the link turns merely
    flaky, and the package's own loop (failed work tried again after a backoff) must finish the job."""
    data = seed(work)
    proxy = proxies(work.server.url, drop_rate=1.0, seed=17)  # nothing gets through
    configure(work, side, proxy, retries=1, part_size_mb=5, src_use_native_s3=native)
    log = work.path / "sync.log"
    proc = work.start("sync_mvol.py", "--once", log_name="sync.log")
    try:
        # each side tries a failed copy or upload again after a backoff ("try 1 of 5; again in 1s")
        wait_for(lambda: re.search(r"failed: .*\(try \d+ of \d+; again in [\d.]+s\)", log.read_text(errors="replace")), 60,
                 f"the {side} side to give up on a transfer for this cycle")
        outage = proxy.stats["faults"]
        proxy.set_rates(fail_rate=0.2, drop_rate=0.1, max_faults=outage + 8)
        rc = proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    result = subprocess.CompletedProcess(proc.args, rc, "", log.read_text(errors="replace"))
    assert_complete(work, data, result)
    assert proxy.stats["drop"] >= outage > 0, proxy.stats


def test_failed_copy_warning_names_the_s3_error(work, proxies):
    """An operator reading the log must see why a copy failed (here: 503 SlowDown)."""
    data = {"only.bin": os.urandom(2048)}
    work.put("only.bin", data["only.bin"])
    proxy = proxies(work.server.url, fail_rate=1.0, seed=18)  # every attempt fails...
    configure(work, "src", proxy, retries=1)
    log = work.path / "sync.log"
    proc = work.start("sync_mvol.py", "--once", log_name="sync.log")
    try:
        wait_for(lambda: "copy of 'only.bin' failed" in log.read_text(errors="replace"), 60,
                 "the source side to give up on the first copy")
        proxy.set_rates(fail_rate=0.0)  # ...until the link heals
        assert proc.wait(timeout=60) == 0, log.read_text()[-4000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text(errors="replace")
    assert work.dest_bytes("only.bin") == data["only.bin"]
    assert work.ledger_lines() == 2 and work.staged_files() == []
    assert proxy.stats["fail"] > 0, proxy.stats
    failed = [ln for ln in text.splitlines() if "copy of 'only.bin' failed" in ln]
    assert all("SlowDown" in ln for ln in failed), failed


def test_proxy_command_line(s3server):
    """`python tests/faultproxy.py --upstream ... --port N ...` serves until SIGTERM, then prints stats."""
    import json
    import signal

    from conftest import free_port

    bucket = s3server.new_bucket("cli")
    s3server.client().put_object(Bucket=bucket, Key="k", Body=b"x" * 1000)
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve().parent.parent / "faultproxy.py"),
                             "--upstream", s3server.url, "--port", str(port), "--fail-rate", "0.2",
                             "--drop-rate", "0.1", "--bandwidth", "25e6", "--latency", "0.01", "--max-faults", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith(f"listening on http://127.0.0.1:{port}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", f"/{bucket}/k", headers=AUTH)
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == b"x" * 1000
        conn.close()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    st = json.loads(out.strip().splitlines()[-1])
    assert st["requests"] == 1 and st["forwarded"] == 1 and st["faults"] == 0


def test_a_stop_does_not_wait_for_a_listing_stuck_on_a_hanging_endpoint(work):
    """An endpoint that takes connections and never answers: the source side is stuck in its
    listing (60 s, then boto3's waits and retries); SIGTERM ends it at once, exit 143."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))  # accepts, never answers
    try:
        work.put_all({"a.bin": b"x" * 100})
        work.cfg["transfer_settings"]["src_endpoint_url"] = f"http://127.0.0.1:{listener.getsockname()[1]}"
        work.write_config()
        listener.settimeout(60)
        proc = work.start("src_sync_mvol.py", "--once")
        try:
            conn, _ = listener.accept()  # the listing's request has come
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=15) == 128 + signal.SIGTERM
            conn.close()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    finally:
        listener.close()
