#!/usr/bin/env python3
"""Synthetic scale run for `make bench` (no server): the ledgers' bookkeeping at N objects, through
the code the sides run (s5jtransfer.index, waiting, compare, status.py), in one process per size.

The folder gets an N-row src_ledger.csv and an N-row dest_ledger.csv that confirms every row (a
transfer under way, or an old one run again), written with the csv module (untimed), then each
step is measured for CPU time
(time.process_time), wall time and the process's peak RSS (VmHWM) after it:

  index      Index.refresh() on a new index: both ledgers read whole (what a first start on an
             operator's old ledgers, or a ledger replaced by hand, costs once)
  pass       Work.new_pass(listing): the source side's pass, a listing of N objects streamed
             into the index and joined with the source ledger: 90% as ledgered, 5% changed at
             the source (another ETag), 5% new. 10% must come out to do. The listing is a
             generator of the tuples s3.iter_objects yields; generating it is measured apart and
             taken off (`pass_net_cpu_s`; parsing real pages: tools/listing_bench.py)
  source     the source side's cycles on that work: todo_head (as src_sync._head asks), the
             rows appended to src_ledger.csv (Ledger.append, fsynced, as landing.py does),
             absorbed (Index.refresh), dropped from the work; for the first --cycle-objects
  dest       the destination side's cycles: staged_work of the names just ledgered (as it looks
             up the staged copies it finds), rows appended to dest_ledger.csv, absorbed,
             released (Waiting.release)
  status     `status.py --json` run in the folder, as an operator runs it (wall seconds)
  compare    compare.compare, sync_mvol.py's and repair_ledger.py's comparison: both listings
             streamed into the index (the source's as in `pass`, the destination's every object
             as first ledgered), joined with both ledgers; 90% are moved, the 10% changed or new
             are not, and the ledgers are rewritten through the index without their rows. The
             stores are not asked whether their ETags are MD5s (etags_opaque: False)

Prints one JSON object on stdout: every step's figures, the index's size on disk per object,
peak RSS, and whether the counts came out as they must. One process per size, so peak RSS is
per size:

    .venv/bin/python tools/scale_bench.py --rows 10000000 --dir /var/tmp/scale
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from s5jtransfer import compare, config, verify  # noqa: E402
from s5jtransfer.index import INDEX_FILE, Index, Work  # noqa: E402
from s5jtransfer.ledger import DEST_COLUMNS, DEST_LEDGER, SRC_COLUMNS, SRC_LEDGER  # noqa: E402
from s5jtransfer.volumes import staged_name  # noqa: E402
from s5jtransfer.waiting import Waiting  # noqa: E402

CYCLE = 1000  # objects a side's cycle takes (in the size of what they do)


def key(i: int) -> str:
    return f"survey/site-{i % 997:03d}/day-{i % 31:02d}/object-{i:09d}.bin"


def etag(i: int, salt: int = 0) -> str:
    return f"{(i * 0x9E3779B97F4A7C15 + salt) & 0xFFFFFFFFFFFFFFFF:016x}{i:016x}"


def size(i: int) -> int:
    return (i * 7919) % 50_000_000


def write_ledgers(d: str, n: int) -> None:
    with open(os.path.join(d, SRC_LEDGER), "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(SRC_COLUMNS)
        w.writerows((key(i), size(i), etag(i), "md5", etag(i)) for i in range(n))
    with open(os.path.join(d, DEST_LEDGER), "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(DEST_COLUMNS)
        w.writerows((key(i), size(i), etag(i), "md5", etag(i)) for i in range(n))


def source_listing(n: int):
    """As s3.iter_objects yields (key, size, etag, checksum): 90% unchanged, 5% changed (i % 20 ==
    1), 5% new (i % 20 == 0)."""
    for i in range(n):
        r = i % 20
        if r == 0:
            yield ("new/" + key(i), size(i), etag(i, 1), "")
        elif r == 1:
            yield (key(i), size(i), etag(i, 7), "")
        else:
            yield (key(i), size(i), etag(i), "")


def dest_listing(n: int):
    for i in range(n):
        yield (key(i), size(i), etag(i), "")


def rss_mib() -> float:
    """Peak RSS of this process so far (VmHWM: this program's own, unlike ru_maxrss, which a child
    inherits from a big parent), MiB."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Steps:
    def __init__(self) -> None:
        self.out: dict[str, dict] = {}

    def run(self, name: str, fn, *args):
        c, w = time.process_time(), time.perf_counter()
        got = fn(*args)
        self.out[name] = {"cpu_s": round(time.process_time() - c, 3), "wall_s": round(time.perf_counter() - w, 3),
                          "peak_rss_mib": round(rss_mib(), 1)}
        return got


def generation_cpu(gen) -> float:
    c = time.process_time()
    for _ in gen:
        pass
    return time.process_time() - c


def source_cycles(index: Index, limit: int) -> int:
    """The source side's bookkeeping for `limit` objects, CYCLE at a time."""
    work, led, done = Work(index), index.ledgers["src"], 0
    while done < limit:
        rows = work.todo_head(CYCLE, lambda k: False)
        if not rows:
            break
        led.append([(k, s, e, "md5", e) for k, s, e, _c in rows])
        index.refresh(("src",))
        work.todo_drop(k for k, *_ in rows)
        done += len(rows)
    return done


