"""The staging volumes' health: which can be used, which are gone, read-only or too small.

A volume is known by a mark, `s5jtransfer/.volume` (a random id), written when the suite first
uses it, and the working folder records (`.volumes.json`) each volume's root, its mark and whether
the root was a mount point then. So:

- **Gone**: its mark is no longer there (unmounted, lazily or not: the mount point is left as a
  bare folder of the root file system; or its disk failed or was replaced). At a start, a root
  recorded as a mount point that no longer is one is gone too, and nothing is created in it.
  A volume whose mark comes back is used again.
- **Read-only**: the file system says so (statvfs ST_RDONLY), or a write met EROFS. Its staged
  copies are still read and uploaded; what cannot be freed is counted.
- **Too small**: its file system is no larger than volume_reserve_bytes (plus one block): nothing
  could ever be staged on it. Named at the start; with no usable volume at all the side exits 2.

Each problem is named once in the log, and every volume's state goes into the side's state file
(status.py, the metrics, transfer_report.json).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import time
import uuid

from .atomic import write_atomic
from .errors import ConfigError
from .volumes import Volume, discover

log = logging.getLogger("s5jtransfer.volumes")

OK, FULL, READ_ONLY, GONE, TOO_SMALL = "ok", "full", "read-only", "missing", "too-small"
MARK = ".volume"
RECORD = ".volumes.json"
UNFREED_KEPT = 100_000  # paths of staged copies not freed a volume keeps, to count each once (about 15 MB at most)
NONE_USABLE_FOR = 60.0  # seconds with no usable staging volume before the source side gives up (exit 2)


def mark_path(v: Volume) -> str:
    return os.path.join(v.data, MARK)


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read().strip() or None
    except OSError:
        return None


def _mark_once(path: str) -> None:
    """The volume's mark, written by whichever side comes first (both may start at once)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(uuid.uuid4().hex + "\n")
        fh.flush()
        os.fsync(fh.fileno())


