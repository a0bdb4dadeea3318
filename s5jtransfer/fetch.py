"""Moving objects from the source to the staging volumes: s5cmd for every byte, boto3 in native mode.

Each object arrives at its partial path; fetch() reports (partial, ok, error) exactly once per
object, as it finishes, from a worker thread. plan.route chooses the way:

- SMALL and LARGE: one long-lived `s5cmd --json run` per live endpoint and kind, fed through its
  standard input largest first; every line fed is also written to the run file (the first
  endpoint's `src_commands.txt`, the others `src_commands-2.txt`..., the large objects'
  `src_commands-large.txt`...). Large objects go one at a time per endpoint, each in parallel
  ranges, so they are staged one after another at the speed of the whole link and the destination
  side starts on the first within seconds, instead of all of them sharing the link and finishing
  late.
- CAT (dest_stream_uploads: fetch's `advanced`): one object at a time. While a destination side
  runs here to upload it as it lands, `s5cmd cat` with its standard output on the partial copy:
  s5cmd writes the object in order, so the file's size is the number of bytes landed;
  advanced(partial, size) is called as it grows (the destination side uploads whole parts
  meanwhile: streaming.py). Python never touches these bytes. Else `s5cmd cp` in parallel ranges.
  Each is recorded in `src_commands-cat.txt` as the `cp` line that repeats it.
- API: boto3 (native mode, and keys a run file cannot carry).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, NamedTuple

from . import plan, s3, s5cmd, streaming
from .endpoints import Endpoints, split_by_bytes
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

Report = Callable[[str, bool, str], None]


class Job(NamedTuple):
    key: str  # relative to the source prefix
    size: int
    partial: str  # where it lands


def run_file(kind: str, n: int) -> str:
    """The run file of the n-th live endpoint's s5cmd of one kind (n from 0)."""
    stem = "src_commands" if kind == plan.SMALL else f"src_commands-{kind}"
    return f"{stem}.txt" if n == 0 else f"{stem}-{n + 1}.txt"


