#!/usr/bin/env python3
"""Synthetic scale run for `make bench` (no server): ledger loading and the plan diff at N objects.

Writes an N-row src_ledger.csv (`Key,Size,ETag,Verified,MD5`, the package's format) with the csv
module, then, in this same process, measures CPU time (time.process_time) and peak RSS
(VmHWM; getrusage ru_maxrss where /proc is missing) of

    rows = Ledger(path, SRC_COLUMNS).load()
    todo = plan.todo(listing, rows)

where `listing` is a streamed (generator) synthetic listing of N `plan.Item`s: 90% exactly as
ledgered, 5% changed at the source (another ETag), 5% new keys. So 10% must come out to do.
`cpu_s` is load + diff without the CPU spent generating the synthetic listing itself
(measured separately as `listing_generation_cpu_s`); `cpu_gross_s` includes it.
Prints one JSON object on stdout. Run one process per size, so peak RSS is per size:

    .venv/bin/python tools/scale_bench.py --rows 1000000 --dir /tmp/x
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from s5jtransfer import plan  # noqa: E402
from s5jtransfer.ledger import SRC_COLUMNS, Ledger  # noqa: E402


def key(i: int) -> str:
    return f"survey/site-{i % 997:03d}/day-{i % 31:02d}/object-{i:09d}.bin"


def etag(i: int, salt: int = 0) -> str:
    return f"{(i * 0x9E3779B97F4A7C15 + salt) & 0xFFFFFFFFFFFFFFFF:016x}{i:016x}"


def size(i: int) -> int:
    return (i * 7919) % 50_000_000


def write_ledger(path: str, n: int) -> None:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(SRC_COLUMNS)
        w.writerows((key(i), size(i), etag(i), "md5", etag(i)) for i in range(n))


def listing(n: int):
    """Streamed like a paginated listing: 90% unchanged, 5% changed (i % 20 == 1), 5% new (i % 20 == 0)."""
    Item = plan.Item
    for i in range(n):
        r = i % 20
        if r == 0:
            yield Item("new/" + key(i), size(i), etag(i, 1))
        elif r == 1:
            yield Item(key(i), size(i), etag(i, 7))
        else:
            yield Item(key(i), size(i), etag(i))


def rss_mib() -> float:
    """Peak RSS of this process so far, MiB.

    getrusage's ru_maxrss survives exec(): a child forked from a big parent starts with the
    parent's peak. /proc/self/status VmHWM belongs to this program's own address space, so it is
    preferred where it exists (Linux); ru_maxrss (KiB on Linux) is the fallback.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--dir", required=True, help="where to write the synthetic ledger (removed after)")
    ap.add_argument("--repeat", type=int, default=1, help="measure this many times, keep the best (default 1)")
    a = ap.parse_args()
    n = a.rows
    path = os.path.join(a.dir, f"src_ledger-{n}.csv")
    t = time.perf_counter()
    write_ledger(path, n)
    write_s = time.perf_counter() - t
    file_bytes = os.path.getsize(path)
    gc.collect()
    base_rss = rss_mib()

    best = None
    for _ in range(max(1, a.repeat)):  # best of `repeat` (noise at small sizes); peak RSS is the max anyway
        rows = todo = None
        gc.collect()
        c0, w0 = time.process_time(), time.perf_counter()
        rows = Ledger(path, SRC_COLUMNS).load()
        c1, w1 = time.process_time(), time.perf_counter()
        todo = plan.todo(listing(n), rows)
        c2, w2 = time.process_time(), time.perf_counter()
        m = (c1 - c0, c2 - c1, w1 - w0, w2 - w1)
        if best is None or m[0] + m[1] < best[0] + best[1]:
            best = m
    peak = rss_mib()
    nrows, ntodo = len(rows), len(todo)
    del rows, todo

    # What the synthetic listing itself costs to generate (the real one is parsed from S3 pages):
    # plan.todo consumes the generator, so its CPU time above includes this.
    gen_cpu = None
    for _ in range(max(1, a.repeat)):
        g0 = time.process_time()
        for _item in listing(n):
            pass
        g = time.process_time() - g0
        gen_cpu = g if gen_cpu is None else min(gen_cpu, g)

    want = sum(1 for i in range(n) if i % 20 in (0, 1))
    os.unlink(path)
    print(json.dumps({
        "rows": n, "ledger_file_bytes": file_bytes, "ledger_write_s": round(write_s, 3),
        "ledger_rows_loaded": nrows, "todo": ntodo, "todo_expected": want, "correct": ntodo == want,
        "repeat": max(1, a.repeat),
        "load_cpu_s": round(best[0], 3), "diff_cpu_s": round(best[1], 3),
        "listing_generation_cpu_s": round(gen_cpu, 3),
        "diff_net_cpu_s": round(max(0.0, best[1] - gen_cpu), 3),
        "cpu_s": round(best[0] + max(0.0, best[1] - gen_cpu), 3),
        "cpu_gross_s": round(best[0] + best[1], 3),
        "load_wall_s": round(best[2], 3), "diff_wall_s": round(best[3], 3),
        "base_rss_mib": round(base_rss, 1), "peak_rss_mib": round(peak, 1),
        "ru_maxrss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