class VolumeWatch:
    """The volumes of one side: admitted at the start (create: the source side makes its folders),
    looked at every cycle (check), and what the side met while using them (failed)."""

    def __init__(self, cfg, create: bool, stages: bool = True, record_file: str = RECORD) -> None:
        self.cfg = cfg
        self.reserve = cfg.settings.volume_reserve
        self.volumes: list[Volume] = discover(cfg, create=False)
        self.record_file = record_file
        self.state = [OK] * len(self.volumes)
        self.ids: list[str | None] = [None] * len(self.volumes)
        self.stages = stages  # the source side: new copies go onto them (the destination side only reads)
        self.unfreed: list[set[str]] = [set() for _ in self.volumes]  # staged copies that could not be removed
        self._none_since: float | None = None
        record = self._load()
        for i, v in enumerate(self.volumes):
            self.state[i] = self._admit(i, v, record.get(v.root), create)
        if create:
            self._save(record)
        bad = [(v, s) for v, s in zip(self.volumes, self.state) if s != OK]
        for v, s in bad:
            if stages or s != TOO_SMALL:  # the side that stages says it; the other reads what is there
                log.error("staging volume %s cannot be used: %s", v.root, self.why(v, s))
        if stages and bad and len(bad) == len(self.volumes):
            raise ConfigError(f"{cfg.path}: no staging volume can be used: "
                              + "; ".join(f"{v.root}: {self.why(v, s)}" for v, s in bad)
                              + self._fix({s for _v, s in bad}))

    # -- the start ---------------------------------------------------------------------------
    def _admit(self, i: int, v: Volume, rec: dict | None, create: bool) -> str:
        mark = _read(mark_path(v))
        mounted = os.path.ismount(v.root)
        if mark is None and rec and rec.get("mount") and not mounted:
            return GONE  # a bare mount point: nothing is created in it
        try:
            if create and not self.cfg.volumes:
                os.makedirs(v.root, exist_ok=True)  # local.directory, or a /tmp/volume-NN found
            st = os.statvfs(v.root)
        except OSError:
            return GONE
        if self.stages and st.f_blocks * st.f_frsize <= self.reserve + st.f_frsize:
            return TOO_SMALL
        if st.f_flag & os.ST_RDONLY:
            self.ids[i] = mark
            return READ_ONLY
        if create:
            try:
                v.ensure()
                if mark is None:
                    _mark_once(mark_path(v))
            except OSError as exc:
                if exc.errno == errno.EROFS:
                    return READ_ONLY
                key = "local.volumes" if self.cfg.volumes else "local.directory"
                raise ConfigError(f"{self.cfg.path}: {key}: cannot write in the staging folder {v.root} "
                                  f"({exc.strerror or exc}); mount it read-write and make it writable, or choose "
                                  "another") from None
        self.ids[i] = _read(mark_path(v))
        return OK

    def _load(self) -> dict:
        try:
            with open(self.record_file, encoding="utf-8") as fh:
                data = json.load(fh)
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _save(self, record: dict) -> None:
        for v, mark in zip(self.volumes, self.ids):
            if mark:
                record[v.root] = {"mark": mark, "mount": os.path.ismount(v.root)}
        try:
            write_atomic(self.record_file, json.dumps(record, indent=1, sort_keys=True),
                         tmp=f"{self.record_file}.{os.getpid()}.tmp")  # both sides write it at their start
        except OSError as exc:
            log.warning("cannot write %s (%s): a volume unmounted before the next start may not be told from "
                        "an empty folder", self.record_file, exc)

    def _fix(self, states: set[str]) -> str:
        if TOO_SMALL in states:
            return (f"; lower transfer_settings.volume_reserve_bytes (now {self.reserve} bytes) below the volumes' "
                    "size, or give larger volumes in local.volumes")
        return "; mount the volumes again (read-write), or list others in local.volumes"

    def why(self, v: Volume, state: str) -> str:
        if state == TOO_SMALL:
            try:
                st = os.statvfs(v.root)
                size = st.f_blocks * st.f_frsize
            except OSError:
                size = 0
            return (f"its file system ({size} bytes) is not larger than transfer_settings.volume_reserve_bytes "
                    f"({self.reserve} bytes): nothing could ever be staged on it")
        if state == READ_ONLY:
            return "its file system is read-only: its staged copies are still uploaded, nothing new is staged on it"
        if state == GONE:
            return ("it is gone (its file system is no longer mounted there, or was replaced): nothing is written in "
                    "its folder; objects staged on it are fetched again")
        return state

    # -- every cycle -------------------------------------------------------------------------
    def check(self) -> list[int]:
        """Each volume looked at again (a stat of its mark, a statvfs): the indices usable for new
        copies. A change is named once."""
        for i, v in enumerate(self.volumes):
            was = self.state[i]
            if was == TOO_SMALL:
                continue
            now = self._look(i, v)
            if now != was and not (was in (OK, FULL) and now in (OK, FULL)):
                if now in (OK, FULL):
                    log.warning("staging volume %s is back and used again", v.root)
                else:
                    log.error("staging volume %s: %s", v.root, self.why(v, now))
            self.state[i] = now
        usable = [i for i, s in enumerate(self.state) if s in (OK, FULL)]
        self._none_since = None if usable else (self._none_since or time.monotonic())
        return usable

    def usable_or_end(self, busy: set[int]) -> list[int]:
        """The source side's look each cycle: check, what copies in flight made in a bare mount
        point removed (busy: volumes with copies in flight), and with no usable volume for
        NONE_USABLE_FOR seconds a ConfigError (exit 2): nothing could be staged until an operator
        mounts them again."""
        usable = self.check()
        self.sweep_bare(busy)
        if not usable and self.none_usable_for() >= NONE_USABLE_FOR:
            raise ConfigError(f"{self.cfg.path}: no staging volume can be used: " + "; ".join(
                f"{v.root}: {self.why(v, s)}" for v, s in zip(self.volumes, self.state)) +
                "; mount them again (read-write), or list others in local.volumes, and start again")
        return usable

    def _look(self, i: int, v: Volume) -> str:
        mark = _read(mark_path(v))
        if self.ids[i] is None:
            self.ids[i] = mark  # marked by the source side since this side started
        elif mark != self.ids[i]:
            return GONE
        try:
            st = os.statvfs(v.root)
        except OSError:
            return GONE
        if st.f_flag & os.ST_RDONLY or self.state[i] == READ_ONLY and self._still_read_only(v):
            return READ_ONLY
        free = st.f_bavail * st.f_frsize - self.reserve
        return FULL if free < st.f_frsize or (st.f_files and not st.f_favail) else OK

    @staticmethod
    def _still_read_only(v: Volume) -> bool:
        """A volume that met EROFS without the flag saying so: tried with a small write."""
        probe = os.path.join(v.data, f".probe-{os.getpid()}")
        try:
            with open(probe, "w", encoding="utf-8"):
                pass
            os.remove(probe)
            return False
        except OSError:
            return True

    def usable(self, i: int) -> bool:
        return self.state[i] in (OK, FULL)

    def present(self, i: int) -> bool:
        """Whether volume i is still the one marked (a stat now, not the last check's state)."""
        return self.state[i] != GONE and (self.ids[i] is None or _read(mark_path(self.volumes[i])) == self.ids[i])

    def none_usable_for(self) -> float:
        """Seconds since no volume could take a new copy (0: one can)."""
        return 0.0 if self._none_since is None else time.monotonic() - self._none_since

    def failed(self, i: int, exc: OSError) -> None:
        """An error met while using volume i: EROFS makes it read-only, EIO or ENOENT (its folders
        gone) makes the next check look at it."""
        if exc.errno in (errno.EROFS, errno.EIO) and self.state[i] != READ_ONLY:
            self.state[i] = READ_ONLY
            log.error("staging volume %s: %s", self.volumes[i].root, self.why(self.volumes[i], READ_ONLY))

    def free(self, path: str) -> bool:
        """Remove a staged copy; on a volume that failed (read-only, I/O errors) it stays, counted
        (states: unfreed) and never an error of the cycle. False when it stays."""
        try:
            os.remove(path)
            return True
        except FileNotFoundError:
            return True
        except OSError as exc:
            i = next((n for n, v in enumerate(self.volumes) if path.startswith(v.data + os.sep)), None)
            if i is None or exc.errno not in (errno.EROFS, errno.EIO, errno.EPERM, errno.EACCES):
                raise
            self.failed(i, exc)
            if len(self.unfreed[i]) < UNFREED_KEPT:
                self.unfreed[i].add(path)
            return False

    def sweep_bare(self, busy: set[int]) -> None:
        """What copies in flight when a volume went made in its bare mount point (s5cmd creates the
        folders it writes in): removed once nothing is in flight to it, so the folder stays empty."""
        for i, v in enumerate(self.volumes):
            if self.state[i] == GONE and i not in busy and os.path.isdir(v.data) and _read(mark_path(v)) is None:
                shutil.rmtree(v.data, ignore_errors=True)

    def states(self) -> list[dict]:
        """For the state file: each volume's path, state, free bytes and staged bytes (staged: given)."""
        out = []
        for i, v in enumerate(self.volumes):
            try:
                st = os.statvfs(v.root)
                free = st.f_bavail * st.f_frsize
            except OSError:
                free = 0
            out.append({"path": v.root, "state": self.state[i], "free_bytes": free, "unfreed": len(self.unfreed[i])})
        return out