class Fetcher:
    def __init__(self, side, settings, eps: Endpoints, binary: str | None, stopper: Stopper) -> None:
        self.side = side
        self.settings = settings
        self.eps = eps
        self.binary = binary  # None: native mode
        self.stopper = stopper
        self.halted: Callable[[], bool] = lambda: False  # the source refuses its reads (refusal.py): no more
        # keys whose `s5cmd cat` failed without a word (as it does for an archived object): their
        # next try goes with cp, which says why
        self._mute_cats: set[str] = set()

    def route(self, job: Job, streams: bool) -> str:
        return plan.route(job.size, self.binary is None, s5cmd.run_file_safe(job.key),
                          streaming.stream_part_size(self.settings.part_size), streams)

    def fetch(self, jobs: list[Job], live: list[int], report: Report,
              advanced: Callable[[str, int], None] | None = None) -> None:
        """Fetch every job over the live endpoints; returns when each has been reported.
        advanced(partial, size): the destination side may upload objects while they land (CAT);
        None: it does not (dest_stream_uploads false), so none is fetched in order."""
        by_route: dict[str, list[Job]] = {}
        for job in sorted(jobs, key=lambda j: -j.size):
            by_route.setdefault(self.route(job, advanced is not None), []).append(job)
        work: list[Callable[[], None]] = []
        for kind, workers, flags in ((plan.LARGE, LARGE_WORKERS, plan.large_flags),
                                     (plan.SMALL, self.settings.src_workers, _no_flags)):
            group = by_route.get(kind, [])
            for n, share in enumerate(split_by_bytes(group, [j.size for j in group], len(live))):
                if share:
                    work.append(lambda ep=live[n], share=share, kind=kind, workers=workers, flags=flags, n=n:
                                self._run_stream(ep, share, run_file(kind, n), workers, flags, report))
        if by_route.get(plan.CAT):
            work.append(lambda: self._run_cats(by_route[plan.CAT], live, report, advanced))
        if by_route.get(plan.API):
            work.append(lambda: self._run_api(by_route[plan.API], live, report))
        threads = [threading.Thread(target=w, daemon=True, name="fetch") for w in work[1:]]
        for t in threads:
            t.start()
        if work:
            work[0]()
        for t in threads:
            t.join()

    # -- s5cmd run, fed through its standard input ----------------------------------------
    def _run_stream(self, ep: int, jobs: list[Job], record: str, workers: int, flags, report: Report) -> None:
        failures: list[str] = []

        def rep(partial: str, ok: bool, error: str) -> None:
            if not ok:
                failures.append(error)
            report(partial, ok, error)

        gargs = s5cmd.global_args(self.side, workers, self.settings.retries, self.eps.urls[ep])
        stream = s5cmd.Stream(self.binary, gargs, s3.child_env(self.side), record, rep,
                              on_start=self.stopper.track, preexec=die_with_parent())
        try:
            for job in jobs:
                if self.stopper.stopped or self.halted():
                    rep(job.partial, False, self._why_not())
                    continue
                stream.add(s5cmd.cp_line(self.side.url(job.key), job.partial, flags(job.size)), job.partial, job.size)
        finally:
            stream.close()
            self.stopper.untrack(stream.proc)
        self._judge(ep, len(jobs), failures)

    def _why_not(self) -> str:
        return "stopped" if self.stopper.stopped else "not tried: the source refuses reads"

    def _judge(self, ep: int, tried: int, failures: list[str]) -> None:
        """An endpoint of a cluster whose every copy failed is set aside."""
        if len(self.eps.urls) > 1 and tried and len(failures) == tried and not self.stopper.stopped:
            self.eps.failed(ep, failures[-1])

    # -- s5cmd cat, in order, onto the partial copy ---------------------------------------
    def _run_cats(self, jobs: list[Job], live: list[int], report: Report, advanced) -> None:
        """One at a time, largest first. Each is fetched in order (cat) when its turn comes while a
        destination side runs here to upload it as it lands; else with cp in parallel ranges
        (plan.large_flags), the faster way, as the source side started before the destination
        side would otherwise fetch the whole first batch in order for nobody."""
        lock = threading.Lock()
        record = open(run_file(plan.CAT, 0), "w", encoding="utf-8")
        record.write(f"# each object below without flags was fetched with `s5cmd cat --raw {' '.join(CAT_FLAGS)} SOURCE"
                     " > DESTINATION` (`s5cmd run` on this file repeats it with cp), the others as written\n")
        failures: dict[int, list[str]] = {ep: [] for ep in live}
        tried: dict[int, int] = {ep: 0 for ep in live}

        def one(n_job: tuple[int, Job]) -> None:
            n, job = n_job
            ep = live[n % len(live)]
            if self.stopper.stopped or self.halted():
                report(job.partial, False, self._why_not())
                return
            in_order = uploader_running() and job.key not in self._mute_cats
            flags = () if in_order else plan.large_flags(job.size)
            with lock:
                record.write(s5cmd.cp_line(self.side.url(job.key), job.partial, flags) + "\n")
                record.flush()
                tried[ep] += 1
            url = self.side.url(job.key)
            ok, error = (self._single(ep, job, ["cat", "--raw", *CAT_FLAGS, url], advanced) if in_order else
                         self._single(ep, job, ["cp", "--raw", *flags, url, job.partial], None))
            if not ok:
                with lock:
                    failures[ep].append(error)
                    if in_order and error.endswith(MUTE):
                        self._mute_cats.add(job.key)
            report(job.partial, ok, error)

        try:
            with ThreadPoolExecutor(max_workers=CAT_WORKERS, thread_name_prefix="fetch-cat") as pool:
                list(pool.map(one, enumerate(jobs)))
        finally:
            record.close()
        for ep in live:
            self._judge(ep, tried[ep], failures[ep])

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
    def _run_api(self, jobs: list[Job], live: list[int], report: Report) -> None:
        """boto3 in-process: native mode, and keys s5cmd cannot take. An object up to the part
        size is one GetObject streamed to disk; larger ones use the transfer manager's ranged GETs."""
        tcfg = s3.transfer_config(self.settings.part_size)
        clients = [self.eps.client(i) for i in live]

        def one(n_job: tuple[int, Job]) -> None:
            n, job = n_job
            if self.stopper.stopped or self.halted():
                report(job.partial, False, self._why_not())
                return
            client = clients[n % len(clients)]
            key = self.side.prefix + job.key
            try:
                if job.size < self.settings.part_size:
                    _get_to_file(client, self.side.bucket, key, job.partial)
                else:
                    client.download_file(self.side.bucket, key, job.partial, Config=tcfg)
            except Exception as exc:  # noqa: BLE001 - every failure is retried next cycle
                report(job.partial, False, s3.describe_error(exc, self.side))
                return
            report(job.partial, True, "")

        with ThreadPoolExecutor(max_workers=self.settings.src_workers) as pool:
            list(pool.map(one, enumerate(jobs)))


def _no_flags(size: int) -> tuple[str, ...]:
    return ()


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
