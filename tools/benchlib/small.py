"""The `small` scenario's instruments: staging volumes that are small tmpfs mounts, the peak RSS of
every process a run starts, the "no space left on device" lines of its logs, the source's full
listings; seeding many small objects with s5cmd; and the scenario's targets."""

from __future__ import annotations

import os
import random
import re
import subprocess
import threading
from pathlib import Path

from .common import SRC_BUCKET, aws_env, find_s5cmd, run_quiet

TARGET_SMALL_VS_TWO = 2.5  # the suite / two plain s5cmd cp hops
TARGET_SMALL_LISTINGS = 3  # full listings of the source per run
TARGET_SMALL_RSS_MIB = 300  # the largest process's peak RSS
KEYS_PER_PAGE = 1000  # a ListObjectsV2 page


# -- staging on small file systems -------------------------------------------------------------
def mount_tmpfs(paths: list[Path], size: int) -> None:
    """A tmpfs of `size` bytes on each path (inside the bench's own mount namespace: `ip netns
    exec` gives it one, so nothing outlives the bench)."""
    for p in paths:
        p.mkdir(parents=True, exist_ok=True)
        run_quiet(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(p)])


def unmount(paths: list[Path]) -> None:
    for p in paths:
        subprocess.run(["umount", "-l", str(p)], capture_output=True, stdin=subprocess.DEVNULL, timeout=60)


# -- what a run's processes hold -----------------------------------------------------------------
class PeakRss:
    """Samples, every `every` seconds while a step runs, the peak RSS (VmHWM: monotonic, so the last
    sample of a process is its peak but for its last moments) and the CPU time of every process of
    the step's session (run_step starts each step in a new one), by program: the script a Python
    runs (sync_mvol.py, src_sync_mvol.py, ...), else the executable's name, with the side whose
    endpoint its arguments name (s5cmd src, s5cmd dst). A process's CPU
    is its last sample's: what it spent in its last `every` seconds is not counted."""

    def __init__(self, every: float = 0.25, sides: dict[str, str] | None = None) -> None:
        self.every = every
        self.sides = sides or {}  # an endpoint URL in an s5cmd's arguments -> the side it names ("s5cmd src")
        self.peak: dict[str, float] = {}  # program -> MiB
        self._cpu: dict[int, tuple[str, float]] = {}  # pid -> (program, CPU seconds at its last sample)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, sid: int) -> None:
        self._thread = threading.Thread(target=self._run, args=(sid,), daemon=True, name="peak-rss")
        self._thread.start()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        return {k: round(v, 1) for k, v in sorted(self.peak.items())}

    def cpu(self) -> dict[str, dict]:
        """CPU seconds and processes, by program (after stop())."""
        out: dict[str, dict] = {}
        for prog, secs in self._cpu.values():
            o = out.setdefault(prog, {"cpu_s": 0.0, "processes": 0})
            o["cpu_s"] = round(o["cpu_s"] + secs, 2)
            o["processes"] += 1
        return dict(sorted(out.items(), key=lambda kv: -kv[1]["cpu_s"]))

    def _run(self, sid: int) -> None:
        while not self._stop.wait(self.every):
            for pid in (int(d) for d in os.listdir("/proc") if d.isdigit()):
                got = _sample(pid, sid, self.sides)
                if got is not None:
                    name, mib, cpu = got
                    self.peak[name] = max(self.peak.get(name, 0.0), mib)
                    self._cpu[pid] = (name, cpu)


def _sample(pid: int, sid: int, sides: dict[str, str]) -> tuple[str, float, float] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
        fields = stat[stat.rindex(b")") + 2:].split()
        if int(fields[3]) != sid:  # the session id
            return None
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
        with open(f"/proc/{pid}/status") as fh:
            hwm = next((int(line.split()[1]) for line in fh if line.startswith("VmHWM:")), None)
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
    except (OSError, ValueError, IndexError):
        return None
    if hwm is None or not argv:
        return None
    prog = os.path.basename(argv[0])
    if prog.startswith("python") and len(argv) > 1:
        if argv[1] == "-c":  # a script given inline (the bench's own drivers, contenders.LINES_SCRIPT)
            return "python -c", hwm / 1024.0, cpu
        prog = os.path.basename(argv[1])
    side = next((name for url, name in sides.items() if url in argv), None)
    if side is not None:
        prog += " " + side
    return prog, hwm / 1024.0, cpu


# -- what a run's logs say -------------------------------------------------------------------------
_ENOSPC = re.compile(rb"no space left on device", re.I)


