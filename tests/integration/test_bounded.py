"""Every retry is bounded: stores that misreport, copies that never verify. Real scripts, a real
S3 server, and a proxy that rewrites some of its answers."""

from __future__ import annotations

import json
import os
import re
import time

from faultproxy import FaultProxy
from s5jtransfer.progress import GAVE_UP, MAX_TRIES


def head_says_zero(key_part: str):
    """HeadObject of matching keys answers Content-Length: 0 (the listing stays true)."""
    def lie(method, target, status, headers, body):
        if method == "HEAD" and key_part in target and status == 200:
            return [(k, "0" if k.lower() == "content-length" else v) for k, v in headers], None
        return None
    return lie


def head_and_listing_say_zero(key_part: str):
    """HeadObject and the listing both report size 0 for matching keys."""
    head = head_says_zero(key_part)

    def lie(method, target, status, headers, body):
        got = head(method, target, status, headers, body)
        if got is not None:
            return got
        if method == "GET" and ("list-type=2" in target or "max-keys" in target.lower()) and status == 200:
            if body is None:
                return headers, b""  # ask for the body
            text = body.decode("utf-8")
            text = re.sub(r"(<Key>[^<]*" + re.escape(key_part) + r"[^<]*</Key>.*?<Size>)\d+(</Size>)", r"\g<1>0\2",
                          text, flags=re.S)
            return headers, text.encode("utf-8")
        return None
    return lie


def puts_of(work, key: str, start: int) -> int:
    with open(work.server.log_path, "rb") as fh:
        fh.seek(start)
        return fh.read().decode("utf-8", "replace").count(f"PUT /{work.dst}/copy/{key} ")


def test_a_head_that_lies_is_overruled_by_the_listing_and_nothing_moves_twice(work):
    data = {f"h{i}.bin": os.urandom(3000 + i) for i in range(4)}
    data["big.bin"] = os.urandom(2 * 1024 * 1024)
    work.put_all(data)
    start = work.server.log_path.stat().st_size
    with FaultProxy(work.server.url, lie=head_says_zero("/copy/")) as link:
        work.cfg["transfer_settings"]["dest_endpoint_url"] = link.url
        work.write_config()
        r = work.run("sync_mvol.py", "--once", timeout=120)
    log = (r.stdout + r.stderr)
    assert r.returncode == 0, log[-3000:]
    for k, v in data.items():
        assert work.dest_bytes(k) == v
        assert puts_of(work, k, start) == 1, k
    assert "confirmed by its listing after another answer disagreed" in log


def test_an_object_that_never_confirms_is_given_up_and_once_ends_naming_it(work):
    data = {"good.bin": os.urandom(5000), "liar.bin": os.urandom(7000)}
    work.put_all(data)
    t0 = time.monotonic()
    with FaultProxy(work.server.url, lie=head_and_listing_say_zero("liar.bin")) as link:
        work.cfg["transfer_settings"]["dest_endpoint_url"] = link.url
        work.write_config()
        r = work.run("sync_mvol.py", "--once", timeout=180)
    log = r.stdout + r.stderr
    assert r.returncode == GAVE_UP, log[-4000:]
    assert time.monotonic() - t0 < 150
    assert work.dest_bytes("good.bin") == data["good.bin"]
    assert len(re.findall(r"gave up on 'liar\.bin' after 5 tries", log)) == 1, log[-4000:]
    assert "size 0, expected 7000" in log
    report = json.loads((work.path / "transfer_report.json").read_text())
    assert report["complete"] is False and list(report["given_up"]) == ["liar.bin"]
    # status.py names it while the state file says so
    st = work.run("status.py")
    assert "GAVE UP on 1 objects" in st.stdout and "liar.bin" in st.stdout, st.stdout


def test_a_source_copy_that_never_verifies_is_given_up_and_once_ends_naming_it(work):
    data = {"fine.bin": os.urandom(4000), "rotten.bin": os.urandom(9000)}
    work.put_all(data)

    def flip(method, target, status, headers, body):
        if method == "GET" and target.split("?")[0].endswith("/data/rotten.bin") and status in (200, 206):
            if body is None:
                return headers, b""
            return headers, bytes([body[0] ^ 1]) + body[1:]  # same length, other bytes: only a checksum sees it
        return None

    with FaultProxy(work.server.url, lie=flip) as link:
        work.cfg["transfer_settings"]["src_endpoint_url"] = link.url
        work.write_config()
        r = work.run("sync_mvol.py", "--once", timeout=180)
    log = r.stdout + r.stderr
    assert r.returncode == GAVE_UP, log[-4000:]
    assert work.dest_bytes("fine.bin") == data["fine.bin"]
    assert len(re.findall(r"gave up on 'rotten\.bin' after %d tries" % MAX_TRIES, log)) == 1, log[-4000:]
    report = json.loads((work.path / "transfer_report.json").read_text())
    assert list(report["given_up"]) == ["rotten.bin"]
    assert "does not match the listed size" in report["given_up"]["rotten.bin"]
