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

from .atomic import write_atomic
from .ledger import DEST_LEDGER, SRC_LEDGER, has_rows
from .progress import DEST_STATE, GAVE_UP, MAX_TRIES, SRC_STATE, done_since, given_up, read_state
from .runtime import Stopper, die_with_parent, file_signature

log = logging.getLogger("s5jtransfer.sync")
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIDES = ("src_sync_mvol.py", "dest_sync_mvol.py")
FATAL = {2, 3}  # config error, lock held: restarting cannot help
MAX_ROUNDS = 5  # verify-and-move-again rounds of sync_mvol.py --once
MIN_IDLE_CHECK = 5.0  # seconds between idle checks of a perpetual run (at least; see below)
REPORT_FILE = "transfer_report.json"


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
        return _dry_run(extra)
    report = TransferReport(str(cfg.shard_spec) if cfg.shard_spec else None)
    if once and has_rows(SRC_LEDGER) and _done_before(cfg, report):
        return 0
    # With --once the source side still polls: until the destination side has confirmed every
    # source object, objects can come back to it (a staged copy that failed its checksum, a
    # wiped volume). A round ends when the destination side finishes with --once; then the
    # source and destination are compared (as repair_ledger.py does) and whatever is missing
    # or differs moves again, until the destination verifies.
    for round_no in range(1, MAX_ROUNDS + 1):
        rc, rep, fig = _round(cfg, once, extra, stopper, report)
        if rep is None:
            return rc
        report.record(fig, round_no)
        rc = _end_of_round(rep, report)
        if rc is not None:
            return rc
        log.warning("verification round %d: %d missing and %d differing objects; moving them again",
                    round_no, fig["categories"]["missing"], fig["categories"]["differ"])
    report.finish(False)
    log.error("the destination still does not verify after %d rounds; see %s and missing_keys.txt",
              MAX_ROUNDS, REPORT_FILE)
    return 1


def nothing_to_do(complete: bool, staged: int, delete_staging_data: bool) -> bool:
    """Pure: a --once run over earlier work has nothing to do when every source object is verified
    at the destination and no staged copy is left for the destination side to free (a run cut
    short after its last upload leaves staged copies)."""
    return complete and not (staged and delete_staging_data)


def only_set_aside_left(outside: int, set_aside: dict[str, str]) -> bool:
    """Pure: a --once run ends (exit GAVE_UP) when every object still not verified is one the
    sides set aside after MAX_TRIES tries each (outside: how many of those left are not):
    another round would only repeat them."""
    return bool(set_aside) and outside == 0


def _dry_run(extra: list[str]) -> int:
    rc = 0
    for script in SIDES:
        rc = max(rc, subprocess.run([sys.executable, os.path.join(HERE, script), "--dry-run", *extra],
                                    stdin=subprocess.DEVNULL, env=dict(os.environ)).returncode)
    return rc


def _done_before(cfg, report: "TransferReport") -> bool:
    """A run over earlier work: one listing of each side tells whether anything is left to do,
    before starting (and listing again from) two more processes."""
    rep, fig = _compare(cfg)
    if not nothing_to_do(rep.complete, fig.get("staged"), cfg.delete_staging_data):
        return False
    report.record(fig, 1)  # that comparison is this run's verification round
    report.finish(True)
    log.info("nothing to do: every source object is already verified at the destination")
    return True


def _round(cfg, once: bool, extra: list[str], stopper: Stopper, report: "TransferReport"):
    """Both sides run until the destination side finishes (--once), then the sides are compared:
    (0, report, figures). (exit code, None, None) when the run ends otherwise."""
    # --supervised: the source side does not list the source again once everything is staged
    # (only a handed-back object wakes it), and the destination side finishes when it has
    # confirmed everything the source side staged, without listing the source: the
    # comparison below lists both sides anyway
    listing = EarlyListings(cfg, _index()) if once else None
    round_start = ["--round-start", repr(listing.since)] if listing else []
    src = Child(SIDES[0], (["--supervised"] if once else []) + extra)
    dest = Child(SIDES[1], (["--once", "--supervised", *round_start] if once else []) + extra)
    try:
        rc = _supervise([src, dest], once, stopper, cfg, report, listing)
        report.restarts += src.restarts + dest.restarts
        if rc != 0 or not once:
            return rc, None, None
        # the source side was told to stop; the comparison runs while it exits (the ledger
        # locks keep a rewrite and an append apart)
        rep, fig = _compare(cfg, listing.result() if listing else False)
    finally:
        _stop([src, dest])
    return 0, rep, fig


