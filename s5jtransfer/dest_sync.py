"""Destination side: upload staged, ledgered objects, confirm each at the destination, ledger, free."""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from . import checksum, s3, s5cmd, streaming
from .config import Config
from .ledger import (DEST_COLUMNS, DEST_LEDGER, SRC_COLUMNS, SRC_LEDGER, Ledger, dest_done, dest_knows_other,
                     file_lock)
from .endpoints import Endpoints
from .progress import DEST_STATE, GAVE_UP, MAX_TRIES, SRC_STATE, Progress, done_since, read_state
from .runtime import (Appender, Done, Stopper, die_with_parent, file_signature, fmt_bytes, interruptible,
                      poll_loop, remove_quietly, sleep_until_changed)
from .volumes import Volume, discover, scan_all, staged_name

log = logging.getLogger("s5jtransfer.dest")
RUN_FILE = "dest_commands.txt"
LIST_PAGE_COST = 12  # a listing page (1,000 keys) costs about 12 HeadObjects (S3's price ratio; more server CPU)
CONFIRM_AFTER = 5.0  # seconds an upload may wait for confirmation, so one listing confirms many
CONFIRM_BATCH = 1000  # ... or until this many wait
SET_ASIDE_STREAK = 5  # failed uploads in a row, with no success between, that set an endpoint aside
MAX_RETRY_BACKOFF = 60.0  # seconds; a failed upload is retried after 1, 2, 4 ... up to this
STREAM_IDLE = 2.0  # seconds an s5cmd with nothing to do is kept before it is ended
LIVE_REFRESH = 5.0  # seconds between endpoint probes while uploading
IN_FLIGHT_POLL = 0.25  # seconds between cycles while uploads are in flight (results are collected, confirmed, ledgered)
PROGRESS_EVERY = 10.0  # seconds between progress lines while uploading
FEED_BYTES = 2 * 1024 ** 3  # bytes re-hashed and fed per cycle at most, so the cycle comes round


@dataclass
class Pending:
    row: tuple  # source ledger row: (size, etag, verified, md5)
    name: str  # staged file name