def dest_cycles(index: Index, limit: int) -> int:
    """The destination side's bookkeeping for `limit` of the objects the source side just ledgered:
    staged_work of their names, rows appended, absorbed, released."""
    waiting, led, done = Waiting(index), index.ledgers["dest"], 0
    keys = [k for k, in index.db.execute("SELECT key FROM src WHERE key GLOB 'new/*' LIMIT ?", (limit,))]
    names = [staged_name(k) for k in keys]
    for i in range(0, len(names), CYCLE):
        todo, _free = waiting.staged_work(names[i:i + CYCLE])
        led.append([(k, r[0], r[1], "md5", r[1]) for k, r in todo.values()])
        index.refresh(("dest",))
        waiting.release(list(todo.values()))
        done += len(todo)
    return done


def status_seconds(d: str) -> tuple[float, dict]:
    t = time.perf_counter()
    r = subprocess.run([sys.executable, str(ROOT / "status.py"), "--json"], cwd=d, capture_output=True, text=True,
                       timeout=600, stdin=subprocess.DEVNULL, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    secs = time.perf_counter() - t
    if r.returncode != 0:
        raise RuntimeError(f"status.py exited {r.returncode}: {r.stderr[-2000:]}")
    return secs, json.loads(r.stdout)


def write_config(d: str) -> config.Config:
    import yaml

    vol = os.path.join(d, "vol")
    os.makedirs(vol, exist_ok=True)
    raw = {"source": {"bucket_name": "src", "bucket_prefix": "", "region": "us-east-1"},
           "local": {"directory": vol, "volumes": [vol]},
           "destination": {"bucket_name": "dst", "bucket_prefix": "", "region": "us-east-1"},
           "transfer_settings": {"max_size_to_transfer_src2l": 1000, "src_endpoint_url": "http://127.0.0.1:9",
                                 "dest_endpoint_url": "http://127.0.0.1:9"}}
    p = os.path.join(d, "config.yaml")
    with open(p, "w") as fh:
        yaml.safe_dump(raw, fh)
    os.chmod(p, 0o600)
    return config.load(p)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--dir", required=True, help="an empty folder for the ledgers and the index (removed after)")
    ap.add_argument("--cycle-objects", type=int, default=100_000,
                    help="objects the source and destination cycles are measured on (default 100,000)")
    a = ap.parse_args()
    n, d = a.rows, os.path.abspath(a.dir)
    os.makedirs(d, exist_ok=True)
    t = time.perf_counter()
    write_ledgers(d, n)
    cfg = write_config(d)
    written_s = time.perf_counter() - t
    os.chdir(d)
    base = rss_mib()
    st = Steps()
    index = Index(d)
    st.run("index", index.refresh)
    pc = st.run("pass", Work(index).new_pass, source_listing(n))
    gen = generation_cpu(source_listing(n))
    st.out["pass"]["listing_generation_cpu_s"] = round(gen, 3)
    st.out["pass"]["net_cpu_s"] = round(st.out["pass"]["cpu_s"] - gen, 3)
    staged = st.run("source", source_cycles, index, min(a.cycle_objects, pc.todo))
    confirmed = st.run("dest", dest_cycles, index, staged)
    for step, count in (("source", staged), ("dest", confirmed)):
        st.out[step].update(objects=count, us_per_object=round(1e6 * st.out[step]["cpu_s"] / max(1, count), 1))
    secs, status = status_seconds(d)
    totals = index.totals()
    st.out["status"] = {"wall_s": round(secs, 3)}
    index_bytes = sum(os.path.getsize(p) for p in Path(d).glob(INDEX_FILE + "*"))
    verify.etags_opaque = lambda side, c, keys: False
    compare.list_into = lambda idx, name, side, c: idx.load_listing(
        name, source_listing(n) if side is c.source else dest_listing(n))
    summary, _fig = st.run("compare", compare.compare, cfg, index, os.path.join(d, "missing_keys.txt"))
    gen_both = generation_cpu(source_listing(n)) + generation_cpu(dest_listing(n))
    st.out["compare"]["listing_generation_cpu_s"] = round(gen_both, 3)
    st.out["compare"]["net_cpu_s"] = round(st.out["compare"]["cpu_s"] - gen_both, 3)

    checks = {  # [got, want]
        "pass_todo": [pc.todo, sum(1 for i in range(n) if i % 20 in (0, 1))],
        "status_ledgered": [status["source"]["done_objects"], totals.src_objects],
        "status_confirmed": [status["destination"]["done_objects"], totals.done_objects],
        # at the destination as ledgered; changed ones differ, new ones are missing
        "compare_moved": [summary.counts[verify.MOVED], sum(1 for i in range(n) if i % 20 not in (0, 1))],
    }
    peak = rss_mib()
    print(json.dumps({
        "rows": n, "ledgers_written_s": round(written_s, 1),
        "ledger_bytes": os.path.getsize(SRC_LEDGER) + os.path.getsize(DEST_LEDGER),
        "index_bytes": index_bytes, "index_bytes_per_object": round(index_bytes / n, 1),
        "steps": st.out, "base_rss_mib": round(base, 1), "peak_rss_mib": round(peak, 1),
        "checks": checks, "correct": all(a == b for a, b in checks.values()),
    }))
    shutil.rmtree(d, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