def _end_of_round(rep, report: "TransferReport") -> int | None:
    """The run's exit code after a round's comparison, or None: move what is left again."""
    if rep.complete:
        report.finish(True)
        log.info("verified: every source object is at the destination; report in %s", REPORT_FILE)
        return 0
    report.given_up = given_up(read_state(SRC_STATE), read_state(DEST_STATE))
    if only_set_aside_left(rep.left_outside(report.given_up), report.given_up):
        # the sides tried each of these MAX_TRIES times: another round would only repeat that
        left = rep.left(10)
        report.finish(False)
        log.error("done, except for %d objects set aside after %d tries each: %s; see %s; run repair_ledger.py "
                  "or start again to try them again", rep.source_objects - rep.counts["moved"], MAX_TRIES,
                  "; ".join(f"{k!r}: {report.given_up.get(k, '')}" for k in left), REPORT_FILE)
        return GAVE_UP
    return None


def _supervise(children: list[Child], once: bool, stopper: Stopper, cfg, report: "TransferReport",
               listing: "EarlyListings | None" = None) -> int:
    src, dest = children
    for c in children:
        c.start()
        stopper.track(c.proc)
    from . import compare  # noqa: F401,E501 - loaded while the sides start, ready for the final comparison
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
            if rc in (0, GAVE_UP) and once:
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


def _compare(cfg, source_listed: bool = False):
    """compare.compare_and_repair, imported on first use (boto3 is not needed to start the sides),
    through this process's index (the early source listing is in it)."""
    from . import compare

    return compare.compare_and_repair(cfg, index=_index(), source_listed=source_listed)


_INDEX = None


def _index():
    """This process's connection to the ledger index: one, so that a listing made early (into its
    temporary tables) is there for the comparison."""
    global _INDEX
    if _INDEX is None:
        from .index import Index

        _INDEX = Index()
    return _INDEX


class EarlyListings:
    """The final comparison's source listing, made while the destination side still uploads, so
    that little is left to do when it finishes: the source is listed (into the index's temporary
    table the comparison reads) as soon as the source side reports everything staged (its link
    is idle from then on).

    The destination is never listed early: the verdict on what arrived comes from a listing made
    after the last upload was confirmed, so a store that acknowledges an object and then loses it
    is caught by the run that moved it. When the early listing failed, the comparison lists the
    source itself."""

    READ_EVERY = 1.0

    def __init__(self, cfg, index) -> None:
        self.cfg = cfg
        self.index = index
        self.since = time.time()  # the sides' state files must be newer than this round
        self._src: threading.Thread | None = None
        self.source_listed = threading.Event()  # the source listing is made
        self._seen: tuple[tuple | None, float] = (None, 0.0)  # the source state file's signature, when read

    def poll(self) -> None:
        """Start the source listing when its time has come (a look at the source's state file:
        polled 20 times a second, rewritten at most once a second, so read when its signature
        changed, and at least every READ_EVERY seconds: a signature can repeat within a clock tick)."""
        if self._src is not None:
            return
        sig, now = file_signature(SRC_STATE), time.monotonic()
        if sig is None or (sig == self._seen[0] and now - self._seen[1] < self.READ_EVERY):
            return
        self._seen = (sig, now)
        if done_since(read_state(SRC_STATE), self.since) is not None:
            self._src = threading.Thread(target=self._list_source, name="source-listing", daemon=True)
            self._src.start()

    def _list_source(self) -> None:
        from .compare import list_into

        try:
            list_into(self.index, "listed_src", self.cfg.source, self.cfg)
            self.source_listed.set()
        except Exception as exc:  # noqa: BLE001 - the comparison lists the source itself
            log.debug("early listing of the source failed (%s); the comparison lists it again", exc)

    def result(self) -> bool:
        """Whether the source listing is in the index (the comparison lists the destination
        itself, and the source too when not). Call once the destination side has finished."""
        if self._src is not None:
            self._src.join()
        return self.source_listed.is_set()


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
        self.given_up: dict[str, str] = {}  # key -> why: objects the sides set aside (progress.MAX_TRIES)

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
            "given_up": self.given_up,
            # staging volumes that went, turned read-only, or were too small (health.py), as the
            # sides last saw them, with the staged copies they could not free
            "volume_problems": _volume_problems(src, dest),
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
            *([f"given up:            {len(self.given_up)} (named in {REPORT_FILE})"] if self.given_up else []),
            *[f"staging volume:      {v['path']} {v['state']}" + (f", {v['unfreed']} staged copies not freed"
                                                                 if v.get("unfreed") else "")
              for v in data["volume_problems"]],
            f"duration:            {data['duration_s']} s over {self.rounds} verification round(s)",
            f"written to {REPORT_FILE}",
        ]
        print("\n".join(lines), flush=True)
        return data


def _volume_problems(*states: dict) -> list[dict]:
    """The volumes a side's state file names as not ok, or with staged copies it could not free."""
    out: dict[str, dict] = {}
    for st in states:
        for v in st.get("volumes") or []:
            if v.get("state") not in ("ok", "full") or v.get("unfreed"):
                seen = out.setdefault(v["path"], {"path": v["path"], "state": v.get("state"), "unfreed": 0})
                seen["unfreed"] += int(v.get("unfreed") or 0)
                if v.get("state") not in ("ok", "full"):
                    seen["state"] = v["state"]
    return sorted(out.values(), key=lambda v: v["path"])


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
