"""cli.exit_now: the scripts end without the interpreter's teardown, and lose no output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_exit_now_keeps_the_exit_code_and_flushes_the_log_file_and_standard_streams(tmp_path):
    log = tmp_path / "run.log"
    code = (f"import logging, sys; sys.path.insert(0, {str(ROOT)!r}); from s5jtransfer import cli; "
            f"cli.setup_logging({str(log)!r}); logging.getLogger('s5jtransfer.x').info('logged'); "
            "print('printed', end=''); sys.stderr.write('written'); cli.exit_now(7)")
    # stdout to a pipe (or to nohup.out) is block-buffered: without the flush, 'printed' would be lost
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 7
    assert r.stdout == "printed"
    assert r.stderr == "written"
    assert "INFO s5jtransfer.x: logged" in log.read_text()