def enospc_lines(run_dir: Path) -> int:
    """Lines of the run's logs (the suite's, s5cmd's through it) that name ENOSPC."""
    n = 0
    for p in run_dir.rglob("*.log"):
        try:
            with open(p, "rb") as fh:
                n += sum(1 for line in fh if _ENOSPC.search(line))
        except OSError:
            pass
    return n


def full_listings(list_requests: int, objects: int) -> float:
    """Full listings a number of LIST requests make (a page holds KEYS_PER_PAGE keys)."""
    pages = max(1, -(-objects // KEYS_PER_PAGE))
    return list_requests / pages


# -- seeding ------------------------------------------------------------------------------------
def seed_with_s5cmd(url: str, objects: list[tuple[str, int, int]], folder: Path) -> None:
    """Many small objects into the source bucket: written to a folder as their keys, then one
    `s5cmd cp` (Python's PutObjects would take minutes of CPU for 100,000)."""
    for key, size, cseed in objects:
        p = folder / key
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(random.Random(cseed).randbytes(size))
    run_quiet([find_s5cmd(), "--endpoint-url", url, "--numworkers", "64", "cp", str(folder) + "/*",
               f"s3://{SRC_BUCKET}/"], timeout=1800, env=aws_env())


# -- the targets ----------------------------------------------------------------------------------
def small_targets(res: dict, summary: dict, add) -> None:
    """The `small` scenario's targets (report.targets' `add`)."""
    from .report import per_round  # report imports this module

    runs = res.get("runs", {})
    su_runs = runs.get("suite", [])
    su, cp = summary.get("suite"), summary.get("s5cmd-cp")
    add("small", "complete, exit 0, every run", float(all(r["ok"] for r in su_runs)) if su_runs else None, 1.0,
        f"{sum(r['ok'] for r in su_runs)}/{len(su_runs)} runs ok", higher_is_better=True)
    if su and cp and cp.get("sum_hops_s") and su.get("seconds") is not None:
        rounds = per_round(su_runs, runs.get("s5cmd-cp", []), lambda r: r["seconds"],
                           lambda r: r["steps"]["hop1"]["seconds"] + r["steps"]["hop2"]["seconds"])
        add("small", f"suite / two sequential s5cmd cp hops <= {TARGET_SMALL_VS_TWO}", su["seconds"] / cp["sum_hops_s"],
            TARGET_SMALL_VS_TWO, f"{su['seconds']:.2f} s / {cp['sum_hops_s']:.2f} s{rounds}")
    else:
        add("small", f"suite / two sequential s5cmd cp hops <= {TARGET_SMALL_VS_TWO}", None, TARGET_SMALL_VS_TWO, "")
    lines = summary.get("s5cmd-lines")
    if lines and lines.get("seconds"):  # the engine's floor, in the same rounds (references, no limit)
        li_runs = runs.get("s5cmd-lines", [])
        if cp and cp.get("sum_hops_s"):
            add("small", "s5cmd fed a line per object, both hops at once / two s5cmd cp hops (reference: the floor)",
                lines["seconds"] / cp["sum_hops_s"], None, f"{lines['seconds']:.2f} s / {cp['sum_hops_s']:.2f} s"
                + per_round(li_runs, runs.get("s5cmd-cp", []), lambda r: r["seconds"],
                            lambda r: r["steps"]["hop1"]["seconds"] + r["steps"]["hop2"]["seconds"]))
        if su and su.get("seconds") is not None:
            add("small", "suite / s5cmd fed a line per object, both hops at once (reference)",
                su["seconds"] / lines["seconds"], None, f"{su['seconds']:.2f} s / {lines['seconds']:.2f} s"
                + per_round(su_runs, li_runs, lambda r: r["seconds"], lambda r: r["seconds"]))
    if su_runs:
        worst = max(su_runs, key=lambda r: r.get("source_listings", 0))
        add("small", f"full listings of the source per run <= {TARGET_SMALL_LISTINGS}", worst.get("source_listings"),
            TARGET_SMALL_LISTINGS, f"{worst.get('requests', {}).get('src', {}).get('LIST', 0)} LIST pages")
        add("small", "'no space left on device' lines == 0", max(r.get("enospc_lines", 0) for r in su_runs), 0,
            "in the suite's logs")
        peaks = {}
        for r in su_runs:
            for prog, mib in r.get("peak_rss_mib", {}).items():
                peaks[prog] = max(peaks.get(prog, 0.0), mib)
        top = max(peaks.items(), key=lambda kv: kv[1]) if peaks else (None, None)
        add("small", f"the largest process's peak RSS <= {TARGET_SMALL_RSS_MIB} MiB", top[1], TARGET_SMALL_RSS_MIB,
            ", ".join(f"{p} {m:.0f}" for p, m in sorted(peaks.items(), key=lambda kv: -kv[1])) + " MiB")
