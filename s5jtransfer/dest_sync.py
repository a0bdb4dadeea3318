"""Destination side: upload staged, ledgered objects, confirm each at the destination, ledger, free.

A cycle reads as its steps: find the work (staged and ledgered, not yet confirmed), re-hash each
staged copy once (the check that guards the disk), hand it over (upload.py: s5cmd, or its early
multipart upload), confirm what ended (confirm.py: a listing page per up to 1,000 uploads), record
(dest_ledger.csv) and free the staged copy. tries.py bounds the tries of each object."""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from . import checksum, refusal, s3, s5cmd, streaming
from .config import Config
from .completion import SourceCheck, ends_given_up
from .confirm import Confirmer, existing
from .endpoints import Endpoints
from .ledger import SRC_LEDGER
from .progress import DEST_STATE, GAVE_UP, MAX_TRIES, SRC_STATE, Progress, read_state
from .runtime import (Appender, Done, Stopper, file_signature, fmt_bytes, poll_loop,
                      sleep_until_changed)
from .tries import Tries
from .upload import Candidate, Pending, Uploads
from .waiting import StagedWork, Waiting
from .index import Index
from .health import Stall, VolumeWatch
from .volumes import StagedScan, Volume, scan_all

log = logging.getLogger("s5jtransfer.dest")
CONFIRM_AFTER = 2.0  # seconds an upload may wait for confirmation, so one listing confirms many
CONFIRM_BATCH = 1000  # ... or until this many wait
IN_FLIGHT_POLL = 0.25  # seconds between cycles while uploads are in flight (results are collected, confirmed, ledgered)
PROGRESS_EVERY = 10.0  # seconds between progress lines while uploading
SCAN_EVERY = 1.0  # seconds between looks at the staged folders at least (more often when the known work runs low) ...
SCAN_MIN = 0.5  # ... but not more often than this while uploads are in flight (scan_due)
FEED_BYTES = 2 * 1024 ** 3  # bytes re-hashed and fed per cycle at most, so the cycle comes round
LOST_EVERY = 2.0  # seconds between looks for ledgered objects with no staged copy
LOST_BATCH = 10_000  # ... and how many are taken at a look, at most
LEFTOVER_AGE = 600.0  # seconds a staged copy no source row names stays before a start removes it


@dataclass
class DestStats:
    ledgered: int = 0
    uploaded_total: int = 0
    uploaded_bytes_total: int = 0
    pending: int = 0
    staged: int = 0
    fed: int = 0
    in_flight: int = 0
    uploaded: int = 0
    uploaded_bytes: int = 0
    failed: int = 0
    mismatched: int = 0
    lost: int = 0
    given_up: int = 0  # set aside after MAX_TRIES, this cycle
    only_given_up: bool = False  # nothing left to do but objects set aside
    source_total: int | None = None
    source_missing: int | None = None

    @property
    def complete(self) -> bool:
        return self.source_missing == 0


