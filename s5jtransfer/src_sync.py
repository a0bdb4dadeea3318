"""Source side: list the source, plan, copy to the staging volumes, verify, then ledger."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from . import checksum, fetch, plan, refusal, s3, s5cmd, shard, streaming
from .config import Config
from .ledger import SRC_COLUMNS, SRC_LEDGER, Ledger
from .endpoints import Endpoints, split_by_bytes
from .progress import GAVE_UP, MAX_TRIES, SRC_STATE, Progress
from .copycheck import CopyCheck
from .tries import Tries
from .runtime import (Appender, Done, Stopper, file_inode, fmt_bytes, interruptible, poll_loop,
                      remove_quietly, sleep_until_changed)
from .volumes import Volume, device_budgets, discover, scan_all, staged_name

log = logging.getLogger("s5jtransfer.src")
LEDGER_DELAY = 0.2  # seconds a staged object waits at most before it is ledgered
LEDGER_BYTES = 4 * 1024 * 1024  # ... and none waits once the held rows stand for this many bytes
ARCHIVED = "InvalidObjectState"  # S3's answer to a read of an object in GLACIER or DEEP_ARCHIVE, not restored


@dataclass
class CycleStats:
    listed: int = 0
    listed_bytes: int = 0
    done: int = 0
    done_bytes: int = 0
    todo: int = 0
    waiting: int = 0
    moved: int = 0
    moved_bytes: int = 0
    adopted: int = 0
    adopted_bytes: int = 0
    failed: int = 0
    mismatched: int = 0
    size_only: int = 0
    unmappable: int = 0  # listed, but without a valid destination key (see _mappable)
    given_up: int = 0  # listed, but set aside after MAX_TRIES (see _tried)

    @property
    def complete(self) -> bool:
        return self.done == self.listed

    @property
    def only_given_up(self) -> bool:
        return bool(self.given_up) and self.done + self.given_up == self.listed


class SourceSync:
    def __init__(self, cfg: Config, stopper: Stopper | None = None, dry_run: bool = False) -> None:
        self.cfg = cfg
        self.side = cfg.source
        self.settings = cfg.settings
        self.stopper = stopper or Stopper()
        self.dry_run = dry_run
        self.volumes: list[Volume] = discover(cfg, create=not dry_run)
        self.ledger = Ledger(SRC_LEDGER, SRC_COLUMNS)
        self.rows: dict[str, tuple] = {}
        self.eps = Endpoints(self.side, self.settings, pool=self.settings.src_workers)
        self._client_at = 0  # the endpoint whose boto3 client lists and reads part sizes
        self.native = self.settings.src_use_native_s3
        self.binary = None if self.native else s5cmd.find_binary(self.settings.s5cmd_path)
        self.fetcher = fetch.Fetcher(self.side, self.settings, self.eps, self.binary, self.stopper)
        self.checker = CopyCheck(self.side, self.eps.client, lambda: self._client_at)
        self.refusals = refusal.Streak(self.side, "reads")  # a store that refuses every read: exit 2
        self.fetcher.halted = lambda: self.refusals.tripped
        self._loaded = False
        self.ledger_inode: int | None = None
        self.progress = Progress("source", None if dry_run else SRC_STATE)
        self.tries = Tries(self.progress.given_up)  # copies that failed or did not verify (see _tried)
        self._last_progress_log = time.monotonic()

    @property
    def client(self):
        """The boto3 client of the endpoint in use (listings, part sizes), made when first needed."""
        return self.eps.client(self._client_at)

    # -- state ---------------------------------------------------------------------------
    def load_ledger(self) -> None:
        # the ledger's inode when read: a replacement made while this cycle runs (objects handed
        # back) must end the sleep after it at once, not be taken for the state already known
        if not self._loaded and not self.dry_run:
            self.ledger.ensure()
        self.ledger_inode = file_inode(SRC_LEDGER)
        if not self._loaded:
            self.rows = self.ledger.load()
            self._loaded = True
            self.checker.trust.saw_ledger(self.rows)  # the store's ETags matched before: they are MD5s
        elif self.ledger.tail(self.rows)[0] | self.tries.asked_again():
            # rewritten (repair_ledger.py, objects handed back), or repair_ledger.py ran: what was
            # set aside is tried again
            self.tries.forgive()

    # -- one cycle -----------------------------------------------------------------------
    def cycle(self) -> CycleStats:
        st = CycleStats()
        self.load_ledger()
        live = self.eps.live()
        self._client_at = live[0]
        # a stop does not wait for a listing stuck on a dead or hanging endpoint (boto3's retries)
        items = interruptible(lambda: s3.listing(self.side, lambda: self.client,
                                                 lambda objs: [plan.Item(*o[:4]) for o in objs],
                                                 live[0]), self.stopper)
        items = shard.select(items, self.cfg.shard_spec)  # only the keys this host's shard owns
        st.listed = len(items)
        st.listed_bytes = sum(i.size for i in items)
        todo = plan.todo(items, self.rows)
        del items
        st.todo = len(todo)
        st.done = st.listed - st.todo
        st.done_bytes = st.listed_bytes - sum(i.size for i in todo)
        todo = self._mappable(todo, st)
        if self.tries.given_up or self.tries.waiting:
            now = time.monotonic()
            st.given_up = sum(i.key in self.tries.given_up for i in todo)
            todo = [i for i in todo if self.tries.due(i.key, now)]
        self.progress.set_totals(st.listed, st.listed_bytes, st.done, st.done_bytes)
        self.progress.write_state(force=True)
        if not todo:
            return st
        if not self.dry_run:
            self._clear_partials()
            with self._reload_on_os_error():
                todo = self._adopt_staged(todo, st)
        slots = [plan.VolumeSlot(i, v.device(), self.settings.max_src2l) for i, v in enumerate(self.volumes)]
        budgets = device_budgets(self.volumes, self.settings.volume_reserve)
        assigned, waiting = plan.assign(todo, slots, budgets)
        st.waiting = len(waiting)
        if self.dry_run:
            self._print_plan(assigned, waiting, live)
            return st
        if waiting:
            log.info("%d objects (%s) wait for space on the staging volumes", len(waiting),
                     fmt_bytes(sum(i.size for i in waiting)))
        if assigned:
            again = {a.item.key for a in assigned if a.item.key in self.rows}  # changed at the source
            with self._reload_on_os_error():
                self._copy(assigned, st, live)
            if again:
                self.rows = self.ledger.compact()
                self.ledger_inode = file_inode(SRC_LEDGER)  # our own rewrite is no news
        st.done += st.moved + st.adopted
        st.done_bytes += st.moved_bytes + st.adopted_bytes
        return st

    @contextlib.contextmanager
    def _reload_on_os_error(self):
        """A step that appends to the ledger: when it fails locally (a full disk under the working
        folder), what this cycle holds as ledgered may not be on disk, so the next cycle reloads
        the ledger and adopts the verified staged copies that lost their rows; nothing is taken
        for done meanwhile."""
        try:
            yield
        except OSError:
            self._loaded = False
            raise

    def _mappable(self, todo: list[plan.Item], st: CycleStats) -> list[plan.Item]:
        """The object whose key is the source prefix itself (relative key '', a key ending in '/'
        that holds data) goes to the destination prefix; with an empty destination prefix it
        would have an empty key, which S3 cannot hold. It is not staged, and the run stays
        incomplete (it counts as not done) until the configuration changes: never a silent skip."""
        if self.cfg.destination.prefix or not any(not i.key for i in todo):
            return todo
        item = next(i for i in todo if not i.key)
        st.unmappable = 1
        log.error("%r (%d bytes) has the source prefix itself as its key: its destination key would be "
                  "empty, so it cannot be moved and the transfer stays incomplete; set "
                  "destination.bucket_prefix in config.yaml (it then goes to exactly that key), or move "
                  "it by hand", self.side.url(item.key), item.size)
        return [i for i in todo if i.key]

    def _print_plan(self, assigned: list[plan.Assignment], waiting: list[plan.Item], live: list[int]) -> None:
        groups = split_by_bytes(assigned, [a.item.size for a in assigned], len(live))
        for n, group in enumerate(groups):
            ep = self.eps.name(live[n])
            for a in group:
                print(f"would copy {self.side.url(a.item.key)!r} ({a.item.size} bytes) from {ep} "
                      f"to {self.volumes[a.volume].root}")
        for i in waiting:
            print(f"would wait for space: {self.side.url(i.key)!r} ({i.size} bytes)")
        print(f"dry run: {len(assigned)} objects ({sum(a.item.size for a in assigned)} bytes) would be copied, "
              f"{len(waiting)} would wait for space; nothing was changed")

    def _clear_partials(self) -> None:
        # Nothing is in flight between cycles (this process holds the source lock), so anything
        # in a partial folder is left from an interrupted copy and cannot be trusted.
        for v in self.volumes:
            for path in v.scan_partial() + v.scan_notes():
                remove_quietly(path)

    def _adopt_staged(self, todo: list[plan.Item], st: CycleStats) -> list[plan.Item]:
        """Staged copies left by an interrupted run are verified and ledgered, not fetched again."""
        staged = scan_all(self.volumes)
        if not staged:
            return todo
        appender = Appender(self.ledger)
        rest = []
        for item in todo:
            name = staged_name(item.key)
            hit = staged.get(name)
            if hit is None:
                rest.append(item)
                continue
            vol = hit[0]
            path = vol.staged_path(name)
            row, _why = self.checker.verify(item, path)
            if row is None:
                remove_quietly(path)
                rest.append(item)
                continue
            appender.add(row)
            self.rows[item.key] = row[1:]
            st.adopted += 1
            st.adopted_bytes += item.size
            self.progress.add(1, item.size)
        appender.flush()
        if st.adopted:
            log.info("adopted %d verified staged copies left by an earlier run", st.adopted)
        return rest

    # -- copying -------------------------------------------------------------------------
    def _copy(self, assigned: list[plan.Assignment], st: CycleStats, live: list[int]) -> None:
        """Fetch the assigned objects (fetch.py); each is verified as it lands (in threads:
        hashlib releases the GIL), staged under its final name and ledgered (_Batch)."""
        started = time.monotonic()
        batch = _Batch(self, assigned, st)
        jobs = [fetch.Job(item.key, item.size, p) for p, (item, _v, _n) in batch.by_local.items()]
        with ThreadPoolExecutor(max_workers=max(2, min(8, os.cpu_count() or 2))) as verify_pool:
            self.fetcher.fetch(jobs, live, lambda p, ok, err: verify_pool.submit(batch.finish, p, ok, err),
                               batch.notes.advanced if self.settings.stream_uploads else None)
        batch.appender.flush()
        batch.log_end(time.monotonic() - started)
        self.refusals.check()

    def _tried(self, item: plan.Item, why: str, st: CycleStats, what: str = "", at_once: bool = False) -> None:
        """One more failed try of an object: tried again after a backoff (tries.py), or after
        MAX_TRIES (at once: no try can help) set aside until a restart or repair_ledger.py, named
        once in the log and in the state file."""
        if self.tries.failed(item.key, why, at_once, what=what):
            st.given_up += 1

    def _note_progress(self, objects: int, nbytes: int) -> None:
        self.progress.add(objects, nbytes)
        self.progress.write_state()
        now = time.monotonic()
        if now - self._last_progress_log >= 30:
            self._last_progress_log = now
            log.info("source progress: %s", self.progress.line())


class _Batch:
    """One cycle's copies: each, as it lands, is verified, renamed into its staged name and
    ledgered (timed: within LEDGER_DELAY, also when no other copy finishes after it, and at once
    for a large one), so the destination side starts on it at once."""

    def __init__(self, sync: "SourceSync", assigned: list[plan.Assignment], st: CycleStats) -> None:
        self.sync = sync
        self.st = st
        self.appender = Appender(sync.ledger, max_age=LEDGER_DELAY, timed=True, max_bytes=LEDGER_BYTES)
        self.lock = threading.Lock()
        self.append_failed = False
        self.cut_short: list[str] = []  # copies a stop ended before they were done
        self.by_local: dict[str, tuple[plan.Item, Volume, str]] = {}
        for a in assigned:
            vol = sync.volumes[a.volume]
            name = staged_name(a.item.key)
            self.by_local[vol.partial_path(name)] = (a.item, vol, name)
        self.notes = _Notes(self.by_local, streaming.stream_part_size(sync.settings.part_size))

    def finish(self, partial: str, ok: bool, error: str = "") -> None:
        item, vol, name = self.by_local[partial]
        if ok:
            self.sync.refusals.succeeded()
        elif not self.sync.stopper.stopped:
            self.sync.refusals.failed(item.key, error)
        row, why = self.sync.checker.verify(item, partial) if ok else (None, "")
        self.notes.done(partial)  # kept through the verification, so an early upload stays open
        if row is not None:
            self._stage(item, vol, name, partial, row)
            return
        remove_quietly(partial)
        if ok:
            log.warning("checksum mismatch for %r (size %d, ETag %s): %s; discarded, will fetch again", item.key,
                        item.size, item.etag, why)
        st = self.st
        with self.lock:
            if ok:
                st.mismatched += 1
            else:
                st.failed += 1
            if not ok and self.sync.stopper.stopped:
                self.cut_short.append(item.key)  # one line for them all: log_end
            elif not ok and ARCHIVED in error:
                self.sync._tried(item, "it is in an archive storage class (GLACIER or DEEP_ARCHIVE) and cannot be "
                                 "read until it is restored: restore it (aws s3api restore-object), then run "
                                 "repair_ledger.py", st, at_once=True)
            elif not ok:
                self.sync._tried(item, f"copy failed: {error or 'unknown error'}", st,
                                 f"copy of {item.key!r} failed: {error or 'unknown error'}")
            else:
                self.sync._tried(item, why, st, f"copy of {item.key!r} does not match the listed object: discarded")

    def _stage(self, item: plan.Item, vol: Volume, name: str, partial: str, row: tuple) -> None:
        dest = vol.staged_path(name)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        os.replace(partial, dest)
        try:
            self.appender.add(row)
        except OSError as exc:
            # the row is held and written by the batch's last flush, or the cycle fails there and
            # the next one reloads the ledger and adopts the staged copy
            if not self.append_failed:
                self.append_failed = True
                log.warning("cannot append to %s (%s); rows are held until it can be written", SRC_LEDGER, exc)
        with self.lock:
            self.sync.rows[item.key] = row[1:]
            self.st.moved += 1
            self.st.moved_bytes += item.size
            self.st.size_only += row[3] == checksum.SIZE
        self.sync._note_progress(1, item.size)

    def log_end(self, secs: float) -> None:
        st, cut = self.st, self.cut_short
        if cut:
            log.info("stopping: %d copies not finished (%s); they are fetched again at the next start", len(cut),
                     ", ".join(repr(k) for k in sorted(cut)[:3]) + (", ..." if len(cut) > 3 else ""))
        log.info("copied %d objects (%s) to staging in %.1fs (%s/s); %d failed, %d checksum mismatches",
                 st.moved, fmt_bytes(st.moved_bytes), secs, fmt_bytes(st.moved_bytes / max(secs, 1e-6)),
                 st.failed, st.mismatched)
        if st.size_only:
            log.warning("%d of them verified by size only: their source ETag is no MD5 (SSE-KMS, or an "
                        "S3-compatible store) and they have no checksum; run with --debug to see which", st.size_only)


class _Notes:
    """The notes that tell the destination side how much of an object fetched in order has landed
    (streaming.py): rewritten each time one more whole part is in, and at the end."""

    def __init__(self, by_local: dict[str, tuple[plan.Item, Volume, str]], part_size: int) -> None:
        self.by_local = by_local
        self.part_size = part_size
        self.parts: dict[str, int] = {}  # partial -> whole parts when its note was last written

    def advanced(self, partial: str, ready: int) -> None:
        item, vol, name = self.by_local[partial]
        parts = ready // streaming.part_size_for(item.size, self.part_size)
        if parts == self.parts.get(partial, 0) and ready < item.size:
            return
        self.parts[partial] = parts
        try:
            streaming.write_note(vol, name, item.key, item.size, item.etag, ready)
        except OSError as exc:
            log.debug("no streaming note for %r: %s", item.key, exc)

    def done(self, partial: str) -> None:
        if self.parts.pop(partial, None) is not None:
            _item, vol, name = self.by_local[partial]
            streaming.remove_note(vol, name)


def run(cfg: Config, once: bool, stopper: Stopper, dry_run: bool = False, supervised: bool = False) -> int:
    """supervised (sync_mvol.py --once): once everything listed is ledgered, list the source
    again when the ledger is replaced (objects handed back), else only every
    max_poll_interval_seconds; the supervisor stops this side."""
    sync = SourceSync(cfg, stopper, dry_run)
    log.info("source side: %s via %s -> %d staging volume(s): %s", cfg.source.url(),
             cfg.source.endpoint or f"AWS {cfg.source.region}", len(sync.volumes),
             ", ".join(v.root for v in sync.volumes))

    def after(st: CycleStats, started: float, delay: float) -> float:
        sync.progress.set_totals(st.listed, st.listed_bytes, st.done, st.done_bytes)
        sync.progress.retries += st.failed + st.mismatched
        sync.progress.write_state(force=True)
        log.info("source: %s; this cycle: %d copied, %d adopted, %d failed, %d waiting for space (%.1fs)",
                 sync.progress.line(), st.moved, st.adopted, st.failed, st.waiting, time.monotonic() - started)
        if st.complete and once:
            log.info("source: every source object is ledgered; done")
            raise Done
        if st.only_given_up and once and not supervised:
            names = sorted(sync.progress.given_up.items())[:10]
            log.error("source: every source object is ledgered but %d set aside after %d tries each: %s; run "
                      "repair_ledger.py, or start again, to try them again", st.given_up, MAX_TRIES,
                      "; ".join(f"{k!r}: {why}" for k, why in names))
            raise Done(GAVE_UP)
        if st.only_given_up and supervised:
            return cfg.settings.max_poll_interval
        if st.complete and supervised:
            return cfg.settings.max_poll_interval
        if st.moved or st.adopted:
            return cfg.settings.poll_interval
        if st.waiting:
            # only waiting for space, which the destination side frees as it uploads: look again
            # soon, but not with a listing of the source every poll_interval (up to 4 x)
            return min(max(delay * 2, cfg.settings.poll_interval), 4 * cfg.settings.poll_interval,
                       cfg.settings.max_poll_interval)
        return min(delay * 2, cfg.settings.max_poll_interval)

    return poll_loop(sync.cycle, after, lambda exc: s3.describe_error(exc, cfg.source), cfg.settings, stopper,
                     # wake at once when the ledger is replaced (the destination side or repair
                     # handed objects back); its own appends do not change the inode
                     sleep=lambda secs: sleep_until_changed(SRC_LEDGER, secs, stopper, tick=0.5, signature=file_inode,
                                                            since=sync.ledger_inode),
                     dry_run=dry_run)
