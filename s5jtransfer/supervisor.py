"""sync_mvol.py: run both sides as child processes, pass signals on, restart a child that dies."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from .atomic import write_atomic
from .ledger import DEST_COLUMNS, DEST_LEDGER, SRC_LEDGER, Ledger
from .progress import DEST_STATE, SRC_STATE, done_since, read_state
from .runtime import Stopper, die_with_parent

log = logging.getLogger("s5jtransfer.sync")
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIDES = ("src_sync_mvol.py", "dest_sync_mvol.py")
FATAL = {2, 3}  # config error, lock held: restarting cannot help
MAX_ROUNDS = 5  # verify-and-move-again rounds of sync_mvol.py --once
MIN_IDLE_CHECK = 5.0  # seconds between idle checks of a perpetual run (at least; see below)
REPORT_FILE = "transfer_report.json"
EARLY_HEADS = 1000  # objects confirmed after the early destination listing began, checked one by one at most
EARLY_BYTES = 1024 ** 3  # ... and the bytes the destination side may have left when it begins
EARLY_TAIL = 0.1  # seconds between looks at dest_ledger.csv while the destination side finishes
HEAD_WORKERS = 16


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


def run(cfg, once: bool, dry_run: bool, log_file: str | None, debug: bool, stopper: Stopper) -> int:
    extra = (["--log-file", log_file] if log_file else []) + (["--debug"] if debug else [])
    # the shard this run resolved (a --shard flag, config.yaml or a scheduler's index): the sides take the same
    extra += ["--shard", str(cfg.shard_spec)] if cfg.shard_spec else []
    if dry_run:
        rc = 0
        for script in SIDES:
            rc = max(rc, subprocess.run([sys.executable, os.path.join(HERE, script), "--dry-run", *extra],
                                        stdin=subprocess.DEVNULL, env=dict(os.environ)).returncode)
        return rc
    report = TransferReport(str(cfg.shard_spec) if cfg.shard_spec else None)
    if once and _has_rows(SRC_LEDGER):
        # A run over earlier work: one listing of each side tells whether anything is left to
        # do, before starting (and listing again from) two more processes.
        rep, fig = _compare(cfg)
        # complete, and nothing left on the staging volumes (a run cut short after its last
        # upload leaves staged copies: the sides run, and the destination side frees them)
        if rep.complete and not (fig.get("staged") and cfg.delete_staging_data):
            report.record(fig, 1)  # that comparison is this run's verification round
            report.finish(True)
            log.info("nothing to do: every source object is already verified at the destination")
            return 0
    # With --once the source side still polls: until the destination side has confirmed every
    # source object, objects can come back to it (a staged copy that failed its checksum, a
    # wiped volume). A round ends when the destination side finishes with --once; then the
    # source and destination are compared (as repair_ledger.py does) and whatever is missing
    # or differs moves again, until the destination verifies.
    for round_no in range(1, MAX_ROUNDS + 1):
        # --supervised: the source side does not list the source again once everything is staged
        # (only a handed-back object wakes it), and the destination side finishes when it has
        # confirmed everything the source side staged, without listing the source: the
        # comparison below lists both sides anyway
        listing = EarlyListings(cfg) if once else None
        round_start = ["--round-start", repr(listing.since)] if listing else []
        src = Child(SIDES[0], (["--supervised"] if once else []) + extra)
        dest = Child(SIDES[1], (["--once", "--supervised", *round_start] if once else []) + extra)
        try:
            rc = _supervise([src, dest], once, stopper, cfg, report, listing)
            report.restarts += src.restarts + dest.restarts
            if rc != 0 or not once:
                return rc
            # the source side was told to stop; the comparison runs while it exits (the ledger
            # locks keep a rewrite and an append apart)
            rep, fig = _compare(cfg, *(listing.result() if listing else (None, None)))
        finally:
            if listing is not None:
                listing.stop()
            _stop([src, dest])
        report.record(fig, round_no)
        if rep.complete:
            report.finish(True)
            log.info("verified: every source object is at the destination; report in %s", REPORT_FILE)
            return 0
        log.warning("verification round %d: %d missing and %d differing objects; moving them again",
                    round_no, fig["categories"]["missing"], fig["categories"]["differ"])
    report.finish(False)
    log.error("the destination still does not verify after %d rounds; see %s and missing_keys.txt",
              MAX_ROUNDS, REPORT_FILE)
    return 1


def _supervise(children: list[Child], once: bool, stopper: Stopper, cfg, report: "TransferReport",
               listing: "EarlyListings | None" = None) -> int:
    src, dest = children
    for c in children:
        c.start()
        stopper.track(c.proc)
    from . import verify  # noqa: F401 - loaded while the sides start, ready for the final comparison
    # A perpetual run checks for idleness as often as the sides poll when idle.
    idle_check = max(MIN_IDLE_CHECK, cfg.settings.max_poll_interval)
    next_idle_check = time.monotonic() + idle_check
    while not stopper.stopped:
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
        if once and dest.done:
            _signal([src])  # waited for by the caller, after the comparison
            log.info("both sides finished: every source object is confirmed at the destination")
            return 0
        if listing is not None:
            listing.poll()
        if not once and time.monotonic() >= next_idle_check:
            next_idle_check = time.monotonic() + idle_check
            _verify_when_idle(cfg, report)
        # short: the final comparison starts as soon as the destination side exits (a poll is
        # one waitpid per child)
        stopper.sleep(0.05 if once else 0.2)
    _stop(children)
    return stopper.exit_code()


def _verify_when_idle(cfg, report: "TransferReport") -> None:
    """A perpetual run that has gone idle (both sides report everything done) verifies the
    destination once per change of the ledgers, and again every idle_verify_interval_seconds
    (a change at the destination behind its back changes no ledger); what is missing or
    differs moves again by itself."""
    src, dest = read_state(SRC_STATE), read_state(DEST_STATE)
    if not src or not dest or not src.get("total_objects"):
        return
    if src["done_objects"] < src["total_objects"] or dest["done_objects"] < dest["total_objects"]:
        return
    stamp = tuple(_mtime(p) for p in (SRC_LEDGER, DEST_LEDGER))
    every = cfg.settings.idle_verify_interval
    if stamp == report.verified_stamp and not (every and time.monotonic() - report.verified_at >= every):
        return
    try:
        rep, fig = _compare(cfg)
    except Exception as exc:  # noqa: BLE001 - the next idle check tries again
        log.warning("idle verification failed: %s", exc)
        return
    report.record(fig, report.rounds + 1)
    report.verified_stamp = tuple(_mtime(p) for p in (SRC_LEDGER, DEST_LEDGER))
    report.verified_at = time.monotonic()
    if rep.complete:
        report.finish(True)
        log.info("idle: verified every source object at the destination; report in %s", REPORT_FILE)
    else:
        log.warning("idle verification: %d missing and %d differing objects; moving them again",
                    fig["categories"]["missing"], fig["categories"]["differ"])


def _compare(cfg, src=None, dst=None):
    """verify.compare_and_repair, imported on first use: boto3 is not needed to start the sides."""
    from . import verify

    return verify.compare_and_repair(cfg, src=src, dst=dst)


class EarlyListings:
    """The final comparison's listings, made while the destination side still uploads, so that
    little is left to do when it finishes.

    The source is listed as soon as the source side reports everything staged: its link is idle
    from then on. The destination is listed once that listing is made and the destination side
    reports (its state file) at most EARLY_HEADS objects and EARLY_BYTES left, so the listing is
    made shortly before the end, not hours before it on a slow link. An object confirmed after
    that listing began (a row `dest_ledger.csv` gains after it) is checked on its own, with a
    HeadObject made after its row appeared: every object is still seen at the destination by
    this process after its upload, never taken on the destination side's word.

    A listing is a snapshot whenever it is made; an object that changes after it moves in the
    next run, as after any listing. When anything does not fit (a listing failed, the ledger was
    rewritten, too many objects came after the listing), the comparison lists that side itself,
    as it would without this."""

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self.since = time.time()  # the sides' state files must be newer than this round
        self._src: threading.Thread | None = None
        self._src_objects = None
        self.source_listed = threading.Event()  # the source listing is made
        self._dst: threading.Thread | None = None
        self._dst_objects = None
        self._finish = threading.Event()
        self.dest_listed = threading.Event()  # the destination listing is made (the tail follows)

    def poll(self) -> None:
        """Start each listing when its time has come (a look at the sides' state files)."""
        if self._src is None:
            if done_since(read_state(SRC_STATE), self.since) is None:
                return
            self._src = threading.Thread(target=self._list_source, name="source-listing", daemon=True)
            self._src.start()
            return
        if self._dst is not None or not self.source_listed.is_set():
            return
        state = read_state(DEST_STATE) or {}
        if float(state.get("updated") or 0) < self.since:
            return
        left = int(state.get("total_objects") or 0) - int(state.get("done_objects") or 0)
        left_bytes = int(state.get("total_bytes") or 0) - int(state.get("done_bytes") or 0)
        if left > EARLY_HEADS or left_bytes > EARLY_BYTES:
            return
        self._dst = threading.Thread(target=self._list_destination, name="destination-listing", daemon=True)
        self._dst.start()

    def _list_source(self) -> None:
        from . import verify

        try:
            self._src_objects = verify._list_side(self.cfg.source, self.cfg)
            self.source_listed.set()
        except Exception as exc:  # noqa: BLE001 - the comparison lists the source itself
            log.debug("early listing of the source failed (%s); the comparison lists it again", exc)

    def _list_destination(self) -> None:
        from . import s3, verify

        side = self.cfg.destination
        ledger = Ledger(DEST_LEDGER, DEST_COLUMNS)
        rows: dict[str, tuple] = {}
        heads = None
        try:
            ledger.seek_end()  # a row appended from now on is checked on its own
            objects, ep = verify.list_side_at(side, self.cfg)
            heads = s3.Heads(side, lambda: s3.client(side, self.cfg.settings, index=ep, pool=HEAD_WORKERS), ep)
            self.dest_listed.set()
            checked = 0
            with ThreadPoolExecutor(max_workers=HEAD_WORKERS) as pool:
                while True:
                    last = self._finish.is_set()  # read before the tail: nothing after it is missed
                    replaced, keys = ledger.tail(rows)
                    if replaced:
                        log.debug("dest_ledger.csv was rewritten; the comparison lists the destination")
                        return
                    keys = list(dict.fromkeys(keys))
                    checked += len(keys)
                    if checked > EARLY_HEADS:
                        log.debug("%d objects confirmed since the early listing; the comparison lists "
                                  "the destination", checked)
                        return
                    for key, obj in zip(keys, pool.map(heads.head, keys)):
                        if obj is None:
                            objects.pop(key, None)
                        else:
                            objects[key] = obj
                    if last:
                        break
                    self._finish.wait(EARLY_TAIL)
            self._dst_objects = objects
            log.debug("destination listed while its last uploads finished; %d objects confirmed since, "
                      "each checked with a HeadObject", checked)
        except Exception as exc:  # noqa: BLE001 - the comparison lists the destination itself
            log.debug("early listing of the destination failed (%s); the comparison lists it again", exc)
        finally:
            if heads is not None:
                heads.close()

    def stop(self) -> None:
        """No comparison follows (the round ended otherwise): the destination listing stops tailing."""
        self._finish.set()

    def result(self):
        """(source listing, destination listing), each None when not made or not usable: the
        comparison then lists that side itself. Call once the destination side has finished."""
        self._finish.set()
        for t in (self._src, self._dst):
            if t is not None:
                t.join()
        return self._src_objects, self._dst_objects


def _has_rows(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.readline()
            return bool(fh.readline())
    except FileNotFoundError:
        return False


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return None


class TransferReport:
    """The final report: printed, and written as JSON to transfer_report.json."""

    def __init__(self, shard: str | None = None) -> None:
        self.shard = shard  # "K/N", or None: every key (shard.py)
        self.started = time.time()
        self.rounds = 0
        self.restarts = 0
        self.figures: dict = {}
        self.history: list[dict] = []
        self.verified_stamp: tuple | None = None
        self.verified_at = 0.0  # time.monotonic() of the last idle verification

    def record(self, figures: dict, round_no: int) -> None:
        self.rounds = round_no
        self.figures = figures
        self.history.append({"round": round_no, "time": time.time(), **figures["categories"]})

    def finish(self, complete: bool) -> dict:
        # the sides' retries of this run: a state file left by an earlier run does not count
        src, dest = ({} if (st := read_state(path) or {}).get("started", 0) < self.started else st
                     for path in (SRC_STATE, DEST_STATE))
        f = self.figures
        data = {
            "complete": complete, "shard": self.shard, "started": self.started, "finished": time.time(),
            "duration_s": round(time.time() - self.started, 1), "verification_rounds": self.rounds,
            "source_objects": f.get("source_objects"), "source_bytes": f.get("source_bytes"),
            "categories": f.get("categories"), "moved_bytes": f.get("moved_bytes"),
            "only_at_destination": f.get("only_at_destination"),
            "verification_levels": f.get("verification"),
            "retries": {"source_failed_copies": src.get("retries", 0), "destination_failed_uploads": dest.get("retries", 0),
                        "process_restarts": self.restarts},
            "rounds": self.history,
        }
        write_atomic(REPORT_FILE, json.dumps(data, indent=2))
        cats = data["categories"] or {}
        lines = [
            "==== transfer report ====",
            f"complete:            {'yes' if complete else 'NO'}",
            *([f"shard:               {self.shard} (its share of the source prefix)"] if self.shard else []),
            f"source objects:      {data['source_objects']} ({data['source_bytes']} bytes)",
            f"moved (verified):    {cats.get('moved')} ({data['moved_bytes']} bytes)",
            f"pending/missing/differ: {cats.get('pending')}/{cats.get('missing')}/{cats.get('differ')}",
            f"verification levels: source {data['verification_levels']['source']}, "
            f"destination {data['verification_levels']['destination']}",
            f"retries:             {data['retries']}",
            f"duration:            {data['duration_s']} s over {self.rounds} verification round(s)",
            f"written to {REPORT_FILE}",
        ]
        print("\n".join(lines), flush=True)
        return data


def _signal(children: list[Child]) -> list[subprocess.Popen]:
    """SIGTERM to each child still running; returns them."""
    live = [c.proc for c in children if c.proc is not None and c.proc.poll() is None]
    for p in live:
        try:
            p.terminate()
        except OSError:
            pass
    return live


def _stop(children: list[Child]) -> None:
    live = _signal(children)
    deadline = time.monotonic() + 30
    for p in live:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
