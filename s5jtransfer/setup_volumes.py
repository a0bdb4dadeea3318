"""Format and mount blank disks as staging volumes <base>/volume-NN (ext4, mode 777)."""

import argparse
import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from typing import List, Optional, Protocol, Tuple

LSBLK = ["lsblk", "-J", "-b", "-o", "NAME,PATH,TYPE,SIZE,FSTYPE,MOUNTPOINT,MOUNTPOINTS,RO"]
# lsblk older than 2.37 rejects MOUNTPOINTS and older than 2.33 rejects PATH.
LSBLK_LEGACY = ["lsblk", "-J", "-b", "-o", "NAME,TYPE,SIZE,FSTYPE,MOUNTPOINT,RO"]
VIRTUAL_PREFIXES = ("loop", "zram", "ram", "sr")


class SetupError(Exception):
    """An environment problem reported as one line with exit code 2."""


class Runner(Protocol):
    def run(self, argv: List[str]) -> subprocess.CompletedProcess: ...


class SubprocessRunner:
    """Runs argument lists (never a shell) with a minimal, explicit environment."""

    def run(self, argv: List[str]) -> subprocess.CompletedProcess:
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LC_ALL": "C"}
        return subprocess.run(argv, env=env, check=False, capture_output=True, text=True)


@dataclass
class Volume:
    device: str
    size: int
    mountpoint: str

    def commands(self) -> List[List[str]]:
        return [
            ["mkfs.ext4", "-F", "-q", self.device],  # -F: the disk was checked to hold no fs
            ["mkdir", "-p", self.mountpoint],
            ["mount", self.device, self.mountpoint],
            ["chmod", "777", self.mountpoint],
        ]


def _truthy(value) -> bool:
    # lsblk >= 2.33 gives JSON booleans; older versions give strings such as "0"/"1".
    return value is True or str(value).strip().lower() in ("1", "true")


def _mountpoints(dev: dict) -> List[str]:
    points = [dev.get("mountpoint")] + list(dev.get("mountpoints") or [])
    return list(dict.fromkeys(p for p in points if p))  # the two columns repeat each other


def skip_reason(dev: dict) -> Optional[str]:
    """Why this top-level lsblk device must not be touched, or None if it is a blank disk."""
    name = dev.get("name", "")
    if dev.get("type") != "disk":
        return f"type {dev.get('type')}, not a disk"
    if name.startswith(VIRTUAL_PREFIXES):
        return "loop/zram/ram/rom device"
    if _truthy(dev.get("ro")):
        return "read-only"
    if dev.get("children"):
        kids = ", ".join(c.get("name", "?") for c in dev["children"])
        return f"has partitions ({kids})"
    if dev.get("fstype"):
        return f"already holds a file system ({dev['fstype']})"
    if _mountpoints(dev):
        return f"mounted at {', '.join(_mountpoints(dev))}"
    if int(dev.get("size") or 0) <= 0:
        return "size 0 (no medium?)"
    return None


def read_disks(runner: Runner) -> List[dict]:
    """Top-level block devices from lsblk; raises SetupError on any lsblk trouble."""
    try:
        proc = runner.run(LSBLK)
        if proc.returncode != 0 and "unknown column" in (proc.stderr or ""):
            proc = runner.run(LSBLK_LEGACY)
    except OSError as exc:
        raise SetupError(f"cannot run lsblk ({exc}); is util-linux installed?") from None
    if proc.returncode != 0:
        raise SetupError(f"lsblk failed (exit {proc.returncode}): {(proc.stderr or '').strip()}")
    try:
        devices = json.loads(proc.stdout)["blockdevices"]
        if not isinstance(devices, list):
            raise TypeError("blockdevices is not a list")
        for dev in devices:
            dev.setdefault("path", "/dev/" + dev["name"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SetupError(f"cannot read lsblk JSON output: {exc}") from None
    return devices


def free_mountpoints(base: str):
    """Yield <base>/volume-NN paths (01..99) that are neither mount points nor in use."""
    for n in range(1, 100):
        path = os.path.join(base, f"volume-{n:02d}")
        if os.path.ismount(path):
            continue
        if os.path.lexists(path) and not (os.path.isdir(path) and not os.listdir(path)):
            continue  # a file, a link, or a non-empty directory
        yield path


def plan(devices: List[dict], base: str) -> Tuple[List[Volume], List[str]]:
    """Blank disks paired with volume paths, plus one 'skip ...' line per other device."""
    skipped, blank = [], []
    for dev in devices:
        reason = skip_reason(dev)
        if reason:
            skipped.append(f"skip {dev['path']}: {reason}")
        else:
            blank.append(dev)
    paths = free_mountpoints(base)
    volumes = []
    for dev in blank:
        path = next(paths, None)
        if path is None:
            raise SetupError(f"no free volume-NN (01..99) left under {base} for {dev['path']}")
        volumes.append(Volume(dev["path"], int(dev["size"]), path))
    return volumes, skipped


def parse_args(argv):
    p = argparse.ArgumentParser(prog="setup_volumes.py", description=__doc__)
    p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--base", default="/tmp", help="where volume-NN folders go (default /tmp)")
    return p.parse_args(argv)


def main(argv=None, runner=None, stdin=None, stdout=None, is_root=None) -> int:
    args = parse_args(argv)
    runner = runner or SubprocessRunner()
    stdin = stdin if stdin is not None else sys.stdin
    out = stdout if stdout is not None else sys.stdout
    say = lambda line: print(line, file=out, flush=True)  # noqa: E731
    if is_root is None:
        is_root = os.geteuid() == 0

    if not is_root and not args.dry_run:
        say("setup_volumes.py must run as root (use sudo), or pass --dry-run")
        return 2
    try:
        volumes, skipped = plan(read_disks(runner), args.base)
    except SetupError as exc:
        say(f"error: {exc}")
        return 2
    for line in skipped:
        say(line)
    if not volumes:
        say("no blank disks found: nothing to do")
        return 0

    say("plan:")
    for vol in volumes:
        say(f"# {vol.device} ({vol.size / 2**30:.1f} GiB) -> {vol.mountpoint}")
        for cmd in vol.commands():
            say("  " + shlex.join(cmd))
    if args.dry_run:
        say("dry run: nothing changed")
        return 0
    if not args.yes:
        if not (hasattr(stdin, "isatty") and stdin.isatty()):
            say("refusing to format without confirmation: stdin is not a terminal; pass --yes")
            return 1
        print(f"Format {len(volumes)} disk(s) listed above? This erases them. [y/N] ",
              end="", file=out, flush=True)
        if stdin.readline().strip().lower() not in ("y", "yes"):
            say("aborted: nothing changed")
            return 1

    for vol in volumes:
        for cmd in vol.commands():
            try:
                proc = runner.run(cmd)
                rc, err = proc.returncode, (proc.stderr or "").strip()
            except OSError as exc:
                rc, err = 127, str(exc)
            if rc != 0:
                say(f"command failed (exit {rc}): {shlex.join(cmd)}")
                if err:
                    say(err)
                say("stopped; later commands were not run")
                return 1
        say(f"ready: {vol.device} mounted at {vol.mountpoint}")
    return 0
