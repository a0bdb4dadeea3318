"""Staging volumes: discovery, the on-disk layout of staged objects, free space per device."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from dataclasses import dataclass
from functools import cached_property
from typing import Iterator

from .config import Config
from .errors import ConfigError
from .plan import Space

DATA_DIR = "s5jtransfer"  # everything this suite writes on a volume lives under this folder
PARTIAL = "partial"  # downloads in flight; never uploaded, discarded at start-up
STAGED = "staged"  # verified copies, named by key hash, waiting for upload
STREAMING = "streaming"  # notes on large partial copies the destination side may upload early (streaming.py)
VOLUME_GLOB_BASE = "/tmp"


def staged_name(key: str) -> str:
    """The file name of an object on a volume: a hash, so any valid S3 key stages safely.

    Keys such as '../../x', 'a' beside 'a/b', 300-byte segments or control characters are not
    valid or safe local paths; the hash is. The key itself is kept in the ledger.
    """
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:40]


@dataclass(frozen=True)
class Volume:
    root: str

    @property
    def data(self) -> str:
        return os.path.join(self.root, DATA_DIR)

    # the folders' paths, joined once (the paths of copies are asked for many times per object)
    @cached_property
    def _partial(self) -> str:
        return os.path.join(self.root, DATA_DIR, PARTIAL, "")

    @cached_property
    def _staged(self) -> str:
        return os.path.join(self.root, DATA_DIR, STAGED, "")

    def partial_path(self, name: str) -> str:
        return self._partial + name

    def staged_path(self, name: str) -> str:
        """name: staged_name()'s (hex digits, no separator), so the result is os.path.join's."""
        return f"{self._staged}{name[:2]}/{name}"

    @property
    def notes_dir(self) -> str:
        return os.path.join(self.data, STREAMING)

    def note_path(self, name: str) -> str:
        return os.path.join(self.notes_dir, name)

    def ensure(self) -> None:
        """Every folder the suite writes in, made before the first object: the 256 folders of
        staged copies take their blocks now, not at a moment the planner did not count."""
        for sub in (PARTIAL, STAGED, STREAMING):
            os.makedirs(os.path.join(self.data, sub), exist_ok=True)
        staged = os.path.join(self.data, STAGED)
        for n in range(256):
            os.makedirs(os.path.join(staged, f"{n:02x}"), exist_ok=True)

    def free_bytes(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def device(self) -> int:
        return os.stat(self.root).st_dev

    def staged(self) -> Iterator[tuple[str, int]]:
        """(name, size) of every staged copy, as the folders are read (a copy removed meanwhile, by
        the destination side, is left out)."""
        try:
            subdirs = list(os.scandir(os.path.join(self.data, STAGED)))
        except FileNotFoundError:
            return
        for sub in subdirs:
            if sub.is_dir(follow_symlinks=False):
                for entry in os.scandir(sub.path):
                    try:
                        if entry.is_file(follow_symlinks=False):
                            yield entry.name, entry.stat(follow_symlinks=False).st_size
                    except FileNotFoundError:
                        continue

    def scan_staged(self) -> dict[str, int]:
        """Staged file name -> size."""
        return dict(self.staged())

    def staged_totals(self) -> tuple[int, int]:
        """(staged copies, their bytes), counted without a list of them."""
        n = nbytes = 0
        for _name, size in self.staged():
            n += 1
            nbytes += size
        return n, nbytes

    def scan_partial(self) -> list[str]:
        return self._scan(PARTIAL)

    def scan_notes(self) -> list[str]:
        return self._scan(STREAMING)

    def _scan(self, sub: str) -> list[str]:
        try:
            return [e.path for e in os.scandir(os.path.join(self.data, sub))]
        except FileNotFoundError:
            return []


def scan_all(volumes: list[Volume]) -> dict[str, tuple[Volume, int]]:
    """Every staged file on every volume: name -> (volume, size)."""
    return {name: (v, size) for v in volumes for name, size in v.scan_staged().items()}


class StagedScan:
    """scan_all, looked at again at each scan for the cost of a stat per staged folder: a folder
    whose modification time is what it was at its last read (and was not new then: a file
    system's clock ticks in milliseconds, so a folder changed in the same tick as it was read
    is read again) is not read again. The destination side's view of the staged copies: the
    source side only adds files (a folder's time changes), this side removes them (so does it).
    Keeps `staged` (name -> (volume, size)) and the staged bytes of each volume (`bytes`, by root)
    across scans, and what the last scan changed: `added` (new, or another size) and `removed`."""

    FRESH_NS = 200_000_000  # a folder changed this recently is read again next time

    def __init__(self) -> None:
        self._dirs: dict[str, tuple[int, dict[str, int], Volume]] = {}  # folder -> (mtime_ns, name -> size, volume)
        self.staged: dict[str, tuple[Volume, int]] = {}
        self.bytes: dict[str, int] = {}
        self.added: dict[str, tuple[Volume, int]] = {}
        self.removed: set[str] = set()
        self._volumes: list[Volume] = []

    def scan(self, volumes: list[Volume]) -> dict[str, tuple[Volume, int]]:
        self.added, self.removed = {}, set()
        self._volumes = volumes
        now = time.time_ns()
        seen = set()
        for v in volumes:
            for sub in self._subdirs(v):
                seen.add(sub)
                cached = self._dirs.get(sub)
                try:
                    mtime = os.stat(sub).st_mtime_ns
                except OSError:
                    if cached is not None:
                        self._change(sub, cached[1], {}, v)
                        del self._dirs[sub]
                    continue
                if cached is None or cached[0] != mtime:
                    files = _read_dir(sub)
                    self._change(sub, cached[1] if cached else {}, files, v)
                    # a folder changed in the tick it was read may change again unseen: read it next time too
                    self._dirs[sub] = (mtime if now - mtime > self.FRESH_NS else -1, files, v)
        for gone in set(self._dirs) - seen:
            _mtime, files, v = self._dirs.pop(gone)
            self._change(gone, files, {}, v)
        return self.staged

    def _change(self, sub: str, old: dict[str, int], new: dict[str, int], v: Volume) -> None:
        for name, size in old.items():
            if new.get(name) != size and self.staged.get(name, (None,))[0] is v:
                del self.staged[name]
                self.bytes[v.root] = self.bytes.get(v.root, 0) - size
                self.removed.add(name)
                self.added.pop(name, None)
                self._elsewhere(sub, name, v)
        for name, size in new.items():
            if old.get(name) != size or name not in self.staged:
                was = self.staged.get(name)
                if was is not None:  # the same name on another volume: this copy is the one seen
                    self.bytes[was[0].root] = self.bytes.get(was[0].root, 0) - was[1]
                self.staged[name] = self.added[name] = (v, size)
                self.bytes[v.root] = self.bytes.get(v.root, 0) + size
                self.removed.discard(name)

    def _elsewhere(self, sub: str, name: str, gone_from: Volume) -> None:
        """A copy of the same name on another volume (in its folder of the same name) is the one seen now."""
        for v in self._volumes:
            cached = self._dirs.get(os.path.join(v.data, STAGED, os.path.basename(sub))) if v is not gone_from else None
            if cached is not None and name in cached[1]:
                self.staged[name] = self.added[name] = (v, cached[1][name])
                self.bytes[v.root] = self.bytes.get(v.root, 0) + cached[1][name]
                self.removed.discard(name)
                return

    @staticmethod
    def _subdirs(v: Volume) -> list[str]:
        base = os.path.join(v.data, STAGED)
        return [os.path.join(base, f"{n:02x}") for n in range(256)]


def _read_dir(path: str) -> dict[str, int]:
    out = {}
    try:
        entries = list(os.scandir(path))
    except OSError:
        return out
    for entry in entries:
        try:
            if entry.is_file(follow_symlinks=False):
                out[entry.name] = entry.stat(follow_symlinks=False).st_size
        except FileNotFoundError:
            continue
    return out


def discover_roots(volumes: tuple[str, ...] | list[str], directory: str, base: str = VOLUME_GLOB_BASE) -> list[str]:
    """local.volumes if set; else every existing base/volume-NN; else local.directory."""
    if volumes:
        return [os.path.abspath(v) for v in volumes]
    found = [os.path.join(base, f"volume-{n:02d}") for n in range(1, 100)]
    found = [p for p in found if os.path.isdir(p)]
    return found or [os.path.abspath(directory)]


def discover(cfg: Config, base: str = VOLUME_GLOB_BASE, create: bool = True) -> list[Volume]:
    roots = discover_roots(cfg.volumes, cfg.directory, base)
    for root in roots:  # all of them checked before anything is created on any
        if cfg.volumes and not os.path.isdir(root):
            what = "is a file, not a folder" if os.path.exists(root) else "does not exist"
            raise ConfigError(f"{cfg.path}: local.volumes: {root} {what}; create or mount it, or remove it from the list")
    out = []
    for root in roots:
        if create:
            try:
                os.makedirs(root, exist_ok=True)
                Volume(root).ensure()
            except OSError as exc:
                key = "local.volumes" if cfg.volumes else "local.directory"
                raise ConfigError(f"{cfg.path}: {key}: cannot write in the staging folder {root} "
                                  f"({exc.strerror or exc}); mount it read-write and make it writable, or choose "
                                  "another") from None
        out.append(Volume(root))
    return out


def device_space(volumes: list[Volume], reserve: int) -> dict[int, Space]:
    """What each file system can still take (plan.Space): free bytes less the reserve, free inodes
    (None where the file system has no fixed number: f_files 0), its block; volumes on one device
    share them."""
    out: dict[int, Space] = {}
    for v in volumes:
        dev = v.device()
        if dev not in out:
            st = os.statvfs(v.root)
            out[dev] = Space(max(0, st.f_bavail * st.f_frsize - reserve), st.f_favail if st.f_files else None,
                             max(1, st.f_frsize))
    return out


def clear_staging(root: str) -> None:
    """Remove what this suite keeps on a volume (reset); other files on it are not touched.
    Raises OSError when some of it cannot be removed (a read-only mount, say)."""
    path = os.path.join(root, DATA_DIR)
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
    if os.path.lexists(path):
        raise OSError(f"{path} could not be removed")