@dataclass
class Candidate:
    key: str
    pending: Pending
    path: str
    ident: tuple[int, int]  # (inode, mtime) of the staged file when picked
    md5: str = ""  # of the staged bytes, from the pre-upload check
    upload_etag: str = ""  # the ETag an upload with the configured part size produces


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
        self.volumes: list[Volume] = discover(cfg, create=not dry_run)
        self.src_ledger = Ledger(SRC_LEDGER, SRC_COLUMNS)
        self.dest_ledger = Ledger(DEST_LEDGER, DEST_COLUMNS)
        self.src_rows: dict[str, tuple] = {}
        self.dest_rows: dict[str, tuple] = {}
        self.pending: dict[str, Pending] = {}
        self.eps = Endpoints(self.side, self.settings, pool=self.settings.dest_workers)
        self._client_at = 0  # the endpoint that confirms uploads (see _head)
        self._heads: dict[int, s3.Heads] = {}
        self.binary = s5cmd.find_binary(self.settings.s5cmd_path)
        self._loaded = False
        self._missing_staged: set[str] = set()
        self._warned_empty_key = False  # see cycle: the source prefix itself, no destination prefix
        self.progress = Progress("destination", None if dry_run else DEST_STATE)
        self._progress_stale = True  # src_rows or pending changed since the totals were summed
        self.ledger_sig: tuple | None = None  # see signature()
        self.drained = threading.Event()  # set when the streams have nothing left in flight
        self._streams: dict[int, s5cmd.Stream] = {}  # endpoint index -> its running s5cmd
        self._stream_busy: dict[int, float] = {}  # endpoint index -> when it last had work
        # (endpoint, local, ok, error, ETag the destination answered: early multipart uploads only)
        self._results: list[tuple[int, str, bool, str, str | None]] = []
        self._results_lock = threading.Lock()
        self._flight: dict[str, Candidate] = {}  # staged path -> candidate handed to s5cmd, no result yet
        self._to_confirm: list[tuple[Candidate, float]] = []  # uploaded, not yet confirmed (since when)
        self._done_by_key: dict[str, Candidate] = {}  # confirmed, staged copy freed after the ledger flush
        self._retry_at: dict[str, tuple[float, int]] = {}  # key -> (not before, failures so far)
        self._streak: dict[int, tuple[int, str]] = {}  # endpoint -> (failures in a row, the last error)
        self._live_cache: list[int] | None = None
        self._live_at = 0.0
        self._appender = Appender(self.dest_ledger, after_flush=self._after_flush)
        self.started = time.time()  # a source state file older than this is from an earlier run
        self.streamer: streaming.Streamer | None = None  # large objects uploaded while fetched
        if self.settings.stream_uploads and not dry_run:
            self.streamer = streaming.Streamer(self.side, self.settings.part_size, lambda: self._live()[0],
                                               self.eps.client, lambda exc: s3.describe_error(exc, self.side))
        self._handed_back = 0.0  # when keys were last taken out of the source ledger
        self._handed_back_times: dict[str, int] = {}  # key -> staged copies found damaged

    def _heads_at(self, ep: int) -> s3.Heads:
        heads = self._heads.get(ep)
        if heads is None:
            heads = self._heads[ep] = s3.Heads(self.side, lambda: self.eps.client(ep), ep)
        return heads

    def _head(self, key: str) -> s3.Obj | None:
        """HeadObject at the endpoint in use (the second way to confirm an upload)."""
        return self._heads_at(self._client_at).head(key)

    # -- state ---------------------------------------------------------------------------
    def _recompute_pending(self) -> None:
        get = self.dest_rows.get
        self.pending = {k: Pending(r, staged_name(k)) for k, r in self.src_rows.items() if not dest_done(r, get(k))}
        self._progress_stale = True

    def refresh(self) -> None:
        # what the source ledger looked like when read: the sleep after this cycle wakes at once
        # if it changed since (rows appended while this cycle ran), not only on a later change
        self.ledger_sig = self.signature(SRC_LEDGER)
        if not self._loaded:
            if not self.dry_run:
                self.dest_ledger.ensure()
            self.dest_rows = self.dest_ledger.load()
            self.src_rows = self.src_ledger.load()
            self._recompute_pending()
            self._loaded = True
            if not self.dry_run:
                self._free_uploaded()
            if self.streamer is not None:
                self.streamer.recover()
            return
        replaced_s, keys = self.src_ledger.tail(self.src_rows)
        replaced_d, _ = self.dest_ledger.tail(self.dest_rows)
        if replaced_s or replaced_d:
            # a ledger rewritten by repair_ledger.py (or handed-back objects): objects set aside
            # get their tries again
            self._forgive()
            self._recompute_pending()
            return
        for k in keys:
            r = self.src_rows[k]
            if not dest_done(r, self.dest_rows.get(k)):
                self.pending[k] = Pending(r, staged_name(k))
            else:
                self._settle(k)
        self._progress_stale |= bool(keys)

    def signature(self, path: str) -> tuple:
        """What the sleep between cycles watches: the source ledger (newly staged objects) and,
        with streamed uploads, the folders of the source side's notes (a note written or replaced:
        new parts to send). Local stats, no S3 request."""
        sig: tuple = (file_signature(path),)
        if self.streamer is not None:
            sig += tuple(file_signature(v.notes_dir) for v in self.volumes)
        return sig

    def _settle(self, key: str) -> None:
        """The key no longer waits for an upload (confirmed, or handed back to the source side)."""
        if self.pending.pop(key, None) is not None:
            self._progress_stale = True

    def _free_uploaded(self) -> None:
        """Staged copies of objects already confirmed at the destination (a stop between the
        ledger append and the delete) are removed at start-up."""
        if not self.cfg.delete_staging_data:
            return
        staged = scan_all(self.volumes)
        if not staged:
            return
        names = {staged_name(k): k for k, r in self.src_rows.items() if dest_done(r, self.dest_rows.get(k))}
        freed = 0
        for name, (vol, _size) in staged.items():
            if name in names:
                remove_quietly(vol.staged_path(name))
                freed += 1
        if freed:
            log.info("removed %d staged copies already confirmed at the destination", freed)

    # -- one cycle -----------------------------------------------------------------------
    def cycle(self, check_source: bool, trust_source: bool = False) -> DestStats:
        st = DestStats()
        self.refresh()
        self._collect(st)
        if self.streamer is not None:
            self.streamer.scan(self.volumes, self.pending.__contains__)
        busy = set(self._flight) | {c.path for c, _t in self._to_confirm}
        now = time.monotonic()
        staged = scan_all(self.volumes)
        cands: list[Candidate] = []
        lost = []
        for key, p in self.pending.items():
            if not key and not self.side.prefix:
                # the source prefix itself, ledgered under another configuration: an empty key
                # would be a request on the bucket (src_sync._mappable says why and what to do)
                if not self._warned_empty_key:
                    self._warned_empty_key = True
                    log.error("the ledgered object whose key is the source prefix itself cannot be uploaded: "
                              "with an empty destination.bucket_prefix its key would be empty; set "
                              "destination.bucket_prefix in config.yaml")
                continue
            hit = staged.get(p.name)
            if hit is None:
                lost.append(key)
                continue
            vol, size = hit
            path = vol.staged_path(p.name)
            if path in busy or self._retry_at.get(key, (0.0, 0))[0] > now or key in self.progress.given_up:
                continue
            # A size that differs from the ledger is a damaged copy: _check_staged discards it.
            try:
                sst = os.stat(path)
            except FileNotFoundError:
                continue
            cands.append(Candidate(key, p, path, (sst.st_ino, sst.st_mtime_ns)))
        st.staged = len(cands)
        self._heal_lost(lost, st)
        if self.dry_run:
            if self.settings.max_l2dest:
                cands = self._within(cands, 0, self.settings.max_l2dest)
            ep = self.side.endpoint or f"AWS {self.side.region}"
            for c in cands:
                print(f"would upload {c.path} ({c.pending.row[0]} bytes) to {self.side.url(c.key)!r} at {ep}")
            print(f"dry run: {len(cands)} staged objects ({sum(c.pending.row[0] for c in cands)} bytes) would be "
                  f"uploaded; {len(self.pending) - len(cands)} ledgered objects are not staged here; nothing was changed")
            return st
        max_objects, max_bytes = self._flight_limits()
        room = max_objects - len(self._flight)
        flying = sum(c.pending.row[0] for c in self._flight.values())
        # largest first, before the count limit: a restart with everything staged starts the large
        # uploads at once, beside the small ones, instead of after the first few hundred small ones
        cands.sort(key=lambda c: -c.pending.row[0])
        cands = self._within(cands, flying, max_bytes)[:max(room, 0)]
        cands = self._within(cands, 0, FEED_BYTES)
        if cands:
            cands = self._check_staged(cands, st)
        if cands:
            self._feed(cands, st)
            self._collect(st)
        self._confirm_uploads(self._confirm_due(), st)
        self._close_idle_streams()
        st.in_flight = len(self._flight) + len(self._to_confirm)
        st.pending = len(self.pending)
        st.ledgered = len(self.src_rows)
        st.uploaded_total = st.ledgered - st.pending
        self._update_progress()
        gave = sum(k in self.pending for k in self.progress.given_up)
        if check_source and len(self.pending) == gave:
            if trust_source:
                self._source_reports_done(st, gave)
            elif self._source_side_done():
                self._check_source(st)
        # what is missing is only what either side set aside: a --once run ends (GAVE_UP)
        gave += int((read_state(SRC_STATE) or {}).get("given_up_count") or 0)
        st.only_given_up = bool(gave) and not st.in_flight and st.source_missing is not None \
            and 0 < st.source_missing <= gave
        return st

    @staticmethod
    def _within(cands: list[Candidate], used: int, limit: int | None) -> list[Candidate]:
        """Largest first, the candidates that fit in `limit` bytes beside `used` (at least one
        when nothing is used, so an object larger than the limit still moves on its own)."""
        if not limit:
            return cands
        cands = sorted(cands, key=lambda c: -c.pending.row[0])
        kept, total = [], used
        for c in cands:
            if total + c.pending.row[0] > limit and (kept or used):
                continue
            kept.append(c)
            total += c.pending.row[0]
        return kept

    def _check_staged(self, cands: list[Candidate], st: DestStats) -> list[Candidate]:
        """Re-hash every staged copy before upload: a copy that no longer matches the MD5 the
        source side verified (disk fault, power cut before the data reached the disk, tampering)
        is never uploaded; it is deleted and taken out of the source ledger to be fetched again.
        The same read yields the ETag the upload must produce."""
        part = self.settings.part_size

        def one(c: Candidate) -> bool:
            size, md5 = c.pending.row[0], c.pending.row[3]
            try:
                got, nbytes, multi = checksum.hash_file(c.path, (part,) if size >= part else ())
            except OSError as exc:
                log.warning("cannot read staged copy of %r: %s", c.key, exc)
                return False
            if nbytes != size or (md5 and got != md5):
                return False
            c.md5 = got
            c.upload_etag = checksum.upload_etag(got, size, part, multi)
            return True

        with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
            ok = list(pool.map(one, cands))
        bad = [c for c, good in zip(cands, ok) if not good]
        if bad:
            st.mismatched += len(bad)
            back = []
            for c in bad:
                n = self._handed_back_times[c.key] = self._handed_back_times.get(c.key, 0) + 1
                if n >= MAX_TRIES:  # fetched and damaged again and again: a disk to look at
                    self._try_again(c, f"its staged copy did not match the checksum verified at staging {n} times",
                                    st, at_once=True)
                    continue
                log.warning("staged copy of %r does not match the checksum verified at staging: discarded, "
                            "the source side fetches it again (%d of %d)", c.key, n, MAX_TRIES)
                remove_quietly(c.path)
                back.append(c.key)
            if back:
                self._drop_from_src_ledger(back)
        return [c for c, good in zip(cands, ok) if good]

    def _drop_from_src_ledger(self, keys: list[str]) -> None:
        """Take keys out of the source ledger (atomic rewrite under its lock) so the source side
        fetches them again; a running source side notices the new file and reloads it."""
        self._handed_back = time.time()
        with file_lock(self.src_ledger.lock_path):
            src_rows = self.src_ledger.load()
            for k in keys:
                src_rows.pop(k, None)
            self.src_ledger.write_locked(src_rows)
        for k in keys:
            self._settle(k)
        self.src_ledger.tail(self.src_rows)

    def _update_progress(self) -> None:
        """Totals: what the source side last listed (its state file), else what is ledgered.
        Summed only when something changed: a cycle comes every 0.25 s while the source stages."""
        if not self._progress_stale:
            return
        self._progress_stale = False
        ledgered_bytes = sum(r[0] for r in self.src_rows.values())
        pending_bytes = sum(p.row[0] for p in self.pending.values())
        src = read_state(SRC_STATE) or {}
        total = max(int(src.get("total_objects") or 0), len(self.src_rows))
        total_bytes = max(int(src.get("total_bytes") or 0), ledgered_bytes)
        self.progress.set_totals(total, total_bytes, len(self.src_rows) - len(self.pending),
                                 ledgered_bytes - pending_bytes)
        self.progress.write_state(force=True)

    def _heal_lost(self, lost: list[str], st: DestStats) -> None:
        """Ledgered objects with no staged copy: already at the destination (a ledger from the
        original scripts, or a stop between upload and ledger) they are confirmed there and
        ledgered; otherwise (a volume wiped or replaced) they are taken out of the source ledger
        so the source side fetches them again, instead of waiting forever.

        A ledgered object is always staged first (rename, then ledger append), so a key missing
        on two scans in a row is really gone from the volumes."""
        confirmed = [k for k in lost if k in self._missing_staged]
        self._missing_staged = set(lost) - set(confirmed)
        if not confirmed or self.dry_run:
            return
        rows = []
        drop = []
        for k in confirmed:
            row = self._confirm_existing(k, self.pending[k].row)
            (rows.append(row) if row else drop.append(k))
        if rows:
            self.dest_ledger.append(rows)
            for row in rows:
                self.dest_rows[row[0]] = row[1:]
                self._settle(row[0])
            log.info("%d ledgered objects without a staged copy are already at the destination; ledgered them",
                     len(rows))
        if not drop:
            return
        st.lost = len(drop)
        log.warning("%d ledgered objects have no staged copy on any volume and are not at the destination (e.g. "
                    "%r); removing them from %s so the source side fetches them again", len(drop), drop[0], SRC_LEDGER)
        self._drop_from_src_ledger(drop)

    def _confirm_existing(self, key: str, src_row: tuple) -> tuple | None:
        """A dest ledger row when the destination already holds this object (same size, and the
        same MD5 where both sides have one); None otherwise."""
        size, src_etag, _verified, md5 = src_row[:4]
        try:
            there = self._head(key)
        except Exception:  # noqa: BLE001 - not readable: fetch it again
            return None
        if there is None or there.size != size:
            return None
        etag = there.etag.lower()
        level = checksum.SIZE
        if checksum.etag_kind(etag) == checksum.MD5 and (md5 or checksum.etag_kind(src_etag) == checksum.MD5):
            if etag not in (md5, src_etag):
                return None
            level = checksum.MD5
        elif etag == src_etag.lower() and checksum.etag_kind(etag) == checksum.MULTIPART:
            level = checksum.MULTIPART  # the same parts: the same bytes
        else:
            if dest_knows_other(self.dest_rows.get(key), etag, src_etag):
                # by size only, but this side knows another version: the one there was confirmed
                # for an older source object, or replaced since it was confirmed
                return None
        return (key, size, etag, level, src_etag)

    def _source_side_done(self) -> bool:
        """Whether a completeness check (one source listing) can succeed now. While the source side
        reports objects still to stage (its state file), listing the source would only cost requests."""
        state = read_state(SRC_STATE)
        if not state or time.time() - float(state.get("updated") or 0) > 10 * self.settings.max_poll_interval + 60:
            return True  # no source side running here (or it stopped long ago): check for ourselves
        return self._all_ledgered(state) is not None

    def _all_ledgered(self, state: dict | None, since: float = 0.0) -> int | None:
        """The source side's listed total when its state (written after `since`) counts every
        listed object ledgered and this side has read as many ledger rows; None otherwise."""
        total = done_since(state, since)
        return total if total is not None and len(self.src_rows) >= total else None

    def _source_reports_done(self, st: DestStats, gave: int) -> None:
        """Completion by the source side's word (supervised): its state file, written by this run
        after this side started and after anything was last handed back, counts every listed
        object ledgered (or set aside there), and every ledgered object is confirmed here but the
        `gave` this side set aside."""
        state = read_state(SRC_STATE)
        ledgered = self._all_ledgered(state, max(self.started, self._handed_back))
        if ledgered is not None:
            st.source_total = int(state.get("total_objects") or ledgered)
            st.source_missing = st.source_total - ledgered + gave

    def _check_source(self, st: DestStats) -> None:
        """Completion: every source object is confirmed at the destination (one source listing)."""
        def count(objs) -> tuple[int, int]:
            total = missing = 0
            from .shard import owns  # SHARDS (issue 19, shard.py): only the keys this host's shard owns
            for o in (o for o in objs if owns(o.key, self.cfg.shard_spec)):
                total += 1
                if not dest_done((o.size, o.etag), self.dest_rows.get(o.key)):
                    missing += 1
            return total, missing

        def listed() -> tuple[tuple[int, int], int]:
            try:
                return s3.listing_any(self.cfg.source, self.settings, count)
            except Exception as exc:  # noqa: BLE001 - named for the source, not this side's destination
                raise s3.connect_error(exc, self.cfg.source) from None

        (st.source_total, st.source_missing), _ = interruptible(listed, self.stopper)

    # -- uploading -----------------------------------------------------------------------
    # Uploads stream: one long-lived `s5cmd run` per destination endpoint, fed through its
    # standard input as objects are staged and verified, with no batch barrier. Each cycle feeds
    # what was staged since the last one, collects s5cmd's results, confirms the uploads at the
    # destination, ledgers them and frees their staged copies.

    def _flight_limits(self) -> tuple[int, int | None]:
        """(objects, bytes) allowed in flight: enough to keep every worker busy, few enough that
        the confirmations and the ledger keep up; max_size_to_transfer_l2dest caps the bytes."""
        return max(4 * self.settings.dest_workers, 256), (self.settings.max_l2dest or None)

    def _live(self) -> list[int]:
        """Endpoints to feed; probed at most every LIVE_REFRESH seconds (probing is a request)."""
        now = time.monotonic()
        if self._live_cache is None or now - self._live_at >= LIVE_REFRESH:
            self._live_cache, self._live_at = self.eps.live(), now
        return self._live_cache

    def _stream(self, ep: int) -> s5cmd.Stream:
        stream = self._streams.get(ep)
        if stream is not None and stream.alive():
            return stream
        if stream is not None:
            stream.close(timeout=5)
        flags_ep = s5cmd.global_args(self.side, self.settings.dest_workers, self.settings.retries, self.eps.urls[ep])
        name = RUN_FILE if ep == 0 else RUN_FILE.replace(".txt", f"-{ep + 1}.txt")

        def report(local: str, ok: bool, error: str) -> None:
            self._report(ep, local, ok, error, None)

        stream = s5cmd.Stream(self.binary, flags_ep, s3.child_env(self.side), name, report,
                              on_start=self.stopper.track, preexec=die_with_parent())
        self._streams[ep] = stream
        return stream

    def _report(self, ep: int, local: str, ok: bool, error: str, etag: str | None) -> None:
        with self._results_lock:
            self._results.append((ep, local, ok, error, etag))
        if not any(len(u) for u in self._streams.values()):
            self.drained.set()  # the last upload in flight is done: confirm it now, not after a pause

    def _feed(self, cands: list[Candidate], st: DestStats) -> None:
        """Hand verified staged copies to their early multipart upload (streaming.py) when they have
        one, else to the s5cmd of the endpoint with the fewest bytes in flight (keys a run file
        cannot carry: boto3, here)."""
        flags = ["-p", str(self.settings.part_size // (1024 * 1024))]
        via_api = []
        live = self._live()
        for c in cands:
            if self._take_streamed(c):
                self._flight[c.path] = c
                st.fed += 1
                continue
            if not s5cmd.run_file_safe(c.key):
                via_api.append(c)
                continue
            ep = min(live, key=lambda i: self._streams[i].bytes_in_flight if i in self._streams else 0)
            self._flight[c.path] = c
            st.fed += 1
            self._stream(ep).add(s5cmd.cp_line(c.path, self.side.url(c.key), flags), c.path, c.pending.row[0])
        if via_api:
            self._upload_api(via_api, live, st)

    def _take_streamed(self, c: Candidate) -> bool:
        """Hand the object to its early multipart upload (streaming.py), if it has one."""
        if self.streamer is None:
            return False

        def report(ep: int, ok: bool, error: str, etag: str, expected: str) -> None:
            # ep: the upload's own endpoint, whose failure streak counts it
            if ok and expected:
                c.upload_etag = expected  # the multipart ETag of the parts sent, compared by _confirm
            self._report(ep, c.path, ok, error, etag)

        return self.streamer.take(c.key, c.pending.row[0], c.pending.row[1], c.path, c.md5, report)

    def _collect(self, st: DestStats) -> None:
        """Results s5cmd reported since the last cycle: successes wait for confirmation, failures
        are retried after a backoff; an endpoint failing again and again is set aside."""
        with self._results_lock:
            results, self._results = self._results, []
        now = time.monotonic()
        answered: dict[str, s3.Obj] = {}  # early multipart uploads: CompleteMultipartUpload's answer
        confirmed: list[Candidate] = []
        for ep, local, ok, error, etag in results:  # in the order the uploaders reported them
            if ok:
                self._streak.pop(ep, None)
            else:
                self._streak[ep] = (self._streak.get(ep, (0, ""))[0] + 1, error)
            c = self._flight.pop(local, None)
            if c is None:
                continue
            if ok and etag is not None:
                answered[c.key] = s3.Obj(c.key, c.pending.row[0], etag)
                confirmed.append(c)
            elif ok:
                self._to_confirm.append((c, now))
            else:
                self._failed(c, error, st)
        self._confirm_uploads(confirmed, st, answered)
        for ep, (n, error) in list(self._streak.items()):
            if n >= SET_ASIDE_STREAK and len(self.eps.urls) > 1:
                del self._streak[ep]
                self.eps.failed(ep, error or "uploads keep failing")
                self._live_cache = None
                stream = self._streams.pop(ep, None)
                if stream is not None:
                    stream.proc.terminate()  # what it still holds is retried on another endpoint
                    stream.close(timeout=10)
                    self._collect(st)

    def _failed(self, c: Candidate, error: str, st: DestStats) -> None:
        st.failed += 1
        self._try_again(c, f"upload failed: {error or 'unknown error'}", st)

    def _try_again(self, c: Candidate, why: str, st: DestStats, at_once: bool = False) -> None:
        """Hold a key back before its next upload (1 s, doubling up to MAX_RETRY_BACKOFF); after
        MAX_TRIES it is set aside until a restart or repair_ledger.py, named once in the log and
        in the state file (status.py, transfer_report.json)."""
        n = MAX_TRIES if at_once else self._retry_at.get(c.key, (0.0, 0))[1] + 1
        if n >= MAX_TRIES:
            self._retry_at.pop(c.key, None)
            self.progress.given_up[c.key] = why
            st.given_up += 1
            log.error("gave up on %r after %d tries: %s; it stays on its staging volume and is tried again after "
                      "a restart or repair_ledger.py", c.key, n, why)
            self.progress.write_state(force=True)
            return
        wait = min(2.0 ** (n - 1), MAX_RETRY_BACKOFF)
        self._retry_at[c.key] = (time.monotonic() + wait, n)
        log.warning("%r: %s (try %d of %d; again in %.0fs)", c.key, why, n, MAX_TRIES, wait)

    def _forgive(self) -> None:
        if self.progress.given_up:
            log.info("the ledgers changed: the %d objects set aside are tried again", len(self.progress.given_up))
            self.progress.given_up.clear()

    def _confirm_due(self) -> list[Candidate]:
        """Uploads to confirm now: all of them once nothing else is in flight, else once the
        oldest has waited CONFIRM_AFTER seconds (so one listing can confirm many)."""
        if not self._to_confirm:
            return []
        oldest = self._to_confirm[0][1]
        if self._flight and len(self._to_confirm) < CONFIRM_BATCH and time.monotonic() - oldest < CONFIRM_AFTER:
            return []
        due, self._to_confirm = [c for c, _t in self._to_confirm], []
        return due

    def _confirm_uploads(self, cands: list[Candidate], st: DestStats, answered: dict[str, s3.Obj] | None = None) -> None:
        """Check each upload at the destination, ledger it, then free its staged copy. One listing
        of the destination confirms many uploads at once when it costs less than one HeadObject per
        upload (a listing costs one page per 1,000 objects there, a page about LIST_PAGE_COST heads)."""
        if not cands:
            return
        listing: dict[str, s3.Obj] = dict(answered or {})
        rest = [c for c in cands if c.key not in listing]
        if rest:
            self._client_at = self._live()[0]
            self._heads_at(self._client_at)  # made here, before the threads that use it
            listable = {c.key for c in rest if s5cmd.run_file_safe(c.key)}
            if len(listable) > LIST_PAGE_COST * ((len(self.dest_rows) + len(rest)) // 1000 + 1):
                listing.update(self._listing_for(listable))
        if len(listing) >= len(cands):
            rows = [self._confirm(c, listing.get(c.key)) for c in cands]
        else:
            with ThreadPoolExecutor(max_workers=16) as pool:
                rows = list(pool.map(lambda c: self._confirm(c, listing.get(c.key)), cands))
        again = False
        for c, row in zip(cands, rows):
            if isinstance(row, str):  # why it does not confirm
                st.mismatched += 1
                self._try_again(c, row, st)
                continue
            self._retry_at.pop(c.key, None)
            again |= c.key in self.dest_rows  # a newer version of an uploaded object
            st.uploaded += 1
            st.uploaded_bytes += c.pending.row[0]
            self.progress.add(1, c.pending.row[0])
            self.dest_rows[c.key] = row[1:]
            self._done_by_key[c.key] = c
            self._appender.add(row)
        self._appender.flush()
        self.progress.write_state()
        if again:
            self.dest_rows = self.dest_ledger.compact()

    def _after_flush(self, rows: list[tuple]) -> None:
        # Only now, with the destination ledger on disk, may the staged copies go.
        for row in rows:
            c = self._done_by_key.pop(row[0], None)
            if c is None:
                continue
            p = self.pending.get(c.key)
            if p is not None and p.row == c.pending.row:  # not a newer version ledgered meanwhile
                self._settle(c.key)
            if self.cfg.delete_staging_data:
                try:
                    sst = os.stat(c.path)
                    if (sst.st_ino, sst.st_mtime_ns) == c.ident:  # not replaced by a newer version
                        remove_quietly(c.path)
                except FileNotFoundError:
                    pass

    def _close_idle_streams(self) -> None:
        """An s5cmd with nothing in flight for STREAM_IDLE seconds is ended (an idle side runs
        no child); the next staged object starts a new one. One that died is closed at once: what
        it never reported on is reported failed, and retried."""
        now = time.monotonic()
        for ep, stream in list(self._streams.items()):
            if len(stream) and stream.alive():
                self._stream_busy[ep] = now
                continue
            if stream.alive() and now - self._stream_busy.setdefault(ep, now) < STREAM_IDLE:
                continue
            del self._streams[ep]
            self._stream_busy.pop(ep, None)
            stream.close(timeout=30)

    def close(self) -> None:
        """End the uploaders (on exit): what is unconfirmed stays unledgered and is uploaded again."""
        for stream in self._streams.values():
            stream.close(timeout=10)
        self._streams.clear()
        if self.streamer is not None:
            self.streamer.close()
        for heads in self._heads.values():
            heads.close()
        self._heads.clear()

    def _confirm(self, c: Candidate, listed: s3.Obj | None = None) -> tuple | str:
        """Check the uploaded object at the destination: a dest ledger row when it matches, else
        why not. The first answer is the listing's (when one was made) or a HeadObject's; when it
        disagrees, the other way is asked too (a store whose HEAD or listing misreports), and the
        object is confirmed when that answer matches."""
        first, how = (listed, "listing") if listed is not None else (None, "HeadObject")
        answers = []
        for way in ((how, "listing") if how == "HeadObject" else (how, "HeadObject")):
            try:
                obj = first if way == how and first is not None else self._ask(c.key, way)
            except Exception as exc:  # noqa: BLE001 - counted as a try
                answers.append(f"{way}: {s3.describe_error(exc, self.side)}")
                continue
            got = self._judge(c, obj)
            if isinstance(got, tuple):
                if answers:
                    log.info("%r confirmed by its %s after another answer disagreed (%s)", c.key, way, answers[0])
                return got
            answers.append(f"{way}: {got}")
        return "does not confirm at the destination (" + "; ".join(answers) + ")"

    def _ask(self, key: str, way: str) -> s3.Obj | None:
        if way == "HeadObject":
            return self._head(key)
        return s3.list_one(self.side, self.eps.client(self._client_at), key)

    def _judge(self, c: Candidate, listed: s3.Obj | None) -> tuple | str:
        """Size, then ETag against the staged bytes: a dest ledger row, or why not."""
        if listed is None:
            return "not there"
        size, src_etag = c.pending.row[:2]
        etag = listed.etag
        if listed.size != size:
            return f"size {listed.size}, expected {size}"
        kind = checksum.etag_kind(etag)
        level = checksum.SIZE
        if kind == checksum.MD5:
            level = checksum.MD5 if etag.lower() == c.md5 else None
        elif kind == checksum.MULTIPART:
            level = checksum.MULTIPART if etag.lower() == c.upload_etag else None
            if level is None:
                # uploaded with another part size than configured (e.g. by the boto3 path): the
                # staged copy is hashed again, and counts only while it still has the verified MD5
                # (one changed after its check may be what went out, and would match itself)
                try:
                    level, now_md5, _ = checksum.check(c.path, size, etag)
                except OSError:
                    level = None
                else:
                    if level is not None and c.md5 and now_md5 != c.md5:
                        return "the staged copy changed after its check"
        if level is None:
            return f"ETag {etag} does not match the staged bytes (MD5 {c.md5})"
        return (c.key, size, etag, level, src_etag)

    def _listing_for(self, keys: set[str]) -> dict[str, s3.Obj]:
        """One paginated listing of the destination prefix, kept only for `keys`."""
        out: dict[str, s3.Obj] = {}
        try:
            ep = self._client_at  # the endpoint _confirm_uploads just chose
            out = s3.listing(self.side, lambda: self.eps.client(ep),
                             lambda objs: {o.key: o for o in objs if o.key in keys}, ep)
        except Exception as exc:  # noqa: BLE001 - fall back to one HeadObject per upload
            log.warning("destination listing failed (%s); confirming each upload on its own",
                        s3.describe_error(exc, self.side))
        return out

    def _upload_api(self, cands: list[Candidate], live: list[int], st: DestStats) -> None:
        """boto3 uploads for keys an s5cmd run file cannot carry (waits for them; rare)."""
        from boto3.s3.transfer import TransferConfig

        tcfg = TransferConfig(max_concurrency=4, multipart_chunksize=self.settings.part_size,
                              multipart_threshold=self.settings.part_size)
        clients = [self.eps.client(i) for i in live]

        def one(n_c: tuple[int, Candidate]) -> str | None:
            n, c = n_c
            try:
                clients[n % len(clients)].upload_file(c.path, self.side.bucket, self.side.prefix + c.key, Config=tcfg)
            except Exception as exc:  # noqa: BLE001
                return s3.describe_error(exc, self.side)
            return None

        with ThreadPoolExecutor(max_workers=8) as api_pool:
            errors = list(api_pool.map(one, enumerate(cands)))
        now = time.monotonic()
        for c, error in zip(cands, errors):
            st.fed += 1
            if error is None:
                self._to_confirm.append((c, now))
            else:
                self._failed(c, error, st)


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

    # Uploads stream, so cycles come often: one progress line per PROGRESS_EVERY seconds
    # (counting everything since the last line), and at once on a failure or a completeness check.
    since = {"at": 0.0, "uploaded": 0, "bytes": 0, "failed": 0, "mismatched": 0}

    def after(st: DestStats, started: float, delay: float) -> float:
        since["uploaded"] += st.uploaded
        since["bytes"] += st.uploaded_bytes
        since["failed"] += st.failed
        since["mismatched"] += st.mismatched
        if st.failed or st.mismatched:
            sync.progress.retries += st.failed + st.mismatched  # the report's destination_failed_uploads
            sync.progress.write_state(force=True)
        now = time.monotonic()
        news = since["uploaded"] or since["failed"] or since["mismatched"] or st.source_missing
        if news and (st.failed or st.mismatched or st.source_total is not None or now - since["at"] >= PROGRESS_EVERY):
            msg = (f"destination: {sync.progress.line()} confirmed; since the last line: "
                   f"{since['uploaded']} uploaded ({fmt_bytes(since['bytes'])}) in {now - (since['at'] or started):.1f}s, "
                   f"{since['failed']} failed, {since['mismatched']} mismatched; {st.pending} pending")
            if st.source_total is not None:
                msg += f"; {st.source_missing} of {st.source_total} source objects not yet at the destination"
            log.info(msg)
            since.update(at=now, uploaded=0, bytes=0, failed=0, mismatched=0)
        elif not since["at"]:
            since["at"] = now
        if once and st.only_given_up:
            names = sorted(sync.progress.given_up.items())[:10]
            log.error("destination: done, except for %d objects set aside after %d tries each (the source side "
                      "names its own): %s; run repair_ledger.py, or start again, to try them again",
                      st.source_missing, MAX_TRIES, "; ".join(f"{k!r}: {why}" for k, why in names) or "see the source side")
            raise Done(GAVE_UP)
        if once and st.complete:
            log.info("destination: all %d source objects are confirmed at the destination; done", st.source_total)
            raise Done
        if st.in_flight:
            # uploads stream from s5cmd's queue; come back to collect results, and at once (the
            # sleep wakes on it) when the source side ledgers newly staged objects
            return IN_FLIGHT_POLL
        if st.staged and not st.fed:
            return cfg.settings.poll_interval  # staged copies waiting for a retry backoff
        if st.pending:
            # the source side is staging: look again soon (a local scan, no S3 request)
            return min(cfg.settings.poll_interval, 0.25)
        # idle: back off, but a --once run keeps checking for the source side's last objects
        cap = max(cfg.settings.poll_interval * 4 if once else cfg.settings.max_poll_interval, cfg.settings.poll_interval)
        return min(max(delay * 2, cfg.settings.poll_interval), cap)

    # The sleep wakes when the source side ledgers newly staged objects (a stat of the ledger per
    # tick, no S3 request: an idle side stays quiet, a busy one starts uploading within a tick),
    # or when the last upload in flight reports.
    try:
        return poll_loop(lambda: sync.cycle(check_source=once, trust_source=supervised), after,
                         lambda exc: s3.describe_error(exc, cfg.destination), cfg.settings, stopper,
                         sleep=lambda seconds: sleep_until_changed(SRC_LEDGER, seconds, stopper, since=sync.ledger_sig,
                                                                   signature=sync.signature,
                                                                   wake=sync.drained),
                         dry_run=dry_run)
    finally:
        sync.close()
