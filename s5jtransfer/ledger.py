"""Append-only CSV ledgers: load, tail, append (flush+fsync), rewrite atomically, and locks."""

from __future__ import annotations

import csv
import errno
import fcntl
import io
import logging
import os
import urllib.parse
from contextlib import contextmanager
from typing import Iterable, Iterator

from .errors import LockHeld

SRC_LEDGER = "src_ledger.csv"
DEST_LEDGER = "dest_ledger.csv"
SRC_COLUMNS = ("Key", "Size", "ETag", "Verified", "MD5")
DEST_COLUMNS = ("Key", "Size", "ETag", "Verified", "SourceETag")
_ENC = "urlenc:"

log = logging.getLogger("s5jtransfer.ledger")


def encode_key(key: str) -> str:
    """One ledger line per object, always: keys holding CR/LF are stored percent-encoded.

    That keeps `wc -l src_ledger.csv` equal to the object count plus one. A literal key that
    happens to start with the marker is encoded too, so decoding is never ambiguous.
    """
    if "\n" in key or "\r" in key or key.startswith(_ENC):
        return _ENC + urllib.parse.quote(key, safe="", errors="surrogateescape")
    return key


def decode_key(field: str) -> str:
    if field.startswith(_ENC):
        return urllib.parse.unquote(field[len(_ENC):], errors="surrogateescape")
    return field


def _fsync_dir(path: str) -> None:
    fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def file_lock(path: str, blocking: bool = True) -> Iterator[None]:
    """An advisory flock on path (created if needed); released on exit or process death."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        yield
    finally:
        os.close(fd)


class ProcessLock:
    """Held for a process's lifetime: one copy of each sync per folder. The file holds the PID."""

    def __init__(self, path: str, what: str) -> None:
        self.path = path
        self.what = what
        self.fd: int | None = None

    def acquire(self) -> "ProcessLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            pid = holder_pid(self.path)
            raise LockHeld(f"{self.what} is already running in {os.getcwd()} (PID {pid or 'unknown'}, lock "
                           f"{self.path}); stop it first (kill {pid or '<pid>'}) or run from another folder") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def holder_pid(path: str) -> int | None:
    try:
        with open(path) as fh:
            return int(fh.read().strip() or 0) or None
    except (OSError, ValueError):
        return None


def is_locked(path: str) -> bool:
    """True while some process holds the flock on path."""
    if not os.path.exists(path):
        return False
    try:
        with file_lock(path, blocking=False):
            return False
    except OSError:
        return True


