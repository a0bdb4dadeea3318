"""status.py: both sides' progress from the ledgers (through their index: the counts at once at
any size), state files and staging volumes (no S3 calls)."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import sys
import time

from . import check, cli
from .config import Config
from .index import Index, Totals
from .ledger import LOCKS, holder_pid, is_locked
from .progress import DEST_STATE, SRC_STATE, fmt_bytes, fmt_eta, read_state
from .volumes import Volume, discover_roots

log = logging.getLogger("s5jtransfer.status")


def _running(lock: str) -> int | None:
    path = LOCKS[lock][0]
    return holder_pid(path) if is_locked(path) else None


_INDEX: Index | None = None


def ledger_totals() -> Totals:
    """Both ledgers' totals (index.Totals), through the working folder's index, brought up to date
    (the rows appended since it was last read). A folder this user cannot write in (a monitoring
    account's) is indexed in a temporary folder instead, read whole once per process."""
    global _INDEX
    if _INDEX is None:
        _INDEX = Index()
        try:
            _INDEX.refresh()
        except sqlite3.OperationalError as exc:  # "unable to open", "attempt to write a readonly database"
            log.info("cannot use the ledger index of this folder (%s); the ledgers are read into a temporary one",
                     exc)
            _INDEX.close()
            _INDEX = Index.elsewhere()
    _INDEX.refresh()
    return _INDEX.totals()


def collect(cfg: Config) -> dict:
    t = ledger_totals()
    src_state = read_state(SRC_STATE) or {}
    dest_state = read_state(DEST_STATE) or {}
    # confirmed (t.done_*): the destination holds the version the source side ledgered (a row of
    # another version, or one for an object no longer in the source ledger, does not count)
    listed = int(src_state.get("total_objects") or 0)  # by the source side's last listing
    total = max(listed, t.src_objects)
    total_bytes = max(int(src_state.get("total_bytes") or 0), t.src_bytes)
    vols = []
    for root in discover_roots(cfg.volumes, cfg.directory):
        v = Volume(root)
        staged = v.staged_totals() if os.path.isdir(root) else (0, 0)
        partial = v.scan_partial() if os.path.isdir(root) else []
        in_flight = 0
        for p in partial:
            try:
                in_flight += os.path.getsize(p)
            except OSError:
                pass
        try:
            free = v.free_bytes()
        except OSError:
            free = None
        vols.append({"path": root, "staged_objects": staged[0], "staged_bytes": staged[1],
                     "in_flight_objects": len(partial), "in_flight_bytes": in_flight, "free_bytes": free})

    def side(state: dict, done: int, done_bytes: int, pid: int | None) -> dict:
        fresh = bool(state) and pid is not None
        return {"running_pid": pid, "done_objects": done, "done_bytes": done_bytes, "total_objects": total,
                "total_bytes": total_bytes,
                "bytes_per_s": state.get("bytes_per_s") if fresh else 0.0,
                "objects_per_s": state.get("objects_per_s") if fresh else 0.0,
                "eta_s": state.get("eta_s") if fresh else None,
                "state_updated": state.get("updated"),
                # objects set aside after bounded tries by the running side (or its last run)
                "given_up_objects": int(state.get("given_up_count") or 0),
                "given_up": state.get("given_up") or {}}

    return {
        "folder": os.getcwd(), "time": time.time(),
        "shard": str(cfg.shard_spec) if cfg.shard_spec else None,  # this folder's share (shard.py)
        "source": side(src_state, t.src_objects, t.src_bytes, _running("src")),
        "destination": side(dest_state, t.done_objects, t.done_bytes, _running("dest")),
        "sync_mvol_pid": _running("sync"),
        "volumes": vols,
        # complete: the source side's last listing found every object ledgered, and every ledgered
        # object is confirmed (rows of objects deleted at the source since count only as moved)
        "complete": 0 < listed <= int(src_state.get("done_objects") or 0) and t.done_objects == t.src_objects,
    }


def render(s: dict) -> str:
    def pct(a: int, b: int) -> str:
        return f"{100.0 * a / b:.1f}%" if b else "-"

    lines = [f"s5jtransfer status of {s['folder']} at {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(s['time']))}"]
    if s.get("shard"):
        lines.append(f"Shard {s['shard']}: the totals are this shard's share (status.py --all-shards: the whole prefix)")
    if s["sync_mvol_pid"]:
        lines.append(f"sync_mvol.py running (PID {s['sync_mvol_pid']})")
    for name, label, verb in (("source", "Source -> staging", "ledgered"),
                              ("destination", "Staging -> destination", "confirmed")):
        d = s[name]
        run = f"running (PID {d['running_pid']})" if d["running_pid"] else "not running"
        lines.append(f"{label}: {run}")
        lines.append(f"  {verb}: {d['done_objects']}/{d['total_objects']} objects "
                     f"({pct(d['done_objects'], d['total_objects'])}), {fmt_bytes(d['done_bytes'])} of "
                     f"{fmt_bytes(d['total_bytes'])} ({pct(d['done_bytes'], d['total_bytes'])})")
        lines.append(f"  rate (last minute): {fmt_bytes(d['bytes_per_s'] or 0)}/s, {d['objects_per_s'] or 0:.1f} objects/s;"
                     f" ETA {fmt_eta(d['eta_s']) if d['running_pid'] else '-'}")
        if d.get("given_up_objects"):
            lines.append(f"  GAVE UP on {d['given_up_objects']} objects after repeated tries (repair_ledger.py or a "
                         f"restart tries them again):")
            lines.extend(f"    {k!r}: {why}" for k, why in list(d["given_up"].items())[:5])
    lines.append("Staging volumes:")
    for v in s["volumes"]:
        free = fmt_bytes(v["free_bytes"]) if v["free_bytes"] is not None else "unknown"
        lines.append(f"  {v['path']}: {v['staged_objects']} staged ({fmt_bytes(v['staged_bytes'])}), "
                     f"{v['in_flight_objects']} in flight ({fmt_bytes(v['in_flight_bytes'])}), {free} free")
    lines.append("Complete: " + ("yes" if s["complete"] else "no"))
    return "\n".join(lines)


def _seconds(text: str) -> float:
    """--watch's interval: a number of seconds from 0.1 to a day."""
    import argparse
    import math

    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not (0.1 <= v <= 86400):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds from 0.1 to 86400")
    return v


def main(argv: list[str] | None = None) -> int:
    p = cli.parser("Show both sides' progress from the ledgers and staging volumes (no S3 calls).", shard=True)
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.add_argument("--check", action="store_true",
                   help="one line for a monitoring system, and its exit code: 0 OK, 1 WARNING (stalled, objects set "
                        "aside, a volume nearly full), 2 CRITICAL (a side not running while work remains, a volume "
                        "read-only or missing), 3 UNKNOWN")
    p.add_argument("--watch", nargs="?", type=_seconds, const=2.0, metavar="SECONDS",
                   help="refresh every SECONDS (default 2) until Ctrl-C")
    p.add_argument("--all-shards", action="store_true",
                   help="list both buckets and compare the whole source prefix, whichever host moved what; name the "
                        "shard of each object not moved (exit 0 when complete, 1 otherwise)")
    p.add_argument("--plan-shards", type=_shard_count, metavar="N",
                   help="list the source once and print how its objects and bytes fall over N shards")
    args = p.parse_args(argv)

    ran = []

    def body(a, cfg) -> int:
        ran.append(True)
        if a.check:
            v = verdict_of(cfg)
            print(v.line, flush=True)
            return v.code
        if a.plan_shards:
            return _plan_shards(cfg, a.plan_shards, a.json)
        if a.all_shards:
            return _all_shards(cfg, a.json)
        while True:
            s = collect(cfg)
            text = json.dumps(s) if a.json else render(s) + "\n" + verdict_of(cfg, s).line
            if a.watch and not a.json and sys.stdout.isatty():
                sys.stdout.write("\x1b[H\x1b[2J")
            print(text, flush=True)
            if not a.watch:
                return cli.OK
            time.sleep(a.watch)

    rc = cli.run(body, args, shard="count" if args.all_shards or args.plan_shards else "read")
    if args.check and not ran:  # config.yaml or the folder could not be read: the check itself failed
        print("S5JTRANSFER UNKNOWN - cannot check this folder: see the line above", flush=True)
        return check.UNKNOWN
    return rc


def verdict_of(cfg: Config, s: dict | None = None) -> "check.Verdict":
    """status.py --check's verdict (check.py) for this folder."""
    states = {"source": read_state(SRC_STATE) or {}, "destination": read_state(DEST_STATE) or {}}
    return check.verdict(s or collect(cfg), states, cfg.settings.stall_warning_seconds, cfg.settings.volume_reserve)


def _shard_count(text: str) -> int:
    import argparse

    from .shard import MAX_SHARDS

    if not text.strip().isdigit() or not 1 <= int(text) <= MAX_SHARDS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of shards from 1 to {MAX_SHARDS}")
    return int(text)


def _plan_shards(cfg: Config, count: int, as_json: bool) -> int:
    """status.py --plan-shards N: one listing of the source, each shard's share (shard.plan)."""
    from . import s3, shard

    try:
        balance, _ = s3.listing_any(cfg.source, cfg.settings,
                                    lambda objs: shard.plan(((o.key, o.size) for o in objs), count))
    except Exception as exc:  # noqa: BLE001 - one line naming what failed
        raise s3.connect_error(exc, cfg.source) from None
    print(json.dumps(balance.as_dict()) if as_json else shard.render_plan(balance))
    return cli.OK


def _all_shards(cfg: Config, as_json: bool) -> int:
    """status.py --all-shards: compare.compare_all_shards, printed (listings only)."""
    from . import compare, shard

    res = compare.compare_all_shards(cfg, shard.count_for_all(cfg.shard_spec, cfg.shard_count))
    print(json.dumps(res) if as_json else compare.render_all_shards(res))
    return cli.OK if res["complete"] else cli.FAILED
