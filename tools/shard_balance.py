#!/usr/bin/env python3
"""How evenly shards split a listing: shard.plan (the function behind `status.py --plan-shards N`)
on a synthetic listing with skewed sizes, no S3 needed.

The listing (seeded, so runs repeat) looks like a field site's cameras and recorders:
  90% still images   site-03/2026/11/cam-07/IMG_000123.jpg    lognormal sizes, median 2.5 MB
   6% video clips    site-01/2026/10/cam-02/VID_000045.mp4    Pareto (alpha 1.2) from 50 MB, capped at 50 GB
   4% small files    site-02/2026/09/logs/cam-05-20260914.log  lognormal, median 20 kB

    .venv/bin/python tools/shard_balance.py                      # 100,000 keys, N = 3 4 8 10
    .venv/bin/python tools/shard_balance.py --objects 1000000 --shards 2 16 --json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from s5jtransfer import shard  # noqa: E402


def listing(n: int, seed: int) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    out = []
    counters: dict[tuple, int] = {}
    for _ in range(n):
        site, month, cam = rng.randint(1, 6), rng.randint(1, 12), rng.randint(1, 12)
        kind = rng.random()
        if kind < 0.90:
            c = counters[(site, month, cam, "img")] = counters.get((site, month, cam, "img"), 0) + 1
            key = f"site-{site:02d}/2026/{month:02d}/cam-{cam:02d}/IMG_{c:06d}.jpg"
            size = int(rng.lognormvariate(14.73, 0.6))  # e^14.73 ~ 2.5 MB
        elif kind < 0.96:
            c = counters[(site, month, cam, "vid")] = counters.get((site, month, cam, "vid"), 0) + 1
            key = f"site-{site:02d}/2026/{month:02d}/cam-{cam:02d}/VID_{c:06d}.mp4"
            size = min(int(50e6 * rng.paretovariate(1.2)), 50 * 10**9)
        else:
            day = rng.randint(1, 28)
            c = counters[(site, month, cam, "log")] = counters.get((site, month, cam, "log"), 0) + 1
            key = f"site-{site:02d}/2026/{month:02d}/logs/cam-{cam:02d}-2026{month:02d}{day:02d}-{c:04d}.log"
            size = int(rng.lognormvariate(9.9, 1.0))  # e^9.9 ~ 20 kB
        out.append((key, size))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--objects", type=int, default=100_000)
    p.add_argument("--shards", type=int, nargs="+", default=[3, 4, 8, 10])
    p.add_argument("--seed", type=int, default=19)
    p.add_argument("--json", action="store_true", help="one JSON object instead of the tables")
    a = p.parse_args()
    items = listing(a.objects, a.seed)
    results = {n: shard.plan(items, n) for n in a.shards}
    if a.json:
        print(json.dumps({"objects": a.objects, "seed": a.seed, "plans": [b.as_dict() for b in results.values()]}))
        return 0
    from s5jtransfer.progress import fmt_bytes

    sizes = sorted(s for _k, s in items)
    total = sum(sizes)
    print(f"synthetic listing: {a.objects} keys, {fmt_bytes(total)}, seed {a.seed}; largest object "
          f"{fmt_bytes(sizes[-1])} ({100.0 * sizes[-1] / total:.2f}% of the bytes), top 1% of objects hold "
          f"{100.0 * sum(sizes[-len(sizes) // 100:]) / total:.1f}% of the bytes")
    for n, b in results.items():
        print()
        print(shard.render_plan(b))
        # the same sizes dealt out uniformly at random (an ideal hash), for comparison: what part
        # of the bytes' imbalance is the size skew itself, not CRC32
        rng = random.Random(a.seed)
        draws = sorted(_random_imbalance([s for _k, s in items], n, rng) for _ in range(RANDOM_DRAWS))
        print(f"  an ideal random hash on the same sizes ({RANDOM_DRAWS} draws): max/mean bytes median "
              f"{draws[len(draws) // 2]:.3f}, 10th-90th percentile {draws[len(draws) // 10]:.3f}-"
              f"{draws[len(draws) * 9 // 10]:.3f}")
    return 0


RANDOM_DRAWS = 20


def _random_imbalance(sizes: list[int], n: int, rng: random.Random) -> float:
    per = [0] * n
    for s in sizes:
        per[rng.randrange(n)] += s
    return max(per) / (sum(per) / n)


if __name__ == "__main__":
    sys.exit(main())