def _row_line(row: Iterable[object]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(row)
    return buf.getvalue()


class Ledger:
    """A CSV ledger whose first two columns are Key,Size. The last row for a key wins."""

    def __init__(self, path: str, columns: tuple[str, ...]) -> None:
        self.path = path
        self.columns = columns
        self.lock_path = os.path.join(os.path.dirname(os.path.abspath(path)), "." + os.path.basename(path) + ".lock")
        self._offset = 0
        self._ino: int | None = None
        self.bad_lines = 0  # lines read that are not rows (damaged by hand or by a disk): skipped

    # -- reading -------------------------------------------------------------------------
    def _parse(self, text: str, rows: dict[str, tuple], skip_header: bool) -> list[str]:
        """Parse complete lines into rows; returns the keys read, in order."""
        keys = []
        ncol = len(self.columns)
        # Split on LF only: str.splitlines() would also break at \x0b, \x1c, \u2028 ..., which
        # are valid inside a key.
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        reader = csv.reader(lines)
        at = 0  # lines read so far
        for rec in reader:
            # A row is one line (keys with a line break are encoded): a record over several lines
            # is a quote left open by a damaged line, which would swallow every row after it.
            # Those lines are read one by one instead, so only the damaged one is lost.
            recs = [rec] if reader.line_num - at == 1 else [next(csv.reader([x]), []) for x in lines[at:reader.line_num]]
            at = reader.line_num
            for rec in recs:
                if skip_header:
                    skip_header = False
                    if rec and rec[0] == "Key":
                        continue
                rec += [""] * (ncol - len(rec))
                try:
                    size = int(rec[1])
                except (ValueError, IndexError):
                    self.bad_lines += 1
                    continue
                key = decode_key(rec[0])
                rows[key] = (size, *rec[2:ncol])
                keys.append(key)
        return keys

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def load(self) -> dict[str, tuple]:
        """All rows: key -> (size, *other columns). Remembers where it stopped for tail()."""
        rows: dict[str, tuple] = {}
        self._offset, self._ino = 0, None
        self.bad_lines = 0
        self.tail(rows)
        if self.bad_lines:
            log.warning("%s: %d line(s) are not ledger rows and are skipped; repair_ledger.py rewrites the file "
                        "without them", self.path, self.bad_lines)
        return rows

    def tail(self, rows: dict[str, tuple]) -> tuple[bool, list[str]]:
        """Add rows appended since the last load/tail into rows.

        Returns (replaced, keys read). replaced is True when the file was rewritten (by repair or
        reset) since: rows then holds a full reload.
        """
        try:
            fh = open(self.path, "rb")
        except FileNotFoundError:
            replaced = self._ino is not None
            self._offset, self._ino = 0, None
            if replaced:
                rows.clear()
            return replaced, []
        with fh:
            st = os.fstat(fh.fileno())
            replaced = self._ino is not None and (st.st_ino != self._ino or st.st_size < self._offset)
            if replaced:
                rows.clear()
                self._offset = 0
            self._ino = st.st_ino
            fh.seek(self._offset)
            data = fh.read()
        end = data.rfind(b"\n")
        if end < 0:
            return replaced, []
        first = self._offset == 0
        self._offset += end + 1
        keys = self._parse(data[: end + 1].decode("utf-8", "surrogateescape"), rows, first)
        return replaced, keys

    def seek_end(self) -> None:
        """Make the next tail() read only rows appended from now on, without reading the ones
        there are (a row being appended right now, its line not yet complete, counts as new)."""
        self._offset, self._ino = 0, None
        try:
            fh = open(self.path, "rb")
        except FileNotFoundError:
            return
        with fh:
            st = os.fstat(fh.fileno())
            start = max(0, st.st_size - 65536)  # a line is far shorter: a key is 1,024 bytes at most
            fh.seek(start)
            end = fh.read(st.st_size - start).rfind(b"\n")
        self._ino = st.st_ino
        self._offset = start + end + 1 if end >= 0 else start

    # -- writing -------------------------------------------------------------------------
    def ensure(self) -> None:
        """Create with a header if missing; cut a torn last line left by a power cut."""
        with file_lock(self.lock_path):
            if not os.path.exists(self.path) or os.path.getsize(self.path) == 0:
                self._write_new([])
                return
            with open(self.path, "rb+") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - 65536))
                tailbytes = fh.read()
                if tailbytes.endswith(b"\n"):
                    return
                cut = tailbytes.rfind(b"\n")
                keep = size - len(tailbytes) + cut + 1 if cut >= 0 else 0
                if keep == 0:  # not even a whole header: start the file again
                    fh.truncate(0)
                    fh.seek(0)
                    fh.write(_row_line(self.columns).encode())
                else:
                    fh.truncate(keep)
                fh.flush()
                os.fsync(fh.fileno())

    def append(self, rows: list[tuple]) -> None:
        """Append rows durably (written, flushed and fsynced before returning)."""
        if not rows:
            return
        data = "".join(_row_line((encode_key(r[0]), *r[1:])) for r in rows).encode("utf-8", "surrogateescape")
        with file_lock(self.lock_path):
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                size = os.fstat(fd).st_size
                if size == 0:
                    data = _row_line(self.columns).encode() + data
                elif os.pread(fd, 1, size - 1) != b"\n":
                    # An earlier append was cut short (disk full, I/O error): drop its torn tail
                    # rather than glue the next row onto it.
                    tail = os.pread(fd, min(size, 1 << 20), max(0, size - (1 << 20)))
                    os.ftruncate(fd, size - len(tail) + tail.rfind(b"\n") + 1 if b"\n" in tail else 0)
                    if os.fstat(fd).st_size == 0:
                        data = _row_line(self.columns).encode() + data
                start = os.fstat(fd).st_size
                try:
                    view = memoryview(data)
                    while view:  # a full disk takes part of a write and says so only at the next
                        view = view[os.write(fd, view):]
                    os.fsync(fd)
                except OSError:
                    # all or nothing: no row is half on disk, none is on disk twice after the retry
                    try:
                        os.ftruncate(fd, start)
                    except OSError:
                        pass
                    raise
            finally:
                os.close(fd)

    def _write_new(self, rows: Iterable[tuple]) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8", errors="surrogateescape", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(self.columns)
            for r in rows:
                w.writerow((encode_key(r[0]), *r[1:]))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        _fsync_dir(self.path)

    def rewrite(self, rows: dict[str, tuple]) -> None:
        """Replace the ledger atomically (temp file, fsync, rename) under its lock."""
        with file_lock(self.lock_path):
            self.write_locked(rows)

    def compact(self) -> dict[str, tuple]:
        """Rewrite with one row per key (the last one), e.g. after an object moved again because
        it changed at the source; keeps `wc -l` equal to the object count plus one."""
        with file_lock(self.lock_path):
            rows = self.load()
            self.write_locked(rows)
        return self.load()

    def write_locked(self, rows: dict[str, tuple]) -> None:
        """rewrite() for a caller that already holds the ledger lock."""
        self._write_new((k, *v) for k, v in rows.items())


def dest_done(src_row: tuple, dest_row: tuple | None) -> bool:
    """The destination holds this version: same size, uploaded from the same source ETag.
    Where either side has no ETag (rows of the original two-column ledger, or objects such a
    ledger had already moved), the size decides, as it did for the original scripts."""
    if dest_row is None or dest_row[0] != src_row[0]:
        return False
    return dest_row[3] == src_row[1] or not dest_row[3] or not src_row[1]


def dest_knows_other(dest_row: tuple | None, dest_etag: str, src_etag: str) -> bool:
    """A destination row that confirmed another version than (dest_etag, src_etag): the object
    there has been replaced since, or was uploaded for another source object. An empty ETag (the
    original scripts' two-column ledger) knows nothing."""
    return dest_row is not None and bool((dest_row[1] and dest_row[1] != dest_etag)
                                         or (dest_row[3] and dest_row[3] != src_etag))