class DestSync:
    def __init__(self, cfg: Config, stopper: Stopper | None = None, dry_run: bool = False) -> None:
        self.cfg = cfg
        self.side = cfg.destination
        self.settings = cfg.settings
        self.stopper = stopper or Stopper()
        self.dry_run = dry_run
        # health.py: volumes gone or read-only (their copies read while they can be, not freed)
        self.watch = VolumeWatch(cfg, create=not dry_run, stages=False)
        self.volumes: list[Volume] = self.watch.volumes
        self.waiting = Waiting(Index() if not dry_run else Index.elsewhere())
        self.eps = Endpoints(self.side, self.settings, pool=self.settings.dest_workers)
        self._warned_empty_key = False  # see _candidates: the source prefix itself, no destination prefix
        self.progress = Progress("destination", None if dry_run else DEST_STATE)
        self.stall = Stall("destination", self.progress, self.settings.stall_warning_seconds)
        self.tries = Tries(self.progress.given_up, quiet_when=s5cmd.failed_with_its_s5cmd)
        self.ledger_sig: tuple | None = None  # see signature()
        self.streamer: streaming.Streamer | None = None  # large objects uploaded while fetched
        if self.settings.stream_uploads and not dry_run:
            self.streamer = streaming.Streamer(self.side, streaming.stream_part_size(self.settings.part_size),
                                               lambda: self.uploads.live()[0],
                                               self.eps.client, lambda exc: s3.describe_error(exc, self.side))
        self.uploads = Uploads(self.side, self.settings, self.eps, s5cmd.find_binary(self.settings.s5cmd_path),
                               self.stopper, self.streamer)
        self.confirmer = Confirmer(self.side, self.eps)
        self.refusals = refusal.Streak(self.side, "uploads")  # a store that refuses every upload: exit 2
        self.source_check = SourceCheck(cfg, self.stopper, self.waiting.index)
        self.leftovers = Leftovers(self)
        self._scan = StagedScan()
        self._work = StagedWork(self.waiting)  # the staged copies waiting for an upload, across cycles
        self._scanned = -SCAN_EVERY  # when the staged folders were last looked at
        self._to_confirm: list[tuple[Candidate, float]] = []  # uploaded, not yet confirmed (since when)
        self._done_by_key: dict[str, Candidate] = {}  # confirmed, staged copy freed after the ledger flush
        self._appender = Appender(self.waiting.dest, after_flush=self._after_flush)
        self.started = time.time()  # a source state file older than this is from an earlier run
        self._handed_back_times: dict[str, int] = {}  # key -> staged copies found damaged
        self._compact = False  # an object confirmed again (a newer version): compact when idle

    # -- state (waiting.py) ------------------------------------------------------------------
    def refresh(self) -> None:
        # what the source ledger looked like when read: the sleep after this cycle wakes at once
        # if it changed since (rows appended while this cycle ran), not only on a later change
        self.ledger_sig = self.signature(SRC_LEDGER)
        if self.waiting.loaded:
            # a ledger rewritten (repair_ledger.py, objects handed back), or repair_ledger.py ran:
            # objects set aside are tried again
            replaced = self.waiting.tail()
            if replaced:
                self._work.forget()
            if replaced | self.tries.asked_again():
                self.tries.forgive()
            return
        self.waiting.load(create=not self.dry_run)
        self.confirmer.trust.matched = self.waiting.index.etags_matched("dest")  # its ETags matched before: MD5s
        if not self.dry_run:
            self.leftovers.at_start()
        if self.streamer is not None:
            self.streamer.recover()

    def signature(self, path: str) -> tuple:
        """What the sleep between cycles watches: the source ledger (newly staged objects) and,
        with streamed uploads, the folders of the source side's notes (a note written or replaced:
        new parts to send). Local stats, no S3 request."""
        sig: tuple = (file_signature(path),)
        if self.streamer is not None:
            sig += tuple(file_signature(v.notes_dir) for v in self.volumes)
        return sig

    # -- one cycle -----------------------------------------------------------------------
    def cycle(self, check_source: bool, trust_source: bool = False) -> DestStats:
        st = DestStats()
        self.refresh()
        self._collect(st)
        if self.streamer is not None:
            self.streamer.scan(self.volumes, self.waiting.is_waiting)
        if self.dry_run:
            print_plan(self.side, self._candidates(st, None), self.waiting.unconfirmed(), self.settings.max_l2dest)
            return st
        cands = identify(self._select(self._candidates(st, room(self.settings, self.uploads.flight))))
        if cands:
            # objects with an early multipart upload: it reads the staged copy once and completes
            # only when it still has the checksum verified at staging; the rest is re-hashed here
            taken, cands = self.uploads.hand_streamed(cands)
            st.fed += taken
        if cands:
            cands = self._check_staged(cands, st)
        if cands:
            self._feed(cands, st)
            self._collect(st)
        self._confirm_uploads(self._confirm_due(), st)
        self.uploads.close_idle()
        self.compact()
        st.in_flight = len(self.uploads.flight) + len(self._to_confirm)
        st.pending = self.waiting.unconfirmed()
        st.ledgered = self.waiting.index.totals().src_objects
        st.uploaded_total = st.ledgered - st.pending
        self.waiting.update_progress(self.progress)
        if check_source:
            self._judge_completion(st, trust_source)
        return st

    def _look(self, now: float, busy: set[str], most: int | None) -> None:
        """The staged folders looked at when due (scan_due; a stat per folder, only folders that
        changed are read) and taken in (StagedWork), with each volume's health for the state file."""
        if not scan_due(now - self._scanned, len(self._work.todo), len(busy), most):
            return
        self._scan.scan(self.volumes)
        self._scanned, held = now, self._scan.bytes
        self.progress.health["volumes"] = [dict(d, staged_bytes=held.get(d["path"], 0)) for d in self.watch.states()]
        done = self._work.update(self._scan, self.ledger_sig)
        if done:
            self.leftovers.free(done, self._scan.staged)

    def _candidates(self, st: DestStats, most: int | None) -> list[Candidate]:
        """The first `most` (None: all) staged copies waiting for an upload whose turn it is, in the
        work's order; ledgered objects with no staged copy are healed (Leftovers.heal)."""
        busy = set(self.uploads.flight) | {c.path for c, _t in self._to_confirm}
        now = time.monotonic()
        self.watch.check()
        self._look(now, busy, most)
        staged = self._scan.staged
        cands: list[Candidate] = []
        for name in self._work.ordered():
            if most is not None and len(cands) >= most:
                break
            key, row, _size = self._work.todo[name]
            if not key and not self.side.prefix:
                # the source prefix itself, ledgered under another configuration: an empty key
                # would be a request on the bucket (src_sync._unmappable_once says why and what to do)
                self._warned_empty_key = self._warned_empty_key or _warn_empty_key()
                continue
            path = staged[name][0].staged_path(name)
            if path in busy or not self.tries.due(key, now):
                continue
            cands.append(Candidate(key, Pending(row, name), path, None))  # ident: identify(), once selected
        st.staged = len(cands)
        self.leftovers.heal(staged, st)
        return cands

    def _select(self, cands: list[Candidate]) -> list[Candidate]:
        """What to hand over now, in the work's order (StagedWork.ordered), of candidates that are
        already at most room() objects (_candidates): within the bytes in flight
        (dest_max_bytes_in_flight), and FEED_BYTES re-hashed per cycle."""
        cands = within(cands, self.uploads.bytes_in_flight, self.settings.max_l2dest or None)
        return within(cands, 0, FEED_BYTES)

    def _judge_completion(self, st: DestStats, trust_source: bool) -> None:
        """--once: is every source object confirmed here, or set aside by either side?"""
        gave = self.waiting.unconfirmed_of(self.progress.given_up) if self.progress.given_up else 0
        if st.pending == gave:
            got = None
            if trust_source:
                got = self.source_check.by_source_state(max(self.started, self.waiting.handed_back), gave)
            elif self.source_check.worth_listing():
                got = self.source_check.by_listing()
            if got is not None:
                st.source_total, st.source_missing = got
        if st.source_missing:  # something is missing: is it only what either side set aside?
            gave += int((read_state(SRC_STATE) or {}).get("given_up_count") or 0)
            st.only_given_up = ends_given_up(gave, st.in_flight, st.source_missing)

    def _check_staged(self, cands: list[Candidate], st: DestStats) -> list[Candidate]:
        """Re-hash every staged copy before upload: a copy that no longer matches the MD5 the
        source side verified (disk fault, power cut before the data reached the disk, tampering)
        is never uploaded; it is deleted and taken out of the source ledger to be fetched again.
        The same read yields the ETag the upload must produce."""
        ok = rehash(cands, self.settings.part_size)
        bad = [c for c, good in zip(cands, ok) if not good]
        if bad:  # the row looked up may be older than the copy (StagedWork): a newer version is no damage
            cands, ok = self._work.without_newer(cands, ok)
            bad = [c for c, good in zip(cands, ok) if not good]
        if bad:
            st.mismatched += len(bad)
            back = []
            for c in bad:
                n = self._handed_back_times[c.key] = self._handed_back_times.get(c.key, 0) + 1
                if n >= MAX_TRIES:  # fetched and damaged again and again: a disk to look at
                    self._failed_try(c, f"its staged copy did not match the checksum verified at staging {n} times",
                                     st, at_once=True)
                    continue
                log.warning("staged copy of %r does not match the checksum verified at staging: discarded, "
                            "the source side fetches it again (%d of %d)", c.key, n, MAX_TRIES)
                self.watch.free(c.path)
                back.append(c.key)
            if back:
                self.waiting.hand_back(back)
        return [c for c, good in zip(cands, ok) if good]

    # -- uploading (upload.py) and confirming (confirm.py) ------------------------------------
    def _feed(self, cands: list[Candidate], st: DestStats) -> None:
        st.fed += len(cands)
        via_api = self.uploads.feed(cands)
        now = time.monotonic()
        for c, error in self.uploads.upload_api(via_api) if via_api else ():
            if error is None:
                self._to_confirm.append((c, now))
            else:
                self._failed(c, error, st)
        self.refusals.check()

    def _collect(self, st: DestStats) -> None:
        """Uploads that ended since the last cycle: successes wait for confirmation (or are
        confirmed at once by the destination's answer), failures are tried again after a backoff."""
        now = time.monotonic()
        answered: dict[str, s3.Obj] = {}  # early multipart uploads: CompleteMultipartUpload's answer
        confirmed: list[Candidate] = []
        for r in self.uploads.take_results():  # in the order the uploaders reported them
            c: Candidate = r.cand
            if r.ok:
                self.refusals.succeeded()
            if r.ok and r.answer is not None:
                answered[c.key] = r.answer
                confirmed.append(c)
            elif r.ok:
                self._to_confirm.append((c, now))
            else:
                self._failed(c, r.error, st)
        self._confirm_uploads(confirmed, st, answered)
        self.refusals.check()

    def _failed(self, c: Candidate, error: str, st: DestStats) -> None:
        st.failed += 1
        self.refusals.failed(c.key, error)
        self._failed_try(c, f"upload failed: {error or 'unknown error'}", st,
                         what=f"upload of {c.key!r} failed: {error or 'unknown error'}")

    def _failed_try(self, c: Candidate, why: str, st: DestStats, at_once: bool = False, what: str = "") -> None:
        """Tried again after a backoff; after MAX_TRIES set aside until a restart or
        repair_ledger.py, named once in the log and in the state file (status.py, the report)."""
        if self.tries.failed(c.key, why, at_once, what or f"upload of {c.key!r}: {why}"):
            st.given_up += 1
            self.progress.write_state(force=True)

    def _confirm_due(self) -> list[Candidate]:
        """Uploads to confirm now: once CONFIRM_BATCH wait or the oldest has waited CONFIRM_AFTER
        seconds (so one listing confirms many, also while this side keeps up with the source side),
        or once nothing is in flight and the source side has nothing more to stage (no batch to
        wait for: the end of a pass, or this side runs alone)."""
        if not self._to_confirm:
            return []
        if (len(self._to_confirm) < CONFIRM_BATCH and time.monotonic() - self._to_confirm[0][1] < CONFIRM_AFTER
                and (self.uploads.flight or not self.source_check.worth_listing())):
            return []
        due, self._to_confirm = [c for c, _t in self._to_confirm], []
        return due

    def _confirm_uploads(self, cands: list[Candidate], st: DestStats, answered: dict[str, s3.Obj] | None = None) -> None:
        """Check each upload at the destination (confirm.py), ledger it, then free its staged copy."""
        if not cands:
            return
        index = self.waiting.index
        rows = self.confirmer.confirm(cands, answered or {}, lambda lo, hi, most: index.count_between("dest", lo, hi, most),
                                      self.uploads.live()[0])
        for c, row in zip(cands, rows):
            if isinstance(row, str):  # why it does not confirm
                st.mismatched += 1
                self._failed_try(c, row, st)
                continue
            self.tries.succeeded(c.key)
            # a newer version of an uploaded object: two rows of its key, made one when idle
            self._compact = self._compact or self.waiting.index.row("dest", c.key) is not None
            st.uploaded += 1
            st.uploaded_bytes += c.size
            self.progress.counted(1, c.size)
            self._done_by_key[c.key] = c
            self._appender.add(row)
        self._appender.flush()
        self.waiting.index.refresh(("dest",))  # confirmed now: no later cycle takes it for waiting
        self.progress.write_state()

    def _after_flush(self, rows: list[tuple]) -> None:
        # Only now, with the destination ledger on disk, may the staged copies go.
        done, same, replaced = [], [], []
        for row in rows:
            c = self._done_by_key.pop(row[0], None)
            if c is None:
                continue
            done.append((c.key, c.pending.row))
            kept = file_signature(c.path) == c.ident  # else replaced by a newer version: looked up again
            (same if kept else replaced).append(c.pending.name)
            if kept and self.cfg.delete_staging_data:
                self.watch.free(c.path)
        self.waiting.release(done)
        self._work.released(same, replaced)

    def compact(self) -> None:
        """Objects uploaded again (changed at the source): the destination ledger rewritten with one
        row per key, from the index, once nothing waits (`wc -l` stays the object count plus one)."""
        if self._compact and not self.uploads.flight and not self._to_confirm:
            self._compact = False
            self.waiting.index.rewrite("dest", lambda db: None)

    def close(self) -> None:
        """End the uploads (on exit): what is unconfirmed stays unledgered and is uploaded again."""
        self.uploads.close()
        if self.streamer is not None:
            self.streamer.close()
        self.confirmer.close()
        self.progress.write_state(force=True)  # the last confirmations (writes are at most one a second)


