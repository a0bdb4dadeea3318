"""The source side's copies as they land: verified, staged and ledgered, or discarded and tried again.

The fetcher reports each copy once, from a worker thread (fetch.py). Here it is verified
(copycheck.py, in a thread pool: hashlib releases the GIL; small copies that need no request go
in batches, a task for many), renamed into its staged name and ledgered, the rows appended in
batches at most LEDGER_DELAY old (at once when they stand for LEDGER_BYTES), so the destination
side starts on it at once. A copy that failed or does not verify is deleted and tried again
after a backoff (tries.py); one that found its volume full (something else filled it: the plan
counts whole blocks and leaves room for what it starts) waits for space without a try counted.
The source side's cycle takes what landed (take()) and drops it from the pass's work.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple

from . import checksum, plan, streaming
from .ledger import SRC_LEDGER
from .runtime import Appender, remove_quietly
from .volumes import Volume

log = logging.getLogger("s5jtransfer.src")
LEDGER_DELAY = 0.2  # seconds a staged object waits at most before it is ledgered
LEDGER_BYTES = 4 * 1024 * 1024  # ... and none waits once the held rows stand for this many bytes
ARCHIVED = "InvalidObjectState"  # S3's answer to a read of an object in GLACIER or DEEP_ARCHIVE, not restored
NO_SPACE = ("no space left on device", "disk quota exceeded", "errno 28", "errno 122")
VOLUME_FAILED = ("read-only file system", "input/output error", "errno 30", "errno 5]")


class Flight(NamedTuple):
    item: plan.Item
    volume: int  # index of its staging volume
    vol: Volume
    name: str  # its staged file name
    device: int
    reserved: int  # bytes its copy takes on the device (plan.on_disk)


@dataclass
class Landed:
    """What landed since the last take()."""

    moved: int = 0
    moved_bytes: int = 0
    failed: int = 0
    mismatched: int = 0
    size_only: int = 0
    no_space: int = 0  # copies that found their volume full (not counted as tries)
    volume_failed: int = 0  # copies whose volume went or turned read-only (not counted as tries)
    given_up: int = 0
    staged: list[str] = field(default_factory=list)  # keys staged and ledgered (or held for the ledger)


class Landing:
    def __init__(self, sync) -> None:
        self.sync = sync  # the SourceSync: checker, refusals, stopper, tries (_tried), progress
        self.pool = ThreadPoolExecutor(max_workers=max(2, min(8, os.cpu_count() or 2)), thread_name_prefix="verify")
        self.appender = Appender(sync.ledger, max_age=LEDGER_DELAY, timed=True, max_bytes=LEDGER_BYTES)
        self.lock = threading.Lock()
        self.flights: dict[str, Flight] = {}  # partial path -> the copy handed to the fetcher, not yet done
        self.landed_ = Landed()
        self.append_failed = False
        self.cut_short: list[str] = []  # copies a stop ended before they were done
        self.notes = Notes(streaming.stream_part_size(sync.settings.part_size))
        self._batch: list[tuple[str, bool, str]] = []  # small copies to finish in one task (landed)
        self._draining = False  # a task works through _batch

    def __len__(self) -> int:
        with self.lock:
            return len(self.flights)

    def expect(self, partial: str, flight: Flight) -> None:
        with self.lock:
            self.flights[partial] = flight

    def keys(self) -> set[str]:
        """Keys being fetched or verified, and those staged since the last take() (still in the
        pass's work until the cycle drops them): none is handed over twice."""
        with self.lock:
            return {f.item.key for f in self.flights.values()} | set(self.landed_.staged)

    def flights_now(self) -> list[Flight]:
        with self.lock:
            return list(self.flights.values())

    def reserved(self) -> tuple[dict[int, tuple[int, int]], dict[int, int]]:
        """What the copies in flight will take: per device (bytes, files), and per volume the object
        bytes being fetched (its batch budget's use)."""
        per_dev: dict[int, tuple[int, int]] = {}
        per_vol: dict[int, int] = {}
        with self.lock:
            for f in self.flights.values():
                b, n = per_dev.get(f.device, (0, 0))
                per_dev[f.device] = (b + f.reserved, n + 1)
                per_vol[f.volume] = per_vol.get(f.volume, 0) + f.item.size
        return per_dev, per_vol

    def advanced(self, partial: str, ready: int) -> None:
        """The fetcher's word on a copy fetched in order: `ready` bytes landed (streaming notes)."""
        with self.lock:
            f = self.flights.get(partial)
        if f is not None:
            self.notes.advanced(f, ready)

    def landed(self, partial: str, ok: bool, error: str) -> None:
        """The fetcher's report: verified and staged in the pool. A small copy whose verification
        asks no request joins a batch that one of the pool's threads works through, instead of
        a task and a thread woken per copy (with many small objects that hand-over cost the side
        about as much as the verification itself)."""
        with self.lock:
            f = self.flights.get(partial)
            batched = f is not None and self._batchable(f.item)
            if batched:
                self._batch.append((partial, ok, error))
                start, self._draining = not self._draining, True
        if not batched:
            self.pool.submit(self._finish, partial, ok, error)
        elif start:
            self.pool.submit(self._drain)

    def _batchable(self, item: plan.Item) -> bool:
        """Small, no checksum named by the listing, at a store whose ETags have matched the bytes
        (MD5s) and none said to be no MD5: its check reads the copy and asks the store nothing
        (copycheck.py) unless the bytes disagree with the ETag (a damaged copy: one HeadObject),
        so it seldom holds up the copies batched after it."""
        checker = self.sync.checker
        return (item.size < checksum.INLINE_BELOW and not item.checksum and checker.trust.matched
                and not checker.opaque_seen)

    def _drain(self) -> None:
        """The batched copies, until none is left (those that land meanwhile join this run)."""
        while True:
            with self.lock:
                batch, self._batch = self._batch, []
                if not batch:
                    self._draining = False
                    return
            for partial, ok, error in batch:
                try:
                    self._finish(partial, ok, error)
                except Exception as exc:  # noqa: BLE001 - _finish keeps its own; never leave the batch stuck
                    log.warning("cannot finish the copy %s: %s", partial, exc)

    def take(self) -> Landed:
        with self.lock:
            got, self.landed_ = self.landed_, Landed()
        return got

    def _finish(self, partial: str, ok: bool, error: str) -> None:
        with self.lock:
            f = self.flights.get(partial)
        if f is None:
            return
        try:
            self._end(partial, f, ok, error)
        except Exception as exc:  # noqa: BLE001 - never lost in the pool: tried again
            remove_quietly(partial)
            if isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EIO):
                self.sync.watch.failed(f.volume, exc)  # the volume failed, not the copy: not a try
                with self.lock:
                    self.landed_.volume_failed += 1
                return
            log.warning("cannot stage the copy of %r: %s", f.item.key, exc)
            with self.lock:
                self.landed_.failed += 1
                self.sync._tried(f.item, f"cannot stage the copy: {exc}", self.landed_)
        finally:
            with self.lock:
                self.flights.pop(partial, None)

    def _end(self, partial: str, f: Flight, ok: bool, error: str) -> None:
        sync, item = self.sync, f.item
        if ok:
            sync.refusals.succeeded()
        elif not sync.stopper.stopped:
            sync.refusals.failed(item.key, error)
        row, why = sync.checker.verify(item, partial) if ok else (None, "")
        self.notes.done(f)  # kept through the verification, so an early upload stays open
        if row is not None:
            self._stage(f, partial, row)
            return
        remove_quietly(partial)
        if ok:
            log.warning("checksum mismatch for %r (size %d, ETag %s): %s; discarded, will fetch again", item.key,
                        item.size, item.etag, why)
        with self.lock:
            self._failed(f, ok, error, why)

    def _failed(self, f: Flight, ok: bool, error: str, why: str) -> None:
        item, got = f.item, self.landed_
        if ok:
            got.mismatched += 1
            self.sync._tried(item, why, got, f"copy of {item.key!r} does not match the listed object: discarded")
        elif self.sync.stopper.stopped:
            self.cut_short.append(item.key)  # one line for them all: close
        elif any(s in error.lower() for s in NO_SPACE):
            got.no_space += 1  # something else filled the volume: a pause, not a try
            log.warning("no space left on %s for %r (another program filled it beyond the plan's room); it waits "
                        "for space", f.vol.root, item.key)
        elif any(s in error.lower() for s in VOLUME_FAILED) or not self.sync.watch.usable(f.volume):
            got.volume_failed += 1  # the volume failed (health.py names it): another one takes it, not a try
            if "read-only" in error.lower() or "errno 30" in error.lower():
                self.sync.watch.failed(f.volume, OSError(30, error))
        elif ARCHIVED in error:
            got.failed += 1
            self.sync._tried(item, "it is in an archive storage class (GLACIER or DEEP_ARCHIVE) and cannot be read "
                             "until it is restored: restore it (aws s3api restore-object), then run repair_ledger.py",
                             got, at_once=True)
        else:
            got.failed += 1
            self.sync._tried(item, f"copy failed: {error or 'unknown error'}", got,
                             f"copy of {item.key!r} failed: {error or 'unknown error'}")

    def _stage(self, f: Flight, partial: str, row: tuple) -> None:
        dest = f.vol.staged_path(f.name)
        try:
            os.replace(partial, dest)
        except FileNotFoundError:  # its folder is not there: the volume went since the copy was handed over?
            if not self.sync.watch.present(f.volume):  # (health.py) nothing is made in its bare mount point
                remove_quietly(partial)
                with self.lock:
                    self.landed_.volume_failed += 1
                return
            os.makedirs(os.path.dirname(dest), exist_ok=True)  # its mark is there: the volume's own folder
            os.replace(partial, dest)
        try:
            self.appender.add(row)
        except OSError as exc:
            # the row is held and written by a later flush, or the cycle fails there and the next
            # pass reloads the ledger and adopts the staged copy
            if not self.append_failed:
                self.append_failed = True
                log.warning("cannot append to %s (%s); rows are held until it can be written", SRC_LEDGER, exc)
        with self.lock:
            got = self.landed_
            got.moved += 1
            got.moved_bytes += f.item.size
            got.size_only += row[3] == checksum.SIZE
            got.staged.append(f.item.key)
        self.sync._note_progress(1, f.item.size)

    def close(self) -> None:
        """Wait for the copies being verified, write the rows held, say what a stop cut short."""
        self.pool.shutdown(wait=True)
        cut = self.cut_short
        if cut:
            log.info("stopping: %d copies not finished (%s); they are fetched again at the next start", len(cut),
                     ", ".join(repr(k) for k in sorted(cut)[:3]) + (", ..." if len(cut) > 3 else ""))
        self.appender.flush()


class Notes:
    """The notes that tell the destination side how much of an object fetched in order has landed
    (streaming.py): rewritten each time one more whole part is in, and at the end."""

    def __init__(self, part_size: int) -> None:
        self.part_size = part_size
        self.parts: dict[str, int] = {}  # staged name -> whole parts when its note was last written

    def advanced(self, f: Flight, ready: int) -> None:
        item = f.item
        parts = ready // streaming.part_size_for(item.size, self.part_size)
        if parts == self.parts.get(f.name, 0) and ready < item.size:
            return
        self.parts[f.name] = parts
        try:
            streaming.write_note(f.vol, f.name, item.key, item.size, item.etag, ready)
        except OSError as exc:
            log.debug("no streaming note for %r: %s", item.key, exc)

    def done(self, f: Flight) -> None:
        if self.parts.pop(f.name, None) is not None:
            streaming.remove_note(f.vol, f.name)
