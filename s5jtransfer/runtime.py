"""Process plumbing shared by the sync loops: stop signals, child processes, batched durable appends."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import threading
import time
from typing import Callable, TypeVar

from . import tls
from .errors import ConfigError
from .progress import fmt_bytes  # noqa: F401 - re-exported for the sync modules

T = TypeVar("T")
log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
try:
    _libc = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - non-glibc
    _libc = None


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """preexec_fn: the child gets `sig` when its parent dies (a power cut of the parent must
    not leave an orphaned s5cmd writing into the staging area)."""

    def _set() -> None:
        if _libc is not None:
            _libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)

    return _set


class Stopper:
    """Turns SIGINT/SIGTERM into a flag and stops the current child process."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum: int | None = None
        self._asked = False  # set by the signal handler itself (see install)
        self._wake_fd = -1
        self._children: set[subprocess.Popen] = set()
        # reentrant: the signal handler runs in the main thread, possibly while that thread is
        # inside track()/untrack() holding this lock; a plain Lock would deadlock there
        self._lock = threading.RLock()

    def install(self) -> "Stopper":
        # The handler runs in the main thread between two bytecodes, possibly inside Event.wait()
        # while that thread holds the event's internal lock (not reentrant): event.set() there
        # would wait for it forever, and the process would never exit (as starting a thread
        # could, inside threading's own locks). So the handler takes no lock of Python's: it
        # writes a byte to a pipe, and a thread waiting on it sets the event.
        read_fd, self._wake_fd = os.pipe()
        threading.Thread(target=self._set_when_woken, args=(read_fd,), name="stop", daemon=True).start()
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)
        return self

    def _set_when_woken(self, read_fd: int) -> None:
        os.read(read_fd, 1)
        self.event.set()

    def _handle(self, signum, frame) -> None:
        self.signum = signum
        self._asked = True  # `stopped` at once, the event an instant later
        os.write(self._wake_fd, b"\0")
        with self._lock:
            for proc in list(self._children):
                if proc.poll() is None:
                    try:
                        proc.terminate()
                    except OSError:
                        pass

    @property
    def stopped(self) -> bool:
        return self._asked or self.event.is_set()

    def sleep(self, seconds: float) -> bool:
        """Sleep unless stopped; True when a stop was asked for."""
        return self._asked or self.event.wait(seconds)

    def track(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._children = {p for p in self._children if p.poll() is None}
            self._children.add(proc)
            if self.stopped:
                proc.terminate()

    def untrack(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._children.discard(proc)

    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGINT)


class Appender:
    """Collects ledger rows from worker threads and appends them durably in batches: the first
    row at once (the other side starts on it), then at most max_rows or max_age seconds' worth
    at a time. max_bytes: rows held for objects of this many bytes (a row's second field is
    its object's size) are written at once, so the other side never waits on a large object
    (its transfer costs far more than one more append).

    after_flush runs with the rows once they are on disk (the destination deletes staged
    copies only then). timed: rows never wait longer than max_age for a next add() (a flush
    from a timer thread; only for an Appender without after_flush).
    """

    def __init__(self, ledger, after_flush: Callable[[list[tuple]], None] | None = None,
                 max_rows: int = 500, max_age: float = 0.5, timed: bool = False,
                 max_bytes: int | None = None) -> None:
        self.ledger = ledger
        self.max_bytes = max_bytes
        self._bytes = 0  # object bytes the held rows stand for
        self.after_flush = after_flush
        self.max_rows = max_rows
        self.max_age = max_age
        self.timed = timed and after_flush is None
        self._rows: list[tuple] = []
        self._lock = threading.Lock()
        self._since: float | None = None  # when last flushed; None: never, the first row goes at once
        self._timer: threading.Timer | None = None
        self.flushed = 0
        self._warned = False  # a failed timed flush was logged (see _timed_flush)

    def add(self, row: tuple) -> None:
        with self._lock:
            self._rows.append(row)
            if self.max_bytes is not None:
                self._bytes += row[1] if len(row) > 1 and isinstance(row[1], int) else 0
            age = None if self._since is None else time.monotonic() - self._since
            due = len(self._rows) >= self.max_rows or age is None or age >= self.max_age \
                or (self.max_bytes is not None and self._bytes >= self.max_bytes)
            if not due and self.timed and self._timer is None:
                self._timer = threading.Timer(self.max_age - age, self._timed_flush)
                self._timer.daemon = True
                self._timer.start()
        if due:
            self.flush()

    def _timed_flush(self) -> None:
        with self._lock:
            self._timer = None
        try:
            self.flush()
        except Exception as exc:  # noqa: BLE001 - the rows are held; the next flush tries again
            if not self._warned:  # once until an append works again, not every max_age
                self._warned = True
                log.warning("cannot append to %s (%s); the rows are kept and written at the next flush",
                            getattr(self.ledger, "path", "the ledger"), exc)

    def flush(self) -> None:
        """Append the held rows. When that fails (a full disk), the rows stay held, in order, for
        the next flush, and the error is raised: a row is never dropped."""
        with self._lock:
            rows, self._rows = self._rows, []
            self._bytes = 0
            if not rows:
                return
            self._since = time.monotonic()
            try:
                self.ledger.append(rows)
            except BaseException:
                self._rows[:0] = rows
                if self.max_bytes is not None:
                    self._bytes += sum(r[1] for r in rows if len(r) > 1 and isinstance(r[1], int))
                raise
            self.flushed += len(rows)
            self._warned = False
        if self.after_flush:
            self.after_flush(rows)

    @property
    def held(self) -> int:
        """Rows not yet on disk."""
        with self._lock:
            return len(self._rows)


def file_signature(path: str) -> tuple[int, int, int, int] | None:
    """(inode, size, mtime, ctime) of a file, None when it is missing: changes on an append and on a
    rewrite, and on any write to a staged copy (ctime cannot be set back by a program)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def file_inode(path: str) -> int | None:
    """A file's inode, None when it is missing: changes only when the file is replaced."""
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


_NOW = object()


def sleep_until_changed(path: str, seconds: float, stopper: Stopper, tick: float = 0.1,
                        since: object = _NOW, wake: threading.Event | None = None,
                        signature: Callable[[str], object] = file_signature) -> bool:
    """Sleep up to `seconds`, waking early when `path` changes, as `signature` sees it: one local
    stat per tick, no S3 request. since: the signature when the file was last read (default:
    now), so a change made meanwhile ends the sleep at once; wake: an event that also ends it (it
    is cleared). True when a stop was asked for."""
    deadline = time.monotonic() + seconds
    start = signature(path) if since is _NOW else since
    while True:
        if stopper.stopped:
            return True
        if signature(path) != start:
            return False
        if wake is not None and wake.is_set():
            wake.clear()
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        if stopper.sleep(min(tick, left)):
            return True


def remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


class Interrupted(Exception):
    """A stop was asked for while a read-only step (a listing) waited on the network."""


def interruptible(fn: Callable[[], T], stopper: "Stopper", name: str = "listing") -> T:
    """fn() in a thread of its own, given up at once (Interrupted) when a stop is asked for, so
    a dead or hanging endpoint (boto3 waiting and retrying for minutes) does not hold the stop
    up. Only for steps that write nothing, such as a listing: the thread is left behind, and the
    process exits without waiting for it."""
    box: dict[str, object] = {}
    done = threading.Event()

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name=name, daemon=True).start()
    while not done.wait(0.1):
        if stopper.stopped:
            raise Interrupted(f"stopped during the {name}")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