class Leftovers:
    """Staged copies whose object needs no upload here: confirmed already (freed and released),
    left by an earlier run that no source row names (removed after LEFTOVER_AGE), or ledgered
    objects whose staged copy is gone (heal_lost)."""

    def __init__(self, sync: "DestSync") -> None:
        self.cfg = sync.cfg
        self.volumes = sync.volumes
        self.watch = sync.watch
        self.waiting = sync.waiting
        self.confirmer = sync.confirmer
        self.dry_run = sync.dry_run
        self._missing_staged: set[str] = set()
        self._lost_at = -LOST_EVERY  # when objects without a staged copy were last looked for

    def at_start(self) -> None:
        """Staged copies of objects already confirmed at the destination (a stop between the
        ledger append and the delete) are removed at start-up, and released; so are staged copies
        no source row names for LEFTOVER_AGE (from a run whose rows are gone: reset.py, a ledger
        replaced), which nothing would ever upload or free."""
        staged = scan_all(self.volumes)
        if not staged:
            return
        _todo, done = self.waiting.staged_work(staged)
        freed = [(key, row) for key, row in done.values()]
        if self.cfg.delete_staging_data:
            for name in done:
                vol = staged[name][0]
                self.watch.free(vol.staged_path(name))
        self.waiting.release(freed)
        known = set(_todo) | set(done)
        old = time.time() - LEFTOVER_AGE
        swept = 0
        for name, (vol, _size) in staged.items():
            path = vol.staged_path(name)
            if name not in known and self.cfg.delete_staging_data and _mtime(path) < old:
                self.watch.free(path)
                swept += 1
        if freed or swept:
            log.info("removed %d staged copies already confirmed at the destination%s", len(freed),
                     f", and {swept} left by an earlier run that no ledger row names" if swept else "")

    def free(self, done: dict[str, tuple[str, tuple]], staged: dict) -> None:
        """Staged copies of objects the destination ledger confirms (another run uploaded them, or
        a comparison ledgered them): freed and released, as after an upload."""
        if self.cfg.delete_staging_data:
            for name in done:
                self.watch.free(staged[name][0].staged_path(name))
        self.waiting.release(list(done.values()))

    def heal(self, staged: dict, st: DestStats) -> None:
        """Ledgered objects with no staged copy on two looks in a row (a ledgered object is always
        staged first: rename, then ledger append), so really gone from the volumes: heal_lost.
        Looked for every LOST_EVERY seconds, LOST_BATCH at a time."""
        now = time.monotonic()
        if now - self._lost_at < LOST_EVERY or self.dry_run:
            return
        self._lost_at = now
        lost = {key: (name, row) for name, key, row in self.waiting.lost(set(staged), LOST_BATCH)}
        confirmed = {k: v for k, v in lost.items() if k in self._missing_staged}
        self._missing_staged = set(lost) - set(confirmed)
        if confirmed:
            st.lost = heal_lost(confirmed, self.waiting, self.confirmer)


