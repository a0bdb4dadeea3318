"""status.py --check: one line and an exit code for a monitoring system (the monitoring-plugin
convention of Nagios, Icinga, Sensu and Zabbix agents: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).

A pure decision over what status.collect gathered (the ledgers' totals, both sides' state files
and whether each side runs) and the settings: no S3 request, no write.
"""

from __future__ import annotations

from typing import NamedTuple

from .health import GONE, READ_ONLY, WAITING_FOR
from .progress import fmt_bytes

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}
SIDES = (("source", "source side"), ("destination", "destination side"))


class Verdict(NamedTuple):
    code: int
    line: str


def verdict(s: dict, states: dict[str, dict], stall_seconds: float, reserve: int) -> Verdict:
    """s: status.collect's dict; states: each side's state file ({} when none), by side name."""
    src, dst = s["source"], s["destination"]
    if s["complete"]:
        return _line(OK, [f"complete: {dst['done_objects']} objects ({fmt_bytes(dst['done_bytes'])}) at the "
                          "destination"], s)
    if not states["source"] and not states["destination"] and not src["done_objects"]:
        return _line(UNKNOWN, ["no side has run in this folder yet"], s)
    critical, warning = [], []
    # the destination side's work remains until the transfer is complete; the source side's until
    # its last listing's work is done (run alone with --once, it then ends: no alarm)
    left = {"source": _source_left(states["source"]), "destination": True}
    for name, label in SIDES:
        if left[name] and not s[name]["running_pid"]:
            critical.append(f"{label} not running while work remains")
    for name, label in SIDES:
        st = states[name]
        if s[name]["running_pid"] and st.get("stalled_seconds") is not None and st["stalled_seconds"] >= stall_seconds:
            why = WAITING_FOR.get(st.get("waiting_for") or "", "cause unknown")
            warning.append(f"{label} stalled for {_span(st['stalled_seconds'])}: {why}")
        if s[name].get("given_up_objects"):
            warning.append(f"{label}: {s[name]['given_up_objects']} objects set aside after repeated tries")
    seen = set()
    for name, _label in SIDES:
        for v in states[name].get("volumes") or []:
            if v.get("path") in seen:
                continue
            seen.add(v.get("path"))
            if v.get("state") in (GONE, READ_ONLY):
                critical.append(f"staging volume {v['path']} is {v['state']}")
            elif isinstance(v.get("free_bytes"), int) and (v["free_bytes"] == 0 or v["free_bytes"] < reserve):
                warning.append(f"staging volume {v['path']} nearly full ({fmt_bytes(v['free_bytes'])} free, less "
                               "than volume_reserve_bytes: another program fills it)")
    if critical:
        return _line(CRITICAL, critical + warning, s)
    if warning:
        return _line(WARNING, warning, s)
    return _line(OK, ["moving"], s)


def _source_left(state: dict) -> bool:
    """The source side's last listing left work (or it has not listed yet)."""
    listed = int(state.get("total_objects") or 0)
    return not listed or int(state.get("done_objects") or 0) < listed


def _span(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def _line(code: int, what: list[str], s: dict) -> Verdict:
    src, dst = s["source"], s["destination"]
    total = max(src["total_objects"], 1)
    perf = (f"staged={src['done_objects']};;;0;{src['total_objects']} "
            f"confirmed={dst['done_objects']};;;0;{src['total_objects']} "
            f"confirmed_bytes={dst['done_bytes']}B set_aside={src.get('given_up_objects', 0) + dst.get('given_up_objects', 0)}")
    head = f"{dst['done_objects']}/{src['total_objects']} objects confirmed ({100.0 * dst['done_objects'] / total:.1f}%)"
    return Verdict(code, f"S5JTRANSFER {NAMES[code]} - {'; '.join(what)}; {head} | {perf}")
