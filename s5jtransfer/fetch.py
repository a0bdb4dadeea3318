"""Moving objects from the source to the staging volumes: s5cmd for every byte, boto3 in native mode.

Each object arrives at its partial path. submit() hands objects over and returns at once; the
fetcher reports (partial, ok, error) exactly once per object, as it finishes, from a worker
thread. The engine keeps working across the source side's cycles: a cycle boundary, a ledger
flush or a listing never drains it. plan.route chooses the way:

- SMALL and LARGE: one long-lived `s5cmd --json run` per live endpoint and kind, fed through its
  standard input as objects are handed over, largest first; every line fed is also written to the
  run file (the first endpoint's `src_commands.txt`, the others `src_commands-2.txt`..., the large
  objects' `src_commands-large.txt`...). Large objects go one at a time per endpoint, each in
  parallel ranges, so they are staged one after another at the speed of the whole link and the
  destination side starts on the first within seconds. An s5cmd with nothing to do for
  STREAM_IDLE seconds is ended.
- CAT (dest_stream_uploads: submit's `advanced`): one object at a time. While a destination side
  runs here to upload it as it lands, `s5cmd cat` with its standard output on the partial copy:
  s5cmd writes the object in order, so the file's size is the number of bytes landed;
  advanced(partial, size) is called as it grows (the destination side uploads whole parts
  meanwhile: streaming.py). Python never touches these bytes. Else `s5cmd cp` in parallel ranges.
  Each is recorded in `src_commands-cat.txt` as the `cp` line that repeats it.
- API: boto3 (native mode, and keys a run file cannot carry).

An endpoint of a cluster whose copies fail SET_ASIDE_STREAK times in a row is set aside.
"""

from __future__ import annotations

import json
import contextlib
import logging
import os
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, NamedTuple

from . import plan, s3, s5cmd, streaming
from .endpoints import Endpoints
from .ledger import uploader_running
from .runtime import Stopper, die_with_parent

log = logging.getLogger("s5jtransfer.src")
RUN_FILE = "src_commands.txt"
LARGE_WORKERS = 1  # large objects fetched at once per endpoint (one: each lands at the link's whole speed,
# in parallel ranges: plan.large_flags)
CAT_WORKERS = 1  # objects fetched in order at once (per side, spread over the live endpoints) ...
CAT_FLAGS = ("-c", "16", "-p", "8")  # ... each in 16 parallel ranges of 8 MiB, written in order
GROW_POLL = 0.1  # seconds between looks at the size of a partial copy being fetched in order
MUTE = " without saying why"
STREAM_IDLE = 2.0  # seconds an s5cmd with nothing to do is kept before it is ended
SET_ASIDE_STREAK = 5  # failed copies in a row, with no success between, that set an endpoint aside

Report = Callable[[str, bool, str], None]


class Job(NamedTuple):
    key: str  # relative to the source prefix
    size: int
    partial: str  # where it lands


def run_file(kind: str, n: int) -> str:
    """The run file of endpoint n's s5cmd of one kind (n from 0)."""
    stem = "src_commands" if kind == plan.SMALL else f"src_commands-{kind}"
    return f"{stem}.txt" if n == 0 else f"{stem}-{n + 1}.txt"


