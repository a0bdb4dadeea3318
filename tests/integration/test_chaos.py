"""Power cuts at random instants: SIGKILL sync_mvol.py and all its children, many times, then finish.

CI runs a reduced version; `make chaos` runs a long one (S5J_CHAOS_ROUNDS, S5J_CHAOS_OBJECTS),
in both modes of fetching large objects. S5J_CHAOS_MODE: `cat` (the defaults: the two 9 MB
objects are fetched in order by s5cmd cat, and uploaded part by part while they land) or `s5cmd`
(dest_stream_uploads false: through s5cmd cp in 8 MiB ranges, uploaded once staged).
"""

from __future__ import annotations

import collections
import os
import random
import re
import signal
import time
import urllib.parse

from conftest import wait_for
from faultproxy import FaultProxy
from s5jtransfer.fetch import CAT_WORKERS, LARGE_WORKERS

ROUNDS = int(os.environ.get("S5J_CHAOS_ROUNDS", "6"))
OBJECTS = int(os.environ.get("S5J_CHAOS_OBJECTS", "60"))
SEED = int(os.environ.get("S5J_CHAOS_SEED", str(random.randrange(1 << 30))))
WORKERS = 4
MODE = os.environ.get("S5J_CHAOS_MODE", "cat")
RANGE_BYTES = 8 * 1024 * 1024  # -p 8 of fetch.LARGE_FLAGS and fetch.CAT_FLAGS


def source_gets(log_text: str, bucket: str) -> collections.Counter:
    """Object GETs of the source bucket, from the S3 server's access log (one line per request)."""
    out: collections.Counter = collections.Counter()
    ansi = r"(?:\x1b\[[0-9;]*m)*"  # werkzeug colours some status lines
    for m in re.finditer(r'"%sGET /%s/data/([^ ?]+) HTTP' % (ansi, re.escape(bucket)), log_text):
        out[urllib.parse.unquote(m.group(1))] += 1
    return out


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def test_sigkill_at_random_moments_loses_nothing_and_refetches_little(work):
    rng = random.Random(SEED)
    print(f"chaos seed {SEED}: {ROUNDS} rounds, {OBJECTS} objects, {MODE} mode")
    data = {f"obj{i:04d}.bin": rng.randbytes(rng.choice([0, 1, 1000, 30_000, 200_000, 900_000])) for i in range(OBJECTS)}
    # two objects of two 8 MiB ranges each, so cuts land between ranges too
    data.update({f"big{i}.bin": rng.randbytes(9_000_000) for i in range(2)})
    total = work.put_all(data)
    # A slow source link (the whole transfer takes several rounds) so the cuts land mid-transfer.
    link = FaultProxy(work.server.url, bandwidth=max(total / (ROUNDS * 0.8), 200_000)).start()
    work.cfg["transfer_settings"].update(src_workers=WORKERS, dest_workers=WORKERS, src_endpoint_url=link.url)
    if MODE == "s5cmd":
        work.cfg["transfer_settings"].update(dest_stream_uploads=False)
    work.write_config()
    log_start = work.server.log_path.stat().st_size
    kills = cut_mid_transfer = 0
    try:
        for _ in range(ROUNDS):
            proc = work.start("sync_mvol.py", log_name="chaos.log", new_session=True)
            time.sleep(rng.uniform(0.3, 2.0))  # the instant of the power cut: random on purpose
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            wait_for(lambda: group_gone(proc.pid), 30, "every process of the killed group to be gone")
            kills += 1
            cut_mid_transfer += work.ledger_lines("dest_ledger.csv") < len(data) + 1
        t0 = time.monotonic()
        r = work.run("sync_mvol.py", "--once", timeout=240)
        print(f"chaos: final run took {time.monotonic() - t0:.1f}s")
        assert work.run("repair_ledger.py").returncode == 0
    finally:
        link.stop()
    assert r.returncode == 0, r.stderr[-3000:]
    # nothing lost, nothing corrupted
    assert set(work.listing(work.dst, "copy/")) == set(data)
    for k, v in data.items():
        assert work.dest_bytes(k) == v, k
    assert work.staged_files() == []
    assert work.ledger_lines() == len(data) + 1
    assert work.ledger_lines("dest_ledger.csv") == len(data) + 1
    # re-downloads: at most the objects in flight at each cut
    with open(work.server.log_path, "rb") as fh:
        fh.seek(log_start)
        gets = source_gets(fh.read().decode("utf-8", "replace"), work.src)
    # downloads per key: ranged GETs count as one download per full set of ranges (rounded up)
    ranges = {k: max(1, -(-len(v) // RANGE_BYTES)) if len(v) >= 8 * 1024 * 1024 else 1
              for k, v in data.items()}
    gets = collections.Counter({k: -(-n // ranges[k]) for k, n in gets.items()})
    twice = {k: n for k, n in gets.items() if n > 1}
    extra = sum(n - 1 for n in twice.values())
    # in flight at a cut: WORKERS small copies beside the large ones
    in_flight = WORKERS + (CAT_WORKERS if MODE == "cat" else LARGE_WORKERS)
    print(f"chaos: {kills} kills, {len(twice)} objects downloaded more than once ({extra} extra downloads), "
          f"bound {kills * in_flight}; {cut_mid_transfer} cuts landed before the transfer was complete")
    assert cut_mid_transfer >= kills // 2
    assert set(gets) == set(data)  # the log really shows every download
    assert extra <= kills * in_flight
