"""How the scripts end: cli.exit_now (no interpreter teardown, no output lost) and the stop signal
handler (runtime.Stopper), which must never deadlock the process it stops."""

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


def test_a_stop_signal_arriving_inside_a_sleep_is_never_lost_in_a_deadlock():
    """The signal handler runs in the main thread between two bytecodes, possibly while that
    thread holds the internal lock of the event it sleeps on (inside Event.wait): a handler that
    set the event itself would wait for that lock forever, and the side would never exit (seen as
    a sync_mvol.py waiting 30 s for a side after SIGTERM). Here the signal lands exactly there."""
    code = (f"import os, signal, sys; sys.path.insert(0, {str(ROOT)!r}); "
            "from s5jtransfer.runtime import Stopper; st = Stopper().install()\n"
            "with st.event._cond:  # as inside Event.wait, before it lets the lock go\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "    for _ in range(1000): pass\n"
            "print(st.stopped, st.sleep(30), st.event.wait(30), st.exit_code())")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "True", "True", "143"]


def test_a_log_file_moved_away_by_rotation_is_opened_anew(tmp_path):
    import logging

    from s5jtransfer import cli

    path = tmp_path / "sync.log"
    try:
        cli.setup_logging(str(path))
        logging.getLogger("s5jtransfer").info("before")
        path.rename(tmp_path / "sync.log.1")  # logrotate's default: move, then the program goes on
        logging.getLogger("s5jtransfer").info("after")
    finally:
        cli.setup_logging()  # back to standard error for the other tests
    assert "before" in (tmp_path / "sync.log.1").read_text() and "after" not in (tmp_path / "sync.log.1").read_text()
    assert "after" in path.read_text()


def test_rates_never_go_below_zero_when_objects_leave_the_source():
    from s5jtransfer.progress import Progress

    p = Progress("source", None)
    p.set_totals(10, 1000, 10, 1000)
    p.add(0, 0)
    p.set_totals(5, 500, 5, 500)  # half the objects deleted at the source
    p.add(0, 0)
    ops, bps = p.rates()
    assert ops >= 0 and bps >= 0
    assert "-" not in p.line()
