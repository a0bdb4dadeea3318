"""The `scale` scenario (no server): tools/scale_bench.py at 1M and 10M objects, one process per size
(the ledgers' index, a pass of the source side, both sides' cycles, status.py, the comparison), and
its targets, with the peak RSS at 100M extrapolated from the two sizes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from .common import base_env, say

TARGET_PASS_CPU_S = 40.0  # the source side's pass at 10M objects, 10% to do (CPU seconds, net of the synthetic listing)
TARGET_RSS_MIB = 1024.0  # peak RSS of the process at 10M, and extrapolated to 100M
TARGET_STATUS_S = 2.0  # status.py at 10M rows


def run_scale(bench) -> None:
    sizes = (1_000_000,) if bench.args.quick else (1_000_000, 10_000_000)
    say(f"\n== scenario scale (no server): tools/scale_bench.py at {', '.join(f'{n:,}' for n in sizes)} objects, "
        "one process per size")
    out = []
    for n in sizes:
        d = bench.tmp / f"scale-{n}"
        d.mkdir()
        r = subprocess.run([sys.executable, str(bench.code / "tools" / "scale_bench.py"), "--rows", str(n), "--dir", str(d)],
                           capture_output=True, text=True, env=base_env(), timeout=3600, stdin=subprocess.DEVNULL)
        shutil.rmtree(d, ignore_errors=True)
        if r.returncode != 0:
            say(f"  {n:,}: failed (exit {r.returncode}): {r.stderr.strip()[-2000:]}")
            out.append({"rows": n, "failed": True, "stderr": r.stderr[-4000:]})
            continue
        res = json.loads(r.stdout.strip().splitlines()[-1])
        out.append(res)
        st = res["steps"]
        say(f"  {n:>10,} objects: index built in {st['index']['cpu_s']:.1f} s CPU; pass {st['pass']['net_cpu_s']:.1f} s "
            f"CPU net; cycles {st['source']['us_per_object']:.0f} us (source) and {st['dest']['us_per_object']:.0f} us "
            f"(destination) of CPU per object; status.py {st['status']['wall_s']:.2f} s; comparison "
            f"{st['compare']['net_cpu_s']:.1f} s CPU net; peak RSS {res['peak_rss_mib']:.0f} MiB; index "
            f"{res['index_bytes_per_object']:.0f} bytes per object on disk ({'correct' if res['correct'] else 'WRONG'})")
    bench.results["scale"] = out


def rss_at(sc: dict, rows: int) -> float | None:
    """The peak RSS at `rows` objects, extrapolated on the line through the two sizes measured (or
    the largest one, where RSS did not grow)."""
    if len(sc) < 2:
        return None
    (n1, a), (n2, b) = sorted(sc.items())[-2:]
    slope = max(0.0, (b["peak_rss_mib"] - a["peak_rss_mib"]) / (n2 - n1))
    return b["peak_rss_mib"] + slope * (rows - n2)


def scale_targets(results: dict, add) -> None:
    sc = {x["rows"]: x for x in results.get("scale", []) if not x.get("failed")}
    big = sc.get(10_000_000) or sc.get(max(sc)) if sc else None
    n = f"{big['rows'] // 1_000_000}M" if big else "10M"
    if not big:
        add("scale", "not measured", None, None, "")
        return
    st = big["steps"]
    add("scale", "every count as it must be (pass, status.py, comparison)", float(big["correct"]), 1.0,
        json.dumps(big["checks"]), higher_is_better=True)
    add("scale", f"{n} objects, 10% to do: the pass <= {TARGET_PASS_CPU_S:g} s CPU", st["pass"]["net_cpu_s"],
        TARGET_PASS_CPU_S, f"{st['pass']['cpu_s']:.1f} s less {st['pass']['listing_generation_cpu_s']:.1f} s of "
                           "synthetic listing")
    add("scale", f"{n} objects: peak RSS <= {TARGET_RSS_MIB:g} MiB", big["peak_rss_mib"], TARGET_RSS_MIB,
        ", ".join(f"{k} {v['peak_rss_mib']:.0f}" for k, v in st.items() if "peak_rss_mib" in v))
    at100 = rss_at(sc, 100_000_000)
    add("scale", f"100M objects: peak RSS <= {TARGET_RSS_MIB:g} MiB (extrapolated)", at100, TARGET_RSS_MIB,
        " / ".join(f"{k:,}: {v['peak_rss_mib']:.0f} MiB" for k, v in sorted(sc.items())))
    add("scale", f"{n} rows: status.py <= {TARGET_STATUS_S:g} s", st["status"]["wall_s"], TARGET_STATUS_S, "wall time")
    for step, what in (("index", "the index built from both ledgers"), ("compare", "the comparison, CPU net"),
                       ("source", "source side's bookkeeping, us per object"),
                       ("dest", "destination side's bookkeeping, us per object")):
        v = st[step].get("us_per_object", st[step].get("net_cpu_s", st[step]["cpu_s"]))
        add("scale", f"{n}: {what} (reported)", v, None, f"{st[step]['wall_s']:.1f} s wall")
    add("scale", f"{n}: the index on disk, bytes per object (reported)", big["index_bytes_per_object"], None,
        f"{big['index_bytes'] / 2**30:.2f} GiB beside {big['ledger_bytes'] / 2**30:.2f} GiB of ledgers")