def heal_lost(lost: dict[str, tuple[str, tuple]], waiting: Waiting, confirmer: Confirmer) -> int:
    """Ledgered objects gone from the volumes (key -> (staged name, source row)): already at the
    destination (a ledger from the original scripts, or a stop between upload and ledger) they are
    confirmed there and ledgered; otherwise (a volume wiped or replaced) they are taken out of the
    source ledger so the source side fetches them again, instead of waiting forever. Returns how
    many were handed back."""
    rows, drop = [], []
    for k, (_name, src_row) in lost.items():
        try:
            there = confirmer.head(k)
        except Exception:  # noqa: BLE001 - not readable: fetch it again
            there = None
        row = existing(k, src_row, there, waiting.index.row("dest", k), confirmer.opaque)
        (rows.append(row) if row else drop.append(k))
    if rows:
        waiting.dest.append(rows)
        waiting.index.refresh(("dest",))
        waiting.release([(row[0], lost[row[0]][1]) for row in rows])
        log.info("%d ledgered objects without a staged copy are already at the destination; ledgered them", len(rows))
    if drop:
        log.warning("%d ledgered objects have no staged copy on any volume and are not at the destination (e.g. "
                    "%r); removing them from %s so the source side fetches them again", len(drop), drop[0], SRC_LEDGER)
        waiting.hand_back(drop)
    return len(drop)


