"""--dry-run lists what would move and changes nothing."""

from __future__ import annotations

import os


def snapshot(root):
    return sorted((str(p.relative_to(root)), p.stat().st_size if p.is_file() else -1) for p in root.rglob("*"))


def test_dry_run_changes_nothing_and_lists_the_plan(work):
    for i in range(4):
        work.put(f"f{i}.bin", os.urandom(1000 * (i + 1)))
    work.put("odd 'name' $(x).txt", b"x")
    before = snapshot(work.path)
    for script in ("src_sync_mvol.py", "dest_sync_mvol.py", "sync_mvol.py"):
        r = work.run(script, "--dry-run")
        assert r.returncode == 0, r.stderr
        assert snapshot(work.path) == before, script
    r = work.run("src_sync_mvol.py", "--dry-run")
    assert "would copy 's3://%s/data/f3.bin' (4000 bytes)" % work.src in r.stdout
    assert str(work.volumes[0]) in r.stdout or str(work.volumes[1]) in r.stdout
    assert "dry run: 5 objects (10001 bytes) would be copied" in r.stdout
    assert work.listing(work.dst, "copy/") == {}


def test_dry_run_of_the_destination_lists_staged_uploads(work):
    work.put("a.txt", b"aaa")
    assert work.run("src_sync_mvol.py", "--once").returncode == 0
    before = snapshot(work.path)
    r = work.run("dest_sync_mvol.py", "--dry-run")
    assert r.returncode == 0
    assert "would upload" in r.stdout and "'s3://%s/copy/a.txt'" % work.dst in r.stdout
    assert "dry run: 1 staged objects (3 bytes) would be uploaded" in r.stdout
    assert snapshot(work.path) == before
    assert work.listing(work.dst, "copy/") == {}


def test_dry_run_spreads_over_every_endpoint(work, s3server):
    from faultproxy import FaultProxy

    for i in range(6):
        work.put(f"f{i}.bin", os.urandom(1000))
    a, b = FaultProxy(s3server.url).start(), FaultProxy(s3server.url).start()
    try:
        work.cfg["transfer_settings"]["src_endpoint_url"] = [a.url, b.url]
        work.write_config()
        r = work.run("src_sync_mvol.py", "--dry-run")
        assert r.returncode == 0, r.stderr
        assert f"from {a.url} to" in r.stdout and f"from {b.url} to" in r.stdout
    finally:
        a.stop()
        b.stop()


def test_log_file_receives_timestamped_lines(work):
    work.put("a.txt", b"a")
    r = work.run("sync_mvol.py", "--once", "--log-file", "transfer.log")
    assert r.returncode == 0
    text = (work.path / "transfer.log").read_text()
    import re

    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d INFO s5jtransfer\.src: ", text, re.M)
    assert "s5jtransfer.dest:" in text and "s5jtransfer.sync:" in text
    assert "s5jtransfer" not in r.stderr  # the log went to the file, not to standard error
