"""The benchmark proper: servers up, seeding, calibration of the shaped links, the rounds of timed
runs (rescan, idle), and the scale scenario."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from .common import (DST_BUCKET, DST_PREFIX, MIB, ROOT, SRC_BUCKET, SRC_PREFIX, aws_env, base_env, children_cpu,
                     find_s5cmd, reap_orphans, run_step, s3_client, say, stop_process)
from .contenders import LIST_SCRIPT, Tool
from .links import class_bytes, shape
from .scenarios import Scenario, empty_bucket, list_side, seed_source
from .servers import Moto, Server, Weed, free_base_port
from .small import PeakRss, enospc_lines, full_listings, seed_with_s5cmd


def _sum_requests(steps) -> dict[str, dict[str, int]]:
    """Requests each server served over a run's steps, by kind (SeaweedFS's metric; moto: from its log)."""
    out: dict[str, dict[str, int]] = {}
    for reqs in steps:
        for side, kinds in reqs.items():
            for k, n in kinds.items():
                out.setdefault(side, {})[k] = out.setdefault(side, {}).get(k, 0) + n
    return out



def say_run(tool: Tool, m: dict) -> None:
    steps = ", ".join(f"{k} {v['seconds']:.2f} s" for k, v in m["steps"].items()) if tool.hops else ""
    say(f"    {tool.name:<12} {m['seconds']:8.2f} s  {'ok' if m['ok'] else 'FAILED: ' + m['note']}"
        f"{'  (' + steps + ')' if steps else ''}  CPU s: client {m['client_cpu_s']:.2f}, "
        f"servers {m['server_cpu_s']:.2f}")
    if any(m["requests"].values()):
        say(f"    {'':<12} requests: " + "; ".join(
            f"{side} " + ", ".join(f"{k} {n}" for k, n in reqs.items()) for side, reqs in m["requests"].items()))
    if "peak_rss_mib" in m:
        say(f"    {'':<12} peak RSS (MiB): " + ", ".join(f"{p} {v:.0f}" for p, v in m["peak_rss_mib"].items())
            + f"; ENOSPC lines {m['enospc_lines']}; full source listings {m['source_listings']:.2f}")
        say(f"    {'':<12} CPU s by program: " + ", ".join(f"{p} {o['cpu_s']:.1f} ({o['processes']} processes)"
                                                             for p, o in m["cpu_s_by_program"].items()))


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
        self.scn: Scenario | None = None  # the scenario being measured

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
            rss = (PeakRss(sides={sv.url: side for side, sv in self.servers.items()})
                   if self.scn is not None and self.scn.processes else None)
            cpu0, srv0, t0 = children_cpu(), self.server_cpu(), time.monotonic()
            rc = run_step(argv, cwd, env, log, self.step_timeout, on_start=rss.start if rss else None)
            secs = time.monotonic() - t0
            reap_orphans()  # what the tool left behind was killed with its group: count its CPU too
            cpu, srv1 = children_cpu() - cpu0, self.server_cpu()
            req1 = {side: sv.requests() for side, sv in self.servers.items()}
            reqs = {side: {k: n - req0[side].get(k, 0) for k, n in sorted(req1[side].items()) if n > req0[side].get(k, 0)}
                    for side in req1}
            out_steps[step_label] = {"seconds": round(secs, 3), "exit_code": rc, "client_cpu_s": round(cpu, 3),
                                     "server_cpu_s": {s: round(srv1[s] - srv0[s], 3) for s in srv1},
                                     "requests": reqs, "log": str(log)}
            if rss is not None:
                out_steps[step_label]["peak_rss_mib"] = rss.stop()
                out_steps[step_label]["cpu_s_by_program"] = rss.cpu()
            if rc != 0:
                ok, note = False, f"{step_label} exited with {rc}; see {log}"
                break
        total = time.monotonic() - t_all
        if ok:
            ok, note = self.verify()
        out = {"ok": ok, "note": note, "seconds": round(sum(s["seconds"] for s in out_steps.values()), 3),
               "wall_s": round(total, 3), "client_cpu_s": round(sum(s["client_cpu_s"] for s in out_steps.values()), 3),
               "server_cpu_s": round(sum(sum(s["server_cpu_s"].values()) for s in out_steps.values()), 3),
               "requests": _sum_requests(s["requests"] for s in out_steps.values()), "steps": out_steps}
        if self.scn is not None and self.scn.processes:
            peaks: dict[str, float] = {}
            cpus: dict[str, dict] = {}
            for s in out_steps.values():
                for prog, mib in s.get("peak_rss_mib", {}).items():
                    peaks[prog] = max(peaks.get(prog, 0.0), mib)
                for prog, o in s.get("cpu_s_by_program", {}).items():
                    c = cpus.setdefault(prog, {"cpu_s": 0.0, "processes": 0})
                    c["cpu_s"], c["processes"] = round(c["cpu_s"] + o["cpu_s"], 2), c["processes"] + o["processes"]
            out["cpu_s_by_program"] = cpus
            out.update(peak_rss_mib=peaks, enospc_lines=enospc_lines(run_dir),
                       source_listings=round(full_listings(out["requests"].get("src", {}).get("LIST", 0),
                                                           len(self.scn.objects)), 2))
        return out

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
        self.scn = scn
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
            self.seed(scn, work)
            shape(scn.rate_mbit, self.mtu)
            res["calibration"] = self.calibrate(scn, work)
            res["runs"] = {t.name: [] for t in tools}  # filled as it goes: an interrupted run still reports it
            if scn.rescan:
                res["rescan"], res["listing_reference"] = [], []
            self.step_timeout = self.args.timeout
            for r in range(scn.rounds):
                these = [t for t in tools if r == 0 or a.all_rounds or t.name not in scn.reference]
                order = these[r % len(these):] + these[:r % len(these)]
                say(f"  -- round {r + 1}/{scn.rounds}: {', '.join(t.name for t in order)}")
                for tool in order:
                    self.run_tool(scn, tool, r, work / "runs" / f"r{r + 1}-{tool.name}", res)
        finally:
            shape(None)
            self.stop_servers()
            shutil.rmtree(work, ignore_errors=True)

    def seed(self, scn: Scenario, work: Path) -> None:
        t = time.monotonic()
        if len(scn.objects) > 20_000:  # many small ones: one s5cmd cp from a folder
            seed_with_s5cmd(self.servers["src"].url, scn.objects, work / "seed")
            shutil.rmtree(work / "seed", ignore_errors=True)
        else:
            seed_source(self.s3["src"], scn.objects)
        self.expected = list_side(self.s3["src"], SRC_BUCKET, SRC_PREFIX)
        if self.expected != (len(scn.objects), scn.total):
            raise RuntimeError(f"seeding: listed {self.expected}, wanted {(len(scn.objects), scn.total)}")
        say(f"  seeded in {time.monotonic() - t:.1f} s")

    def run_tool(self, scn: Scenario, tool: Tool, r: int, run_dir: Path, res: dict) -> None:
        """One run of a tool from a clean state (and the suite's rescan and idle after it)."""
        run_dir.mkdir(parents=True)
        empty_bucket(self.s3["dst"], DST_BUCKET)
        tool.prepare(run_dir)
        try:
            m = self.timed(tool, run_dir, "first")
            res["runs"][tool.name].append(m)
            if tool.name == "s5cmd-cp" and m["ok"] and r == 0:
                # a tool stuck retrying must not hold the bench for long: 10 x s5cmd's time per step
                self.step_timeout = min(self.args.timeout, max(120.0, 10 * m["seconds"]))
            say_run(tool, m)
            if scn.rescan and tool.name == "suite" and m["ok"]:
                again = self.timed(tool, run_dir, "second")
                ref = self.listing_reference()
                res["rescan"].append(again)
                res["listing_reference"].append(ref)
                say(f"    {'':<12} {again['seconds']:8.2f} s  the same again, nothing to do "
                    f"({'ok' if again['ok'] else 'FAILED: ' + again['note']}); one listing of each side "
                    f"from a fresh python: {ref['seconds']:.2f} s")
            if scn.idle and tool.name == "suite" and m["ok"] and r == scn.rounds - 1 and self.args.idle_seconds > 0:
                res["idle"] = self.idle(run_dir)
            self.keep_logs(run_dir, f"{scn.name}/r{r + 1}-{tool.name}")
        finally:
            tool.finish(run_dir)
            shutil.rmtree(run_dir, ignore_errors=True)

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
