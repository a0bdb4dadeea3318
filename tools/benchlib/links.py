"""The links: htb on the namespace's loopback, one class per side, and its byte counters."""

from __future__ import annotations

import re

from .common import ADDR, KIB, run_quiet


CLASS = {"src": "1:10", "dst": "1:20"}


def shape(rate_mbit: float | None, mtu: int | None = None) -> None:
    """No qdisc (rate None), or htb: from the source's address and to the destination's, each its own class."""
    if mtu:
        run_quiet(["ip", "link", "set", "lo", "mtu", str(mtu)])
    run_quiet(["tc", "qdisc", "del", "dev", "lo", "root"], check=False)
    if rate_mbit is None:
        return
    rate = f"{rate_mbit:g}mbit"
    # burst: about 10 ms at the rate, and at least four 64 KiB loopback packets
    burst = str(max(256 * KIB, int(rate_mbit * 1e6 / 8 / 100)))
    run_quiet(["tc", "qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb", "default", "0"])  # unclassified: unshaped
    for side in ("src", "dst"):
        run_quiet(["tc", "class", "add", "dev", "lo", "parent", "1:", "classid", CLASS[side], "htb", "rate", rate,
                   "ceil", rate, "burst", burst, "cburst", burst, "quantum", "65536"])
    run_quiet(["tc", "filter", "add", "dev", "lo", "parent", "1:", "protocol", "ip", "prio", "1", "u32",
               "match", "ip", "src", f"{ADDR['src']}/32", "flowid", CLASS["src"]])
    run_quiet(["tc", "filter", "add", "dev", "lo", "parent", "1:", "protocol", "ip", "prio", "2", "u32",
               "match", "ip", "dst", f"{ADDR['dst']}/32", "flowid", CLASS["dst"]])


def class_bytes() -> dict[str, int]:
    r = run_quiet(["tc", "-s", "class", "show", "dev", "lo"], check=False)
    out = {}
    for side, cid in CLASS.items():
        m = re.search(rf"class htb {re.escape(cid)} .*?\n\s*Sent (\d+) bytes", r.stdout, re.S)
        out[side] = int(m.group(1)) if m else 0
    return out