def scan_due(since: float, known: int, busy: int, most: int | None) -> bool:
    """Is it time to look at the staged folders again, `since` seconds after the last look, with
    `known` staged copies known to wait, `busy` uploads in flight or waiting for confirmation, and
    `most` handed over per cycle at most (None: no limit)? Every SCAN_EVERY at least, sooner when
    the known work runs low (under twice what a cycle hands over, beyond what is busy), but while
    uploads are busy not sooner than SCAN_MIN: a look costs a stat per staged folder and a read of
    each folder that changed, about as much for a few new copies as for many, so a look at every
    cycle (IN_FLIGHT_POLL) cost a fifth of the side's CPU with many small objects. With nothing
    busy and nothing known, at once."""
    if most is None or since >= SCAN_EVERY:
        return True
    if known >= busy + 2 * most:
        return False
    return since >= SCAN_MIN or not (busy or known)


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return float("inf")  # gone meanwhile: nothing to remove


def _warn_empty_key() -> bool:
    log.error("the ledgered object whose key is the source prefix itself cannot be uploaded: with an empty "
              "destination.bucket_prefix its key would be empty; set destination.bucket_prefix in config.yaml")
    return True


def print_plan(side, cands: list[Candidate], pending: int, max_bytes: int | None) -> None:
    """--dry-run: what would be uploaded now."""
    if max_bytes:
        cands = within(cands, 0, max_bytes)
    ep = side.endpoint or f"AWS {side.region}"
    print(f"uploads would write: {side.writes.describe()}")
    for c in cands:
        print(f"would upload {c.path} ({c.size} bytes) to {side.url(c.key)!r} at {ep}")
    print(f"dry run: {len(cands)} staged objects ({sum(c.size for c in cands)} bytes) would be "
          f"uploaded; {pending - len(cands)} ledgered objects are not staged here; nothing was changed")