class Fetcher:
    def __init__(self, side, settings, eps: Endpoints, binary: str | None, stopper: Stopper, report: Report) -> None:
        self.side = side
        self.settings = settings
        self.eps = eps
        self.binary = binary  # None: native mode
        self.stopper = stopper
        self.report = report
        self.halted: Callable[[], bool] = lambda: False  # the source refuses its reads (refusal.py): no more
        # keys whose `s5cmd cat` failed without a word (as it does for an archived object): their
        # next try goes with cp, which says why
        self._mute_cats: set[str] = set()
        self._streams: dict[tuple[str, int], s5cmd.Stream] = {}  # (kind, endpoint) -> its running s5cmd
        self._busy: dict[tuple[str, int], float] = {}  # ... when it last had work
        self._pools: dict[str, ThreadPoolExecutor] = {}
        self._cat_record = None  # the src_commands-cat.txt record: opened when first needed, False once given up
        self._lock = threading.Lock()
        self._flight: dict[str, int] = {}  # partial -> endpoint, for every object handed over and not reported
        self._streak: dict[int, int] = {}  # endpoint -> failures in a row

    def route(self, job: Job, streams: bool) -> str:
        return plan.route(job.size, self.binary is None, s5cmd.run_file_safe(job.key),
                          streaming.stream_part_size(self.settings.part_size), streams)

    def __len__(self) -> int:
        with self._lock:
            return len(self._flight)

    def submit(self, jobs: list[Job], live: list[int], advanced: Callable[[str, int], None] | None = None) -> None:
        """Hand objects over to the live endpoints, the one with the fewest bytes in flight first,
        in the work's order (plan.order_key: large objects first, largest first, then the small
        ones in key order, so that what lands, and what the destination side uploads and confirms
        with a listing, is a narrow range of keys); returns at once. advanced(partial, size): the
        destination side may upload objects while they land (CAT); None: it does not, so none is
        fetched in order."""
        fed: dict[int, s5cmd.Stream] = {}  # the streams given lines: written in one go at the end
        for job in sorted(jobs, key=plan.order_key):
            kind = self.route(job, advanced is not None)
            ep = min(live, key=lambda i: self._bytes(kind, i))
            with self._lock:
                self._flight[job.partial] = ep
            if self.stopper.stopped or self.halted():
                self._reported(job.partial, False, self._why_not())
            elif kind in (plan.SMALL, plan.LARGE):
                flags = plan.large_flags(job.size) if kind == plan.LARGE else ()
                stream = self._stream(kind, ep)
                fed[id(stream)] = stream
                stream.add(s5cmd.cp_line(self.side.url(job.key), job.partial, flags), job.partial, job.size, hold=True)
            elif kind == plan.CAT:
                self._pool(plan.CAT, CAT_WORKERS).submit(self._one_cat, job, ep, advanced)
            else:
                self._pool(plan.API, self.settings.src_workers).submit(self._one_api, job, ep)
        for stream in fed.values():
            stream.flush()

    def _bytes(self, kind: str, ep: int) -> int:
        stream = self._streams.get((kind, ep))
        return stream.bytes_in_flight if stream is not None else 0

    def _reported(self, partial: str, ok: bool, error: str) -> None:
        """Every end of a job passes here: an endpoint failing again and again is set aside."""
        with self._lock:
            ep = self._flight.pop(partial, None)
            if ep is None:
                return
            streak = 0 if ok else self._streak.get(ep, 0) + 1
            self._streak[ep] = streak
        if streak >= SET_ASIDE_STREAK and len(self.eps.urls) > 1 and not self.stopper.stopped:
            self.eps.failed(ep, error)
        self.report(partial, ok, error)

    def _why_not(self) -> str:
        return "stopped" if self.stopper.stopped else "not tried: the source refuses reads"

    # -- s5cmd run, fed through its standard input ----------------------------------------
    def _stream(self, kind: str, ep: int) -> s5cmd.Stream:
        stream = self._streams.get((kind, ep))
        if stream is not None and stream.usable():
            return stream
        if stream is not None:
            s5cmd.retire(stream, self.side.name, 5)
        workers = LARGE_WORKERS if kind == plan.LARGE else self.settings.src_workers
        gargs = s5cmd.global_args(self.side, workers, self.settings.retries, self.eps.urls[ep])
        stream = s5cmd.Stream(self.binary, gargs, s3.child_env(self.side), run_file(kind, ep), self._reported,
                              on_start=self.stopper.track, preexec=die_with_parent(),
                              frozen_after=self.settings.request_timeout)
        self._streams[(kind, ep)] = stream
        self._busy[(kind, ep)] = time.monotonic()
        return stream

    def io(self) -> dict[int, int]:
        """Bytes each running s5cmd has read and written, by PID (health.Stall: moving or not)."""
        return s5cmd.io_of(self._streams)

    def close_idle(self) -> None:
        """An s5cmd with nothing in flight for STREAM_IDLE seconds is ended (an idle side runs no
        child); one that died, or whose credentials expired, is closed at once: what it never
        reported on is reported failed."""
        for stream in s5cmd.retire_idle(self._streams, self._busy, STREAM_IDLE, self.side.name):
            self.stopper.untrack(stream.proc)

    def close(self) -> None:
        """End everything (on exit): what was not reported is reported failed."""
        for pool in self._pools.values():
            pool.shutdown(wait=True, cancel_futures=True)
        for stream in self._streams.values():
            stream.close(timeout=10)
            self.stopper.untrack(stream.proc)
        self._streams.clear()
        if self._cat_record:
            with contextlib.suppress(OSError):
                self._cat_record.close()
        with self._lock:
            left = list(self._flight)
        for partial in left:
            self._reported(partial, False, "stopped")

    def _pool(self, kind: str, workers: int) -> ThreadPoolExecutor:
        if kind not in self._pools:
            self._pools[kind] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"fetch-{kind}")
        return self._pools[kind]

    # -- s5cmd cat, in order, onto the partial copy ---------------------------------------
    def _one_cat(self, job: Job, ep: int, advanced) -> None:
        """Fetched in order (cat) when its turn comes while a destination side runs here to upload
        it as it lands; else with cp in parallel ranges (plan.large_flags), the faster way, as the
        source side started before the destination side would otherwise fetch its first objects
        in order for nobody."""
        try:
            if self.stopper.stopped or self.halted():
                self._reported(job.partial, False, self._why_not())
                return
            in_order = uploader_running() and job.key not in self._mute_cats
            flags = () if in_order else plan.large_flags(job.size)
            self._record_cat(s5cmd.cp_line(self.side.url(job.key), job.partial, flags))
            url = self.side.url(job.key)
            ok, error = (self._single(ep, job, ["cat", "--raw", *CAT_FLAGS, url], advanced) if in_order else
                         self._single(ep, job, ["cp", "--raw", *flags, url, job.partial], None))
            if not ok and in_order and error.endswith(MUTE):
                self._mute_cats.add(job.key)
            self._reported(job.partial, ok, error)
        except Exception as exc:  # noqa: BLE001 - reported, never lost in the pool
            self._reported(job.partial, False, f"{type(exc).__name__}: {exc}")

    def _record_cat(self, line: str) -> None:
        """The record of a `cat` fetch, best effort: a record that cannot be written (a full
        working folder) is said once and given up, never the copy."""
        with self._lock:
            if self._cat_record is False:
                return
            try:
                if self._cat_record is None:
                    self._cat_record = open(run_file(plan.CAT, 0), "w", encoding="utf-8")
                    self._cat_record.write(f"# each object below without flags was fetched with `s5cmd cat --raw "
                                           f"{' '.join(CAT_FLAGS)} SOURCE > DESTINATION` (`s5cmd run` on this file "
                                           "repeats it with cp), the others as written\n")
                self._cat_record.write(line + "\n")
                self._cat_record.flush()
            except OSError as exc:
                log.warning("%s cannot be written (%s): the cat fetches go on unrecorded", run_file(plan.CAT, 0), exc)
                if self._cat_record:
                    with contextlib.suppress(OSError):
                        self._cat_record.close()
                self._cat_record = False

    def _single(self, ep: int, job: Job, command: list[str], advanced) -> tuple[bool, str]:
        """One s5cmd for one object: `cat` with its standard output on the partial copy, so
        advanced(partial, size) follows the bytes landed; or (advanced None) `cp` onto it."""
        argv = [self.binary, *s5cmd.global_args(self.side, 1, self.settings.retries, self.eps.urls[ep]), *command]
        errors: list[bytes] = []
        landed = 0
        try:
            out = open(job.partial, "wb") if advanced is not None else None
            try:
                proc = subprocess.Popen(argv, stdout=out or subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        stdin=subprocess.DEVNULL, env=s3.child_env(self.side), close_fds=True,
                                        preexec_fn=die_with_parent())
                self.stopper.track(proc)
                reader = threading.Thread(target=lambda: errors.extend(proc.stderr), daemon=True)
                reader.start()
                try:
                    while True:
                        try:
                            rc = proc.wait(timeout=GROW_POLL)
                        except subprocess.TimeoutExpired:
                            rc = None
                        size = _size(out) if out is not None else landed
                        if size != landed:
                            landed = size
                            advanced(job.partial, size)
                        if rc is not None:
                            break
                finally:
                    reader.join(timeout=5)
                    self.stopper.untrack(proc)
            finally:
                if out is not None:
                    out.close()
            if out is None and rc == 0:
                landed = os.path.getsize(job.partial)
        except OSError as exc:
            return False, f"cannot write {job.partial}: {exc}"
        if rc != 0:
            return False, _cat_error(errors) or f"s5cmd {command[0]} exited {rc}{MUTE}"
        if landed != job.size:
            return False, f"s5cmd {command[0]} wrote {landed} of {job.size} bytes"
        return True, ""

    # -- boto3 ----------------------------------------------------------------------------
    def _one_api(self, job: Job, ep: int) -> None:
        """boto3 in-process: native mode, and keys s5cmd cannot take. An object up to the part
        size is one GetObject streamed to disk; larger ones use the transfer manager's ranged GETs."""
        if self.stopper.stopped or self.halted():
            self._reported(job.partial, False, self._why_not())
            return
        client = self.eps.client(ep)
        key = self.side.prefix + job.key
        try:
            if job.size < self.settings.part_size:
                _get_to_file(client, self.side.bucket, key, job.partial)
            else:
                client.download_file(self.side.bucket, key, job.partial,
                                     Config=s3.transfer_config(self.settings.part_size))
        except Exception as exc:  # noqa: BLE001 - every failure is retried
            self._reported(job.partial, False, s3.describe_error(exc, self.side))
            return
        self._reported(job.partial, True, "")


def _size(fh) -> int:
    return os.fstat(fh.fileno()).st_size


def _cat_error(lines: list[bytes]) -> str:
    """s5cmd's last error message (a --json line, or plain text)."""
    for raw in reversed(lines):
        text = raw.decode("utf-8", "replace").strip()
        if not text:
            continue
        try:
            msg = json.loads(text)
        except ValueError:
            return text
        if isinstance(msg, dict) and msg.get("error"):
            return str(msg["error"])
        return text
    return ""


def _get_to_file(client, bucket: str, key: str, path: str) -> None:
    """One GetObject, streamed to path. A short or broken body raises (botocore checks the
    Content-Length), and the size and checksum checks that follow catch anything else."""
    body = client.get_object(Bucket=bucket, Key=key)["Body"]
    try:
        with open(path, "wb") as fh:
            for chunk in body.iter_chunks(1024 * 1024):
                fh.write(chunk)
    finally:
        body.close()
