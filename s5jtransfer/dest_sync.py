"""Destination side: upload staged, ledgered objects, confirm each at the destination, ledger, free."""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from boto3.s3.transfer import TransferConfig

from . import checksum, s3, s5cmd
from .config import Config
from .ledger import DEST_COLUMNS, DEST_LEDGER, SRC_COLUMNS, SRC_LEDGER, Ledger, file_lock
from .endpoints import Endpoints, run_s5cmd_spread
from .progress import DEST_STATE, SRC_STATE, Progress, read_state
from .runtime import Appender, Done, Stopper, die_with_parent, fmt_bytes, poll_loop, remove_quietly
from .volumes import Volume, discover, scan_all, staged_name

log = logging.getLogger("s5jtransfer.dest")
RUN_FILE = "dest_commands.txt"
LIST_CONFIRM_MIN = 50  # uploads in a batch from which one listing confirms them all
LIST_CONFIRM_RATIO = 50  # ... while the destination holds fewer than this many objects per upload


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
    uploaded: int = 0
    uploaded_bytes: int = 0
    failed: int = 0
    mismatched: int = 0
    lost: int = 0
    source_total: int | None = None
    source_missing: int | None = None

    @property
    def complete(self) -> bool:
        return self.source_missing == 0


def dest_done(src_row: tuple, dest_row: tuple | None) -> bool:
    """The destination holds this version: same size, uploaded from the same source ETag.
    Where either side has no ETag (rows of the original two-column ledger, or objects such a
    ledger had already moved), the size decides, as it did for the original scripts."""
    if dest_row is None or dest_row[0] != src_row[0]:
        return False
    return dest_row[3] == src_row[1] or not dest_row[3] or not src_row[1]


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
        self.client = self.eps.client(0)
        self._src_client = None
        self.binary = s5cmd.find_binary(self.settings.s5cmd_path)
        self._loaded = False
        self._missing_staged: set[str] = set()
        self.progress = Progress("destination", None if dry_run else DEST_STATE)
        self._progress_stale = True  # src_rows or pending changed since the totals were summed

    # -- state ---------------------------------------------------------------------------
    def _recompute_pending(self) -> None:
        get = self.dest_rows.get
        self.pending = {k: Pending(r, staged_name(k)) for k, r in self.src_rows.items() if not dest_done(r, get(k))}
        self._progress_stale = True

    def refresh(self) -> None:
        if not self._loaded:
            if not self.dry_run:
                self.dest_ledger.ensure()
            self.dest_rows = self.dest_ledger.load()
            self.src_rows = self.src_ledger.load()
            self._recompute_pending()
            self._loaded = True
            if not self.dry_run:
                self._free_uploaded()
            return
        replaced_s, keys = self.src_ledger.tail(self.src_rows)
        replaced_d, _ = self.dest_ledger.tail(self.dest_rows)
        if replaced_s or replaced_d:
            self._recompute_pending()
            return
        for k in keys:
            r = self.src_rows[k]
            if not dest_done(r, self.dest_rows.get(k)):
                self.pending[k] = Pending(r, staged_name(k))
            else:
                self._settle(k)
        self._progress_stale |= bool(keys)

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
    def cycle(self, check_source: bool) -> DestStats:
        st = DestStats()
        self.refresh()
        staged = scan_all(self.volumes)
        cands: list[Candidate] = []
        lost = []
        for key, p in self.pending.items():
            hit = staged.get(p.name)
            if hit is None:
                lost.append(key)
                continue
            vol, size = hit
            # A size that differs from the ledger is a damaged copy: _check_staged discards it.
            path = vol.staged_path(p.name)
            try:
                sst = os.stat(path)
            except FileNotFoundError:
                continue
            cands.append(Candidate(key, p, path, (sst.st_ino, sst.st_mtime_ns)))
        st.staged = len(cands)
        self._heal_lost(lost, st)
        if self.settings.max_l2dest:
            cands.sort(key=lambda c: -c.pending.row[0])
            kept, total = [], 0
            for c in cands:
                if kept and total + c.pending.row[0] > self.settings.max_l2dest:
                    continue
                kept.append(c)
                total += c.pending.row[0]
            cands = kept
        if self.dry_run:
            ep = self.side.endpoint or f"AWS {self.side.region}"
            for c in cands:
                print(f"would upload {c.path} ({c.pending.row[0]} bytes) to {self.side.url(c.key)!r} at {ep}")
            print(f"dry run: {len(cands)} staged objects ({sum(c.pending.row[0] for c in cands)} bytes) would be "
                  f"uploaded; {len(self.pending) - len(cands)} ledgered objects are not staged here; nothing was changed")
            return st
        if cands:
            cands = self._check_staged(cands, st)
        if cands:
            self._upload(cands, st)
        st.pending = len(self.pending)
        st.ledgered = len(self.src_rows)
        st.uploaded_total = st.ledgered - st.pending
        self._update_progress()
        if check_source and not self.pending and self._source_side_done():
            self._check_source(st)
        return st

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
            for c in bad:
                log.warning("staged copy of %r does not match the checksum verified at staging: discarded, "
                            "the source side fetches it again", c.key)
                remove_quietly(c.path)
            self._drop_from_src_ledger([c.key for c in bad])
        return [c for c, good in zip(cands, ok) if good]

    def _drop_from_src_ledger(self, keys: list[str]) -> None:
        """Take keys out of the source ledger (atomic rewrite under its lock) so the source side
        fetches them again; a running source side notices the new file and reloads it."""
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
            head = self.client.head_object(Bucket=self.side.bucket, Key=self.side.prefix + key)
        except Exception:  # noqa: BLE001 - not there (or not readable): fetch it again
            return None
        etag = str(head.get("ETag", "")).strip('"').lower()
        if int(head.get("ContentLength", -1)) != size:
            return None
        level = checksum.SIZE
        if checksum.etag_kind(etag) == checksum.MD5 and (md5 or checksum.etag_kind(src_etag) == checksum.MD5):
            if etag not in (md5, src_etag):
                return None
            level = checksum.MD5
        return (key, size, etag, level, src_etag)

    def _source_side_done(self) -> bool:
        """Whether a completeness check (one source listing) can succeed now. While the source side
        reports objects still to stage (its state file), listing the source would only cost requests."""
        state = read_state(SRC_STATE)
        if not state or time.time() - float(state.get("updated") or 0) > 10 * self.settings.max_poll_interval + 60:
            return True  # no source side running here (or it stopped long ago): check for ourselves
        return int(state.get("done_objects") or 0) >= int(state.get("total_objects") or 0) and \
            len(self.src_rows) >= int(state.get("total_objects") or 0)

    def _source_client(self):
        if self._src_client is None:
            self._src_client = s3.client(self.cfg.source, self.settings)
        return self._src_client

    def _check_source(self, st: DestStats) -> None:
        """Completion: every source object is confirmed at the destination (one source listing)."""
        total = missing = 0
        for o in s3.iter_objects(self.cfg.source, self._source_client()):
            total += 1
            r = self.dest_rows.get(o.key)
            if not dest_done((o.size, o.etag), r):
                missing += 1
        st.source_total, st.source_missing = total, missing

    # -- uploading -----------------------------------------------------------------------
    def _upload(self, cands: list[Candidate], st: DestStats) -> None:
        live = self.eps.live()
        self.client = self.eps.client(live[0])  # confirms uploads
        started = time.monotonic()
        lock = threading.Lock()
        by_path = {c.path: c for c in cands}

        def after_flush(rows: list[tuple]) -> None:
            # Only now, with the destination ledger on disk, may the staged copies go.
            for row in rows:
                c = done_by_key.pop(row[0], None)
                if c is None:
                    continue
                self._settle(c.key)
                if self.cfg.delete_staging_data:
                    try:
                        sst = os.stat(c.path)
                        if (sst.st_ino, sst.st_mtime_ns) == c.ident:  # not replaced by a newer version
                            remove_quietly(c.path)
                    except FileNotFoundError:
                        pass

        done_by_key: dict[str, Candidate] = {}
        appender = Appender(self.dest_ledger, after_flush=after_flush)

        # Confirming by one listing of the destination costs (objects there)/1000 requests; by
        # HeadObject, one request per upload. Large batches are confirmed by a listing at the end.
        by_listing = len(cands) >= LIST_CONFIRM_MIN and len(self.dest_rows) < len(cands) * LIST_CONFIRM_RATIO
        to_list: list[str] = []

        def confirm(path: str, ok: bool, error: str = "", listed: s3.Obj | None = None) -> None:
            c = by_path[path]
            if ok and by_listing and listed is None and s5cmd.run_file_safe(c.key):
                with lock:
                    to_list.append(path)
                return
            row = self._confirm(c, listed) if ok else None
            with lock:
                if row is None:
                    if ok:
                        st.mismatched += 1
                    else:
                        st.failed += 1
                        log.warning("upload of %r failed: %s (retried next cycle)", c.key, error or "unknown error")
                    return
                st.uploaded += 1
                st.uploaded_bytes += c.pending.row[0]
                self.progress.add(1, c.pending.row[0])
                self.progress.write_state()
                self.dest_rows[c.key] = row[1:]
                done_by_key[c.key] = c
            appender.add(row)

        via_api = [c.path for c in cands if not s5cmd.run_file_safe(c.key)]
        via_s5cmd = [c.path for c in cands if s5cmd.run_file_safe(c.key)]
        again = {c.key for c in cands if c.key in self.dest_rows}  # a newer version of an uploaded object
        with ThreadPoolExecutor(max_workers=16) as pool:
            api_thread = None
            if via_api:
                api_thread = threading.Thread(target=self._upload_api, args=(via_api, by_path, confirm, live),
                                              daemon=True)
                api_thread.start()
            if via_s5cmd:
                self._upload_s5cmd(via_s5cmd, by_path, lambda p, ok, err: pool.submit(confirm, p, ok, err), live)
            if api_thread:
                api_thread.join()
            if to_list:
                listing = self._listing_for({by_path[p].key for p in to_list})
                for p in to_list:
                    pool.submit(confirm, p, True, "", listing.get(by_path[p].key))
        appender.flush()
        if again:
            self.dest_rows = self.dest_ledger.compact()
        secs = time.monotonic() - started
        log.info("uploaded and confirmed %d objects (%s) in %.1fs (%s/s); %d failed, %d mismatches",
                 st.uploaded, fmt_bytes(st.uploaded_bytes), secs, fmt_bytes(st.uploaded_bytes / max(secs, 1e-6)),
                 st.failed, st.mismatched)

    def _confirm(self, c: Candidate, listed: s3.Obj | None = None) -> tuple | None:
        """Check the uploaded object (from a listing, else a HeadObject): size, then ETag against
        the staged bytes. A dest ledger row when it matches."""
        if listed is None:
            try:
                head = self.client.head_object(Bucket=self.side.bucket, Key=self.side.prefix + c.key)
            except Exception as exc:  # noqa: BLE001
                log.warning("cannot confirm %r at the destination: %s", c.key, s3.describe_error(exc, self.side))
                return None
            listed = s3.Obj(c.key, int(head.get("ContentLength", -1)), str(head.get("ETag", "")).strip('"'))
        size, src_etag = c.pending.row[:2]
        etag = listed.etag
        if listed.size != size:
            log.warning("destination size of %r is %d, expected %d: uploading again", c.key, listed.size, size)
            return None
        kind = checksum.etag_kind(etag)
        level = checksum.SIZE
        if kind == checksum.MD5:
            level = checksum.MD5 if etag.lower() == c.md5 else None
        elif kind == checksum.MULTIPART:
            level = checksum.MULTIPART if etag.lower() == c.upload_etag else None
            if level is None:
                # uploaded with another part size than configured (e.g. by the boto3 path)
                try:
                    level = checksum.check(c.path, size, etag)[0]
                except OSError:
                    level = None
        if level is None:
            log.warning("destination ETag of %r (%s) does not match the staged bytes: uploading again", c.key, etag)
            return None
        return (c.key, size, etag, level, src_etag)

    def _listing_for(self, keys: set[str]) -> dict[str, s3.Obj]:
        """One paginated listing of the destination prefix, kept only for `keys`."""
        out: dict[str, s3.Obj] = {}
        try:
            for o in s3.iter_objects(self.side, self.client):
                if o.key in keys:
                    out[o.key] = o
        except Exception as exc:  # noqa: BLE001 - fall back to one HeadObject per upload
            log.warning("destination listing failed (%s); confirming each upload on its own",
                        s3.describe_error(exc, self.side))
        return out

    def _upload_s5cmd(self, paths: list[str], by_path, report, live: list[int]) -> None:
        flags = ["-p", str(self.settings.part_size // (1024 * 1024))]
        run_s5cmd_spread(self.eps, live, self.binary, self.settings.dest_workers, self.settings.retries, RUN_FILE,
                         paths, [by_path[p].pending.row[0] for p in paths],
                         lambda p: s5cmd.cp_line(p, self.side.url(by_path[p].key), flags), report, self.stopper,
                         die_with_parent())

    def _upload_api(self, paths: list[str], by_path, confirm, live: list[int]) -> None:
        tcfg = TransferConfig(max_concurrency=4, multipart_chunksize=self.settings.part_size,
                              multipart_threshold=self.settings.part_size)

        clients = [self.eps.client(i) for i in live]

        def one(n_path: tuple[int, str]) -> None:
            n, path = n_path
            c = by_path[path]
            try:
                clients[n % len(clients)].upload_file(path, self.side.bucket, self.side.prefix + c.key, Config=tcfg)
            except Exception as exc:  # noqa: BLE001
                confirm(path, False, s3.describe_error(exc, self.side))
                return
            confirm(path, True)

        with ThreadPoolExecutor(max_workers=8) as api_pool:
            list(api_pool.map(one, enumerate(paths)))


def run(cfg: Config, once: bool, stopper: Stopper, dry_run: bool = False) -> int:
    sync = DestSync(cfg, stopper, dry_run)
    log.info("destination side: %d staging volume(s) -> %s via %s", len(sync.volumes), cfg.destination.url(),
             cfg.destination.endpoint or f"AWS {cfg.destination.region}")

    def after(st: DestStats, started: float, delay: float) -> float:
        if st.uploaded or st.failed or st.mismatched or st.source_missing:
            msg = (f"destination: {sync.progress.line()} confirmed; this cycle: "
                   f"{st.uploaded} uploaded ({fmt_bytes(st.uploaded_bytes)}), {st.failed} failed, "
                   f"{st.mismatched} mismatched; {st.pending} pending ({time.monotonic() - started:.1f}s)")
            if st.source_total is not None:
                msg += f"; {st.source_missing} of {st.source_total} source objects not yet at the destination"
            log.info(msg)
        if once and st.complete:
            log.info("destination: all %d source objects are confirmed at the destination; done", st.source_total)
            raise Done
        if st.uploaded or st.staged:
            return 0.0  # the link was busy: keep it busy, go straight to what was staged meanwhile
        if st.pending:
            # the source side is staging: look again soon (a local scan, no S3 request)
            return min(cfg.settings.poll_interval, 0.25)
        # idle: back off, but a --once run keeps checking for the source side's last objects
        cap = max(cfg.settings.poll_interval * 4 if once else cfg.settings.max_poll_interval, cfg.settings.poll_interval)
        return min(max(delay * 2, cfg.settings.poll_interval), cap)

    return poll_loop(lambda: sync.cycle(check_source=once), after,
                     lambda exc: s3.describe_error(exc, cfg.destination), cfg.settings, stopper, dry_run=dry_run)