def rehash(cands: list[Candidate], part: int) -> list[bool]:
    """Hash each staged copy once: True when it still has its ledgered size and verified
    checksum; then c.md5, c.part and c.upload_etag (what the upload must produce) are set from the
    same read. Copies of checksum.INLINE_BELOW bytes or more are hashed in threads (hashlib releases the
    GIL), the others here: handing a small file to a thread costs more than reading it."""
    big = [i for i, c in enumerate(cands) if c.size >= checksum.INLINE_BELOW]
    if len(big) < 2:
        return [_rehash_one(c, part) for c in cands]
    ok: list[bool] = [False] * len(cands)
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        futures = {i: pool.submit(_rehash_one, cands[i], part) for i in big}
        for i, c in enumerate(cands):
            if i not in futures:
                ok[i] = _rehash_one(c, part)
        for i, fut in futures.items():
            ok[i] = fut.result()
    return ok


# Made beside the MD5 in the same read (a thirtieth of its cost): what AWS S3 keeps of every new
# object, and what confirms an upload where the destination's ETags are no MD5s (evidence.py)
DEST_SUMS = (checksum.CRC64NVME,)


def _rehash_one(c: Candidate, part: int) -> bool:
    size, src_etag, _level, md5 = c.pending.row[:4]
    try:
        if not md5 and checksum.source_part_sizes(size, src_etag):
            # verified at staging by the source's parts, without the whole MD5 (a row with no MD5
            # and a multipart ETag, whether its Verified says multipart or checksum): checked again the
            # same way, and uploaded with the same parts, so its ETag at the destination is the
            # source's (one pass here too)
            ok, d = checksum.check(c.path, size, src_etag, whole=False, sums=DEST_SUMS)
            if ok is None:
                return False
            same = checksum.matched_part_size(src_etag, d.multi)
            if checksum.reusable_part_size(same):
                c.md5, c.part, c.upload_etag, c.sums = "", same, src_etag.lower(), d.sums
                return True
            # a part size our uploads cannot use (reusable_part_size): the configured one, a second read
        d = checksum.hash_file(c.path, (part,) if size >= part else (), sums=DEST_SUMS)
    except OSError as exc:
        log.warning("cannot read staged copy of %r: %s", c.key, exc)
        return False
    if d.nbytes != size or (md5 and d.md5 != md5):
        return False
    c.md5, c.part, c.sums = d.md5, part, d.sums
    c.upload_etag = checksum.upload_etag(d.md5, size, part, d.multi)
    return True


