#!/usr/bin/env python3
"""What s5cmd itself costs per small object, the way the suite drives it and the way `s5cmd cp`
of a whole prefix does: CPU seconds of the s5cmd process (and of the S3 server) per object, for
downloads and uploads, on a local SeaweedFS server (no namespace, no shaping: run it on an idle
machine). The suite feeds a long-lived `s5cmd --json run` one `cp --raw` line per object
(s5cmd.Stream); each line is a whole command for s5cmd, and a download of a named object asks
for its size first (a HeadObject). Used for docs/performance.md.

    .venv/bin/python tools/s5cmd_cost.py --objects 5000 --rounds 2

With --hops, the two hops of the `small` scenario with s5cmd alone, on two servers (one per side,
as in `make bench`): downloads from one and uploads to the other, fed the suite's way (a line per
object) one hop after the other and both at once, beside `s5cmd cp` of the prefix and of the
folder one after the other (as the bench's baseline runs them). Wall time and CPU of each part:
what running both hops at once costs on a machine whose cores the servers share, before any
Python of the suite.

    .venv/bin/python tools/s5cmd_cost.py --hops --objects 10000 --rounds 2
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib.common import aws_env, find_s5cmd, s3_client  # noqa: E402
from benchlib.servers import Weed, free_base_port  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=64, help="s5cmd --numworkers (the suite's src_workers, dest_workers)")
    ap.add_argument("--hops", action="store_true", help="both hops on two servers: one after the other, and at once")
    a = ap.parse_args(argv)
    if a.hops:
        return hops(a)
    work = Path(tempfile.mkdtemp(prefix="s5cmd-cost-"))
    server = Weed("src", work, free_base_port(set()))
    s5, env = find_s5cmd(), aws_env()
    try:
        s3 = s3_client(server.url)
        for b in ("cost-a", "cost-b"):
            s3.create_bucket(Bucket=b)
        seed, keys = seed_folder(work, a.objects)
        subprocess.run([s5, "--endpoint-url", server.url, "cp", f"{seed}/*", "s3://cost-a/p/"], env=env, check=True,
                       capture_output=True, stdin=subprocess.DEVNULL)
        g = [s5, "--endpoint-url", server.url, "--json", "--numworkers", str(a.workers)]
        n = 0

        def measure(what: str, argv: list[str], lines: list[str] | None, extra: dict[str, str]) -> None:
            r0, c0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), server.cpu(), time.monotonic()
            subprocess.run(argv, env={**env, **extra}, input="".join(lines).encode() if lines else None,
                           capture_output=True, check=True, stdin=None if lines else subprocess.DEVNULL)
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime
            print(f"{what:44s} {time.monotonic() - t0:6.2f} s  s5cmd {cpu / a.objects * 1e3:5.2f} ms/object  "
                  f"server {(server.cpu() - c0) / a.objects * 1e3:5.2f} ms/object", flush=True)

        for _ in range(a.rounds):
            for extra in ({}, {"GOGC": "400"}):
                n += 1
                tag = " ".join(f"{k}={v}" for k, v in extra.items()) or "Go defaults"
                measure(f"download, cp of the prefix ({tag})", [*g, "cp", "s3://cost-a/p/*", f"{work}/w{n}/"], None, extra)
                measure(f"download, run: a cp line each ({tag})", [*g, "run"],
                        [f"cp --raw s3://cost-a/p/{k} {work}/r{n}-{i}\n" for i, k in enumerate(keys)], extra)
                measure(f"upload, cp of the folder ({tag})", [*g, "cp", f"{seed}/*", f"s3://cost-b/w{n}/"], None, extra)
                measure(f"upload, run: a cp line each ({tag})", [*g, "run"],
                        [f"cp --raw -p 50 {seed}/{k} s3://cost-b/r{n}/{k}\n" for k in keys], extra)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def seed_folder(work: Path, objects: int) -> tuple[Path, list[str]]:
    seed = work / "seed"
    keys = [f"d{i % 50:02d}/o{i:06d}" for i in range(objects)]
    rnd = random.Random(7)
    for k in keys:
        (seed / k).parent.mkdir(parents=True, exist_ok=True)
        (seed / k).write_bytes(rnd.randbytes(rnd.randint(0, 2048)))
    return seed, keys


def hops(a) -> int:
    work = Path(tempfile.mkdtemp(prefix="s5cmd-hops-"))
    used: set[int] = set()
    servers: dict[str, Weed] = {}
    s5, env = find_s5cmd(), dict(aws_env(), GOGC="400")
    try:
        for side in ("src", "dst"):  # in the try: a server that fails to start stops the one before it
            servers[side] = Weed(side, work, free_base_port(used))
        for side, server in servers.items():
            s3_client(server.url).create_bucket(Bucket=f"hops-{side}")
        seed, keys = seed_folder(work, a.objects)
        g = {side: [s5, "--endpoint-url", server.url, "--json", "--numworkers", str(a.workers)]
             for side, server in servers.items()}
        subprocess.run([*g["src"], "cp", f"{seed}/*", "s3://hops-src/p/"], env=env, check=True, capture_output=True,
                       stdin=subprocess.DEVNULL)

        def run(argv: list[str], lines: list[str] | None) -> None:
            subprocess.run(argv, env=env, input="".join(lines).encode() if lines else None, capture_output=True,
                           check=True, stdin=None if lines else subprocess.DEVNULL)

        def measure(what: str, steps: list[tuple[list[str], list[str] | None]], together: bool) -> None:
            r0, c0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), {k: v.cpu() for k, v in servers.items()}, time.monotonic()
            if together:
                threads = [threading.Thread(target=run, args=step) for step in steps]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
            else:
                for step in steps:
                    run(*step)
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime
            srv = "  ".join(f"server {k} {servers[k].cpu() - c0[k]:6.2f} s" for k in servers)
            print(f"{what:44s} {time.monotonic() - t0:6.2f} s  s5cmd {cpu:6.2f} s  {srv}", flush=True)

        for n in range(a.rounds):
            (work / f"cp{n}").mkdir()
            measure("cp of the prefix, then cp of the folder", [
                ([*g["src"], "cp", "s3://hops-src/p/*", f"{work}/cp{n}/"], None),
                ([*g["dst"], "cp", f"{seed}/*", f"s3://hops-dst/cp{n}/"], None)], together=False)
            for mode, together in (("one after the other", False), ("both at once", True)):
                tag = f"{n}-{together}"
                measure(f"a cp line each, {mode}", [
                    ([*g["src"], "run"], [f"cp --raw s3://hops-src/p/{k} {work}/l{tag}-{i}\n" for i, k in enumerate(keys)]),
                    ([*g["dst"], "run"], [f"cp --raw -p 50 {seed}/{k} s3://hops-dst/l{tag}/{k}\n" for k in keys])],
                    together)
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