class Stall:
    """Whether a side is stalled: no object counted for stall_warning_seconds while it has work
    (work_left), and what it waits for (waiting_for: "space", "endpoint", "source side"). Into the
    state file (status.py --check, the metrics); a warning in the log when a stall begins, and
    again every stall_warning_seconds while it lasts."""

    def __init__(self, side: str, progress, seconds: float) -> None:
        self.side, self.progress, self.seconds = side, progress, seconds
        self._said = 0.0
        self._io: dict[int, int] = {}  # bytes each of the side's s5cmd had read and written (by PID)
        self._io_at = 0.0  # when one of them last moved

    def note(self, work_left: bool, waiting_for: str | None, io: dict[int, int] | None = None) -> None:
        """io: bytes each s5cmd of the side has read and written so far, by PID: one that moved
        since the last note (a large object on its way, no object done yet) is no stall; one just
        started is not movement (an s5cmd restarted on a frozen endpoint reads its start-up files)."""
        now = time.time()
        io = io or {}
        if any(pid in self._io and n != self._io[pid] for pid, n in io.items()):
            self._io_at = now
        self._io = io
        last = max(getattr(self.progress, "last_progress", None) or self.progress.started, self._io_at)
        idle = now - last if work_left else 0.0
        stalled = work_left and idle >= self.seconds
        self.progress.health.update(work_left=work_left, waiting_for=waiting_for if work_left else None,
                                    stalled_seconds=round(idle, 1) if stalled else None)
        if stalled and now - self._said >= self.seconds:
            self._said = now
            log.warning("%s side stalled: nothing moved for %d s while work is queued (%s); see status.py --check",
                        self.side, idle, WAITING_FOR.get(waiting_for or "", "cause unknown"))
        elif not stalled:
            self._said = 0.0


WAITING_FOR = {"space": "waiting for space on the staging volumes",
               "endpoint": "the endpoint does not answer or every request fails",
               "source side": "waiting for the source side to stage objects"}
