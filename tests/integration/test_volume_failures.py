"""Staging volumes that fail under a run: one unmounted mid-run (its bare mount point stays empty,
every object still arrives), volumes too small to ever hold anything (exit 2 at once)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from conftest import wait_for
from faultproxy import FaultProxy

needs_root = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mount"), reason="needs root for a tmpfs")


def test_volumes_too_small_for_the_reserve_end_the_run_at_once_naming_the_setting(work):
    work.put("a.bin", b"a" * 1000)
    work.cfg["transfer_settings"]["volume_reserve_bytes"] = 10**18  # larger than any test disk
    work.write_config()
    r = work.run("sync_mvol.py", "--once", timeout=60)
    assert r.returncode == 2, (r.stdout + r.stderr)[-2000:]
    out = r.stdout + r.stderr
    assert "no staging volume can be used" in out and "volume_reserve_bytes" in out
    assert all(str(v) in out for v in work.volumes)


@needs_root
def test_a_volume_unmounted_mid_run_is_named_left_empty_and_every_object_arrives(work, tmp_path):
    for v in work.volumes:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(v)], capture_output=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount tmpfs: {r.stderr!r}")
    gone = work.volumes[0]
    data = {f"f{i:02d}.bin": os.urandom(150_000) for i in range(40)}
    work.put_all(data)
    link = FaultProxy(work.server.url, bandwidth=1_500_000).start()  # uploads slower than fetches: staging fills
    try:
        work.cfg["transfer_settings"]["dest_endpoint_url"] = link.url
        work.write_config()
        proc = work.start("sync_mvol.py", "--once", log_name="run.log")
        try:
            wait_for(lambda: any(p.is_file() for p in (gone / "s5jtransfer" / "staged").rglob("*")), 60,
                     "copies staged on the first volume")
            subprocess.run(["umount", "-l", str(gone)], check=True)
            assert proc.wait(timeout=180) == 0, (work.path / "run.log").read_text()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
    finally:
        link.stop()
        for v in work.volumes:
            subprocess.run(["umount", "-l", str(v)], capture_output=True)
    for k, v in data.items():
        assert work.dest_bytes(k) == v
    assert os.listdir(gone) == []  # nothing was written into the bare mount point
    log = (work.path / "run.log").read_text()
    assert f"staging volume {gone}: it is gone" in log
    report = json.loads((work.path / "transfer_report.json").read_text())
    assert report["complete"] and {"path": str(gone), "state": "missing", "unfreed": 0} in report["volume_problems"]