def identify(cands: list[Candidate]) -> list[Candidate]:
    """Note each selected staged copy's signature (runtime.file_signature), by which its deletion
    after confirmation knows it is still the same file, and a confirmation by the Content-MD5 of
    its upload knows its bytes did not change since they were checked; those gone meanwhile are
    dropped. Only the selected: a stat
    of every pending copy each cycle cost more than the rest of the cycle. (A size that differs
    from the ledger is a damaged copy: _check_staged discards it.)"""
    out = []
    for c in cands:
        c.ident = file_signature(c.path)
        if c.ident is not None:
            out.append(c)
    return out


def room(settings, flight) -> int:
    """Uploads to hand over now, at most: enough to keep every worker busy, few enough that
    confirmations and the ledger keep up."""
    return max(max(4 * settings.dest_workers, 256) - len(flight), 0)


def within(cands: list[Candidate], used: int, limit: int | None) -> list[Candidate]:
    """The candidates that fit in `limit` bytes beside `used`, in their order; with nothing used,
    the largest one over the limit instead, alone (so an object larger than the limit still moves,
    and a stream of small ones never starves it)."""
    if not limit:
        return cands
    if not used:
        over = [c for c in cands if c.size > limit]
        if over:
            return [max(over, key=lambda c: c.size)]
    kept, total = [], used
    for c in cands:
        if total + c.size > limit:
            continue
        kept.append(c)
        total += c.size
    return kept


