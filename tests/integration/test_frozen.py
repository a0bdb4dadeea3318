"""A destination endpoint that freezes (takes requests, never answers) and comes back: the side
says it is stalled (status.py --check), ends the s5cmd that waits on it, and the run completes."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import ROOT, script_env, wait_for
from faultproxy import FaultProxy


def _check(work) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "status.py"), "--check"], cwd=work.path, capture_output=True,
                          text=True, timeout=60, env=script_env())


def test_a_frozen_endpoint_is_named_by_the_check_and_the_run_finishes_once_it_is_back(work):
    data = {f"f{i:02d}.bin": os.urandom(30_000) for i in range(12)}
    work.put_all(data)
    link = FaultProxy(work.server.url).start()
    link.frozen_methods = {"PUT"}  # the uploads: the HeadBucket probes and listings still answer
    try:
        work.cfg["transfer_settings"].update(dest_endpoint_url=link.url, request_timeout_seconds=4,
                                             stall_warning_seconds=2)
        work.write_config()
        link.frozen.set()
        proc = work.start("sync_mvol.py", "--once", log_name="run.log")
        try:
            # on a loaded machine the source side may be said stalled first (2 s without a copy)
            said = wait_for(lambda: (c := _check(work)).returncode in (1, 2) and "destination side stalled" in c.stdout
                            and c, 60, "status.py --check to say the destination side is stalled")
            assert said.stdout.startswith("S5JTRANSFER WARNING - destination side stalled for ")
            assert "the endpoint does not answer" in said.stdout
            wait_for(lambda: "endpoint did not answer: s5cmd read and wrote nothing" in
                     (work.path / "run.log").read_text(), 60, "the frozen s5cmd ended")
            link.frozen.clear()
            assert proc.wait(timeout=120) == 0, (work.path / "run.log").read_text()[-3000:]
            # that one line speaks for what the ended s5cmd held: no warning per object
            log = (work.path / "run.log").read_text()
            assert [line for line in log.splitlines() if " WARNING " in line and "(s5cmd ended)" in line] == [], log
        finally:
            if proc.poll() is None:
                proc.kill()
    finally:
        link.frozen.clear()
        link.stop()
    for k, v in data.items():
        assert work.dest_bytes(k) == v
    assert _check(work).stdout.startswith("S5JTRANSFER OK - complete")
