"""sync_mvol.py: run both sides as child processes, pass signals on, restart a child that dies."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

from .runtime import Stopper, die_with_parent

log = logging.getLogger("s5jtransfer.sync")
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIDES = ("src_sync_mvol.py", "dest_sync_mvol.py")
FATAL = {2, 3}  # config error, lock held: restarting cannot help


class Child:
    def __init__(self, script: str, args: list[str]) -> None:
        self.script = script
        self.args = args
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self.backoff = 1.0
        self.next_start = 0.0
        self.done = False

    def start(self) -> None:
        argv = [sys.executable, os.path.join(HERE, self.script), *self.args]
        # Children read their own side's credentials from config.yaml; nothing secret is passed here.
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, env=dict(os.environ),
                                     preexec_fn=die_with_parent(signal.SIGTERM))
        log.info("started %s (PID %d)", self.script, self.proc.pid)


def run(once: bool, dry_run: bool, log_file: str | None, debug: bool, stopper: Stopper) -> int:
    extra = (["--log-file", log_file] if log_file else []) + (["--debug"] if debug else [])
    if dry_run:
        rc = 0
        for script in SIDES:
            rc = max(rc, subprocess.run([sys.executable, os.path.join(HERE, script), "--dry-run", *extra],
                                        stdin=subprocess.DEVNULL, env=dict(os.environ)).returncode)
        return rc
    # With --once the source side still polls: until the destination side has confirmed every
    # source object, objects can come back to it (a staged copy that failed its checksum, a
    # wiped volume). The run ends when the destination side finishes with --once.
    src = Child(SIDES[0], extra)
    dest = Child(SIDES[1], (["--once"] if once else []) + extra)
    children = [src, dest]
    for c in children:
        c.start()
        stopper.track(c.proc)
    while not stopper.stopped:
        if once and dest.done:
            _stop([src])
            log.info("both sides finished: every source object is confirmed at the destination")
            return 0
        for c in children:
            if c.done:
                continue
            if c.proc is None:
                if time.monotonic() >= c.next_start:
                    c.start()
                    stopper.track(c.proc)
                continue
            rc = c.proc.poll()
            if rc is None:
                continue
            if rc == 0 and once:
                log.info("%s finished", c.script)
                c.done = True
                continue
            if rc in FATAL:
                log.error("%s exited with code %d; stopping (fix the cause shown above, then start again)", c.script, rc)
                _stop(children)
                return rc
            c.restarts += 1
            c.proc = None
            c.next_start = time.monotonic() + c.backoff
            log.warning("%s exited with code %s; restarting in %.0fs (restart #%d)", c.script, rc, c.backoff, c.restarts)
            c.backoff = min(c.backoff * 2, 60.0)
        stopper.sleep(0.5)
    _stop(children)
    return stopper.exit_code()


def _stop(children: list[Child]) -> None:
    live = [c.proc for c in children if c.proc is not None and c.proc.poll() is None]
    for p in live:
        try:
            p.terminate()
        except OSError:
            pass
    deadline = time.monotonic() + 30
    for p in live:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