class Done(Exception):
    """Raised by a loop's after-cycle hook when the work is done (--once); code: the exit code
    (progress.GAVE_UP when objects were set aside)."""

    def __init__(self, code: int = 0) -> None:
        super().__init__(code)
        self.code = code


def poll_loop(cycle: Callable[[], object], after: Callable[[object, float, float], float],
              describe: Callable[[BaseException], str], settings, stopper: Stopper,
              sleep: Callable[[float], bool] | None = None, dry_run: bool = False) -> int:
    """Run cycle() until stopped. after(stats, started, delay) logs and returns the next pause,
    or raises Done. A failed cycle is logged in one line and retried with backoff."""
    sleep = sleep or stopper.sleep
    delay = settings.poll_interval
    while not stopper.stopped:
        started = time.monotonic()
        try:
            st = cycle()
        except Exception as exc:  # noqa: BLE001 - a failed cycle is logged and retried
            if stopper.stopped:
                break
            if dry_run:  # a dry run reports once: nothing to retry
                log.error("dry run failed: %s", describe(exc))
                return 1
            if tls.is_refusal(exc) or isinstance(exc, ConfigError):
                # a certificate that does not verify, a store that refuses what the side must do
                # (refusal.py): config.yaml (or the store's policy) must change, not a retry
                log.error("%s", describe(exc))
                return ConfigError.exit_code
            log.error("cycle failed: %s (retrying in %.0fs)", describe(exc), delay)
            log.debug("cycle failure", exc_info=True)
            if stopper.sleep(delay):
                break
            delay = min(delay * 2, settings.max_poll_interval)
            continue
        if dry_run:
            return 0
        try:
            delay = after(st, started, delay)
        except Done as done:
            return done.code
        if delay and sleep(delay):
            break
    return stopper.exit_code()
