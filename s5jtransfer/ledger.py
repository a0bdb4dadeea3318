"""Append-only CSV ledgers: load, tail, append (flush+fsync), rewrite atomically, and locks."""

from __future__ import annotations

import csv
import errno
import fcntl
import gc
import io
import logging
import os
import sys
import urllib.parse
from contextlib import contextmanager
from itertools import groupby, repeat
from typing import Iterable, Iterator

from .errors import LockHeld

SRC_LEDGER = "src_ledger.csv"
DEST_LEDGER = "dest_ledger.csv"
SRC_COLUMNS = ("Key", "Size", "ETag", "Verified", "MD5")
DEST_COLUMNS = ("Key", "Size", "ETag", "Verified", "SourceETag")
_ENC = "urlenc:"
_READ_BYTES = 4 << 20  # ledger text read and parsed at a time (whole lines: never part of a UTF-8 character)
_NOT_SEPARATORS = bytes(c for c in range(256) if c not in b",\n")

log = logging.getLogger("s5jtransfer.ledger")


# Each script's lock file in the working folder, and the script that holds it.
LOCKS = {
    "src": (".src_sync_mvol.lock", "src_sync_mvol.py"),
    "dest": (".dest_sync_mvol.lock", "dest_sync_mvol.py"),
    "sync": (".sync_mvol.lock", "sync_mvol.py"),
    "repair": (".repair_ledger.lock", "repair_ledger.py"),
}


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


def uploader_running() -> bool:
    """A destination side runs in this folder: dest_sync_mvol.py's lock is held, or sync_mvol.py's
    (which starts one)."""
    return is_locked(LOCKS["dest"][0]) or is_locked(LOCKS["sync"][0])


@contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a ledger is parsed: the rows hold no cycle, and a
    million new tuples would run about 1,400 collections that each walk the chunk's large lists
    of fields (0.6 s of 2.5 at 1M rows, measured). Collection is back on (if it was) after."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _fields(line: str) -> list[str]:
    """One ledger line's fields, as csv.reader reads the line alone ([] if it cannot)."""
    if '"' not in line and "\r" not in line:
        return line.split(",")  # what csv.reader makes of it, but for "" (one empty field, not none)
    try:
        return next(csv.reader([line]), [])
    except csv.Error:  # a CR inside an unquoted field (a damaged line)
        return []


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
    def _parse(self, data: bytes, rows: dict[str, tuple], skip_header: bool) -> list[str]:
        """Parse complete lines (data ends with LF) into rows; returns the keys read, in order.

        Reads what csv.reader reads, line by line, faster. Nearly every line has no quote and no
        CR (csv.writer quotes only keys holding a comma, a quote or a CR, and keys holding a CR
        are stored encoded): a chunk of such lines that all have the same number of commas
        (checked on the bytes at C speed) is split on commas at once and its columns sliced out
        of the one list of fields. Any other chunk is read by runs of such lines, and lines with
        a quote or a CR go through csv.reader, each alone: a row is one line (keys with a line
        break are encoded), so a quote left open by a damaged line loses only that line (read as
        one record over several lines, it would swallow every row after it).
        """
        keys: list[str] = []
        if skip_header and data:
            nl = data.index(b"\n")
            first = data[:nl].decode("utf-8", "surrogateescape")
            rec = _fields(first[:-1] if first.endswith("\r") and '"' not in first else first)
            if rec and rec[0] == "Key":
                data = data[nl + 1:]
        if not data:
            return keys
        decode = _ENC.encode() in data
        if b'"' not in data and b"\r" not in data:
            commas = data.count(b",", 0, data.index(b"\n"))
            if commas and data.translate(None, _NOT_SEPARATORS) == (b"," * commas + b"\n") * data.count(b"\n"):
                fields = data.decode("utf-8", "surrogateescape").replace("\n", ",").split(",")
                fields.pop()  # after the last line's LF
                if self._bulk(fields, commas + 1, rows, keys, decode):
                    return keys
        text = data.decode("utf-8", "surrogateescape")
        ncol = len(self.columns)
        # Split on LF only: str.splitlines() would also break at \x0b, \x1c, \u2028 ..., which
        # are valid inside a key.
        lines = text.split("\n")
        lines.pop()
        if "\r" in text:  # a CRLF ledger (csv.writer's default line end): csv.reader drops a CR ending a line
            lines = [x[:-1] if x.endswith("\r") and '"' not in x else x for x in lines]
        counts = list(map(str.count, lines, repeat(",", len(lines))))
        if '"' in text or "\r" in text:
            for i, x in enumerate(lines):
                if '"' in x or "\r" in x:
                    counts[i] = -1  # for csv.reader, alone
        at = 0
        for c, same in groupby(counts):
            n = sum(1 for _ in same)
            run = lines[at:at + n]
            at += n
            if c < 1 or not self._bulk(",".join(run).split(","), c + 1, rows, keys, decode):
                for x in run:
                    self._line(_fields(x), rows, keys, ncol)
        return keys

    def _bulk(self, f: list[str], nf: int, rows: dict[str, tuple], keys: list[str], decode: bool) -> bool:
        """The fields of whole lines of nf fields each (no quote, no CR) into rows at once.
        False (nothing done) when a size is not a number: the caller then reads them line by line."""
        try:
            sizes = list(map(int, f[1::nf]))
        except ValueError:
            return False
        ks = f[0::nf]
        if decode:
            ks = [decode_key(k) for k in ks]
        ncol = len(self.columns)
        cols = [f[j::nf] for j in range(2, min(nf, ncol))]
        if len(cols) > 1:  # the Verified column holds a few distinct words: one string object each
            cols[1] = list(map(sys.intern, cols[1]))
        cols.extend(repeat("") for _ in range(ncol - max(nf, 2)))  # the original Key,Size rows
        rows.update(zip(ks, zip(sizes, *cols)))
        keys += ks
        return True

    def _line(self, rec: list[str], rows: dict[str, tuple], keys: list[str], ncol: int) -> None:
        rec += [""] * (ncol - len(rec))
        try:
            size = int(rec[1])
        except (ValueError, IndexError):
            self.bad_lines += 1
            return
        key = decode_key(rec[0])
        rows[key] = (size, *rec[2:ncol])
        keys.append(key)

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
            keys: list[str] = []
            for chunk, chunk_keys, self._offset in self.chunks(fh, self._offset):
                rows.update(chunk)
                keys += chunk_keys
        return replaced, keys

    def chunks(self, fh, offset: int) -> Iterator[tuple[dict[str, tuple], list[str], int]]:
        """The rows of the whole lines from byte `offset` of the open ledger file `fh` to its end, a
        few MiB at a time (the text of a large ledger is never all in memory): (the chunk's rows,
        the last of each key; their keys in order; the offset after the chunk). A header line at
        offset 0 is skipped; bad_lines counts the lines that are not rows."""
        fh.seek(offset)
        first = offset == 0
        rest = b""
        while True:
            data = fh.read(_READ_BYTES)
            if not data:
                return
            end = data.rfind(b"\n")
            if end < 0:
                rest += data
                continue
            whole = rest + data[: end + 1] if rest else data[: end + 1]
            rest = data[end + 1:]
            offset += len(whole)
            rows: dict[str, tuple] = {}
            with _gc_paused():
                keys = self._parse(whole, rows, first)
            first = False
            yield rows, keys, offset

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
        """Replace the ledger atomically (temp file, fsync, rename) under its lock (rows held
        in memory, as tests write them; the suite rewrites its ledgers through index.Index.rewrite)."""
        with file_lock(self.lock_path):
            self._write_new((k, *v) for k, v in rows.items())


def has_rows(path: str) -> bool:
    """Whether a ledger holds a row below its header."""
    try:
        with open(path, "rb") as fh:
            fh.readline()
            return bool(fh.readline())
    except FileNotFoundError:
        return False


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