class _Lines:
    """Uploads stream, so cycles come often: one progress line per PROGRESS_EVERY seconds
    (counting everything since the last line), and at once on a failure or a completeness check."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.at = 0.0
        self.uploaded = self.bytes = self.failed = self.mismatched = 0

    def after(self, st: DestStats, started: float) -> None:
        self.uploaded += st.uploaded
        self.bytes += st.uploaded_bytes
        self.failed += st.failed
        self.mismatched += st.mismatched
        if st.failed or st.mismatched:
            self.progress.retries += st.failed + st.mismatched  # the report's destination_failed_uploads
            self.progress.write_state(force=True)
        now = time.monotonic()
        news = self.uploaded or self.failed or self.mismatched or st.source_missing
        if news and (st.failed or st.mismatched or st.source_total is not None or now - self.at >= PROGRESS_EVERY):
            msg = (f"destination: {self.progress.line()} confirmed; since the last line: "
                   f"{self.uploaded} uploaded ({fmt_bytes(self.bytes)}) in {now - (self.at or started):.1f}s, "
                   f"{self.failed} failed, {self.mismatched} mismatched; {st.pending} pending")
            if st.source_total is not None:
                msg += f"; {st.source_missing} of {st.source_total} source objects not yet at the destination"
            log.info(msg)
            self.at, self.uploaded, self.bytes, self.failed, self.mismatched = now, 0, 0, 0, 0
        elif not self.at:
            self.at = now


def next_pause(st: DestStats, settings, once: bool, delay: float) -> float:
    """Seconds until the next cycle (the sleep also wakes when the source side ledgers newly
    staged objects, or the last upload in flight reports)."""
    if st.in_flight:
        return IN_FLIGHT_POLL  # come back to collect results
    if st.staged and not st.fed:
        return settings.poll_interval  # staged copies waiting for a retry backoff
    if st.pending:
        return min(settings.poll_interval, 0.25)  # the source side is staging: a local scan, no S3 request
    # idle: back off, but a --once run keeps checking for the source side's last objects
    cap = max(settings.poll_interval * 4 if once else settings.max_poll_interval, settings.poll_interval)
    return min(max(delay * 2, settings.poll_interval), cap)


def run(cfg: Config, once: bool, stopper: Stopper, dry_run: bool = False, supervised: bool = False,
        round_start: float | None = None) -> int:
    """supervised (sync_mvol.py --once, which compares both sides at the end): finish when
    everything the source side staged is confirmed and it reports the source done, without
    listing the source here. round_start: when sync_mvol.py started both sides; a source state
    file written since is this round's, even when it came before this side was up (a source
    side can list and stage a few objects in half a second, while this one still starts)."""
    sync = DestSync(cfg, stopper, dry_run)
    if round_start is not None:
        sync.started = min(sync.started, round_start)
    log.info("destination side: %d staging volume(s) -> %s via %s", len(sync.volumes), cfg.destination.url(),
             cfg.destination.endpoint or f"AWS {cfg.destination.region}")
    lines = _Lines(sync.progress)

    def after(st: DestStats, started: float, delay: float) -> float:
        lines.after(st, started)
        sync.stall.note(st.pending > 0 or st.in_flight > 0, "endpoint" if st.staged or st.in_flight else "source side",
                        sync.uploads.io())
        if once and st.only_given_up:
            names = sorted(sync.progress.given_up.items())[:10]
            log.error("destination: done, except for %d objects set aside after %d tries each (the source side "
                      "names its own): %s; run repair_ledger.py, or start again, to try them again",
                      st.source_missing, MAX_TRIES, "; ".join(f"{k!r}: {why}" for k, why in names) or "see the source side")
            raise Done(GAVE_UP)
        if once and st.complete:
            log.info("destination: all %d source objects are confirmed at the destination; done", st.source_total)
            raise Done
        return next_pause(st, cfg.settings, once, delay)

    # The sleep wakes when the source side ledgers newly staged objects (a stat of the ledger per
    # tick, no S3 request: an idle side stays quiet, a busy one starts uploading within a tick),
    # or when the last upload in flight reports.
    try:
        return poll_loop(lambda: sync.cycle(check_source=once, trust_source=supervised), after,
                         lambda exc: s3.describe_error(exc, cfg.destination), cfg.settings, stopper,
                         sleep=lambda seconds: sleep_until_changed(SRC_LEDGER, seconds, stopper, since=sync.ledger_sig,
                                                                   signature=sync.signature,
                                                                   wake=sync.uploads.drained),
                         dry_run=dry_run)
    finally:
        sync.close()
