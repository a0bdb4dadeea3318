"""The ledgers' index: an SQLite database beside them, so that no reader holds every row in memory.

The CSV ledgers stay the record: append-only, one line per object, `wc -l` counts them, the
original's two-column ledger is read as it is. The index (`.ledger_index.db` in the working
folder, sqlite3 from the standard library) is derived from them and may be deleted at any time:

- `src`, `dest`: the last row of each key of src_ledger.csv and dest_ledger.csv. Rows appended to
  a CSV are absorbed from the offset reached before (`absorbed`: each ledger's inode and offset),
  a few MiB at a time, each chunk in the transaction that moves the offset on. A CSV replaced by
  something else than this index's own rewrites (an operator's copy, a damaged or missing index)
  is read again whole, sorted by SQLite: minutes at 100M rows, once. So is one cut short, or
  edited in place (by a program that keeps the inode, as Python's write_text does) where edits are
  made: its first 4 KiB, or the last 4 KiB before the offset reached, are not what they were
  (`mark`, checked whenever its modification time changed). An edit of the same length in the
  middle of a large ledger is the one change not seen: delete the index (with the sides stopped)
  to have it read again whole.
- `totals`: objects and bytes of each ledger, and those confirmed (the destination holds the
  version the source side ledgered: ledger.dest_done), kept by triggers as rows come and go, so
  status.py answers at once at any size.
- `todo`: the source side's work of one pass (one listing): what the source ledger does not hold,
  large objects first, then in key order (plan.order_key), worked through as staging frees up (Work); objects handed back (lost staged
  copies, a comparison's missing ones) join it without a listing.
- `waiting`: the source rows the destination side has not yet confirmed and freed, by the name of
  each staged copy (waiting.py).
- listings (`listed*`): streamed into a table of a scratch database of the connection (an
  anonymous file, thrown away at once) and joined with the ledgers in key order, never held in
  memory.

SQLite's page cache is bounded (CACHE_KIB), its sorts spill to temporary files in the working
folder, and every query streams: a process's memory does not grow with the object count. Every
process of the folder shares the file (WAL mode: readers never wait for the one writer).
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import sqlite3
import threading
from contextlib import contextmanager
from itertools import islice
from operator import itemgetter
from typing import Callable, Iterable, Iterator, NamedTuple

from .errors import S5jError
from .plan import LARGE_BYTES
from .ledger import DEST_COLUMNS, DEST_LEDGER, SRC_COLUMNS, SRC_LEDGER, Ledger, _fsync_dir, encode_key
from .volumes import staged_name

log = logging.getLogger("s5jtransfer.index")

INDEX_FILE = ".ledger_index.db"
SCHEMA_VERSION = 2
MARK_BYTES = 4096  # the head and the tail before the offset that tell an edit in place (absorbed.mark)
CACHE_KIB = 32 * 1024  # SQLite's page cache of one connection (KiB)
# seconds a statement waits for another process's lock (in SQLite's C code, where a stop signal
# cannot end it) before control comes back to Python: a stop is never held up longer
LOCK_POLL = 5
LOCK_SAY = 60  # seconds between two lines saying that a write still waits for the lock
LOCK_WAIT = 3 * 3600  # seconds a write waits for another process's write lock before it gives up
_SCRATCH = "x_"  # the schema of a listing's scratch database: x_<table> (Index.scratch)
CHUNK = 500  # keys or names per query (SQLite's bound variables: chunks)
BATCH = 20_000  # rows handed to SQLite at a time while a listing streams in
_SIZE = itemgetter(1)
TABLES = {"src": (SRC_LEDGER, SRC_COLUMNS, "md5"), "dest": (DEST_LEDGER, DEST_COLUMNS, "source_etag")}

# ledger.dest_done, in SQL: the destination row `d` confirms the source row `s`
DONE = "d.size = s.size AND (d.source_etag = s.etag OR d.source_etag = '' OR s.etag = '')"
# plan.is_done, in SQL: the source row `s` covers the listed object `l`
COVERS = "s.size = l.size AND (s.etag = l.etag OR s.etag = '' OR l.etag = '')"

_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS src (key TEXT PRIMARY KEY, size INTEGER NOT NULL, etag TEXT NOT NULL, "
    "verified TEXT NOT NULL, md5 TEXT NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS dest (key TEXT PRIMARY KEY, size INTEGER NOT NULL, etag TEXT NOT NULL, "
    "verified TEXT NOT NULL, source_etag TEXT NOT NULL) WITHOUT ROWID",
    # how far each CSV is read: its inode, the offset, the lines that are no rows (skipped), and
    # its modification time and `mark` (a digest of its head and of the tail before the offset)
    # when last read
    "CREATE TABLE IF NOT EXISTS absorbed (ledger TEXT PRIMARY KEY, ino INTEGER, offset INTEGER NOT NULL, "
    "bad INTEGER NOT NULL DEFAULT 0, mtime INTEGER, mark TEXT)",
    "CREATE TABLE IF NOT EXISTS totals (id INTEGER PRIMARY KEY CHECK (id = 0), src_objects INTEGER NOT NULL, "
    "src_bytes INTEGER NOT NULL, dest_objects INTEGER NOT NULL, done_objects INTEGER NOT NULL, "
    "done_bytes INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO totals VALUES (0, 0, 0, 0, 0, 0)",
    "CREATE TABLE IF NOT EXISTS todo (key TEXT NOT NULL, size INTEGER NOT NULL, etag TEXT NOT NULL, "
    "checksum TEXT NOT NULL)",
    # the destination side's work: every source row absorbed, by the name of its staged copy,
    # until the destination side releases it (confirmed and freed: Waiting)
    "CREATE TABLE IF NOT EXISTS waiting (name TEXT PRIMARY KEY, key TEXT NOT NULL) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS waiting_key ON waiting(key)",
    _TODO_KEY := "CREATE INDEX IF NOT EXISTS todo_key ON todo(key)",
    "CREATE TABLE IF NOT EXISTS todo_totals (id INTEGER PRIMARY KEY CHECK (id = 0), objects INTEGER NOT NULL, "
    "bytes INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO todo_totals VALUES (0, 0, 0)",
    "CREATE TRIGGER IF NOT EXISTS todo_ai AFTER INSERT ON todo BEGIN UPDATE todo_totals SET objects = objects + 1, "
    "bytes = bytes + NEW.size; END",
    _TODO_AD := "CREATE TRIGGER IF NOT EXISTS todo_ad AFTER DELETE ON todo BEGIN UPDATE todo_totals SET "
    "objects = objects - 1, bytes = bytes - OLD.size; END",
]


def _clear_todo(db: sqlite3.Connection) -> None:
    """The pass's work emptied at once (no trigger per row; inside the caller's transaction)."""
    db.execute("DROP TRIGGER IF EXISTS todo_ad")
    db.execute("DELETE FROM todo")
    db.execute(_TODO_AD)
    db.execute("UPDATE todo_totals SET objects = 0, bytes = 0")


def _match(row: str, table: str) -> str:
    """EXISTS: the row `row` (NEW or OLD) of `table` and the other ledger's row of its key are a
    confirmed pair (DONE)."""
    if table == "src":
        return f"EXISTS (SELECT 1 FROM dest d WHERE d.key = {row}.key AND " + DONE.replace("s.", f"{row}.") + ")"
    return f"EXISTS (SELECT 1 FROM src s WHERE s.key = {row}.key AND " + DONE.replace("d.", f"{row}.") + ")"


def _triggers() -> list[str]:
    """The triggers that keep `totals` as rows of either ledger come, change and go."""
    out = []
    count = {"src": "src_objects = src_objects + {n}, src_bytes = src_bytes + {n} * {r}.size",
             "dest": "dest_objects = dest_objects + {n}"}
    done = "UPDATE totals SET done_objects = done_objects + {n}, done_bytes = done_bytes + {n} * {r}.size WHERE {m};"
    for t in TABLES:
        add = f"UPDATE totals SET {count[t].format(n=1, r='NEW')}; " + done.format(n=1, r="NEW", m=_match("NEW", t))
        sub = f"UPDATE totals SET {count[t].format(n=-1, r='OLD')}; " + done.format(n=-1, r="OLD", m=_match("OLD", t))
        out.append(f"CREATE TRIGGER IF NOT EXISTS {t}_ai AFTER INSERT ON {t} BEGIN {add} END")
        gone = "DELETE FROM waiting WHERE key = OLD.key;" if t == "src" else ""
        out.append(f"CREATE TRIGGER IF NOT EXISTS {t}_ad AFTER DELETE ON {t} BEGIN {sub} {gone} END")
        out.append(f"CREATE TRIGGER IF NOT EXISTS {t}_au AFTER UPDATE ON {t} BEGIN {sub} {add} END")
    return out


_TRIGGER_NAMES = [f"{t}_{e}" for t in TABLES for e in ("ai", "ad", "au")]


class PassCounts(NamedTuple):
    listed: int
    listed_bytes: int
    todo: int  # listed objects the source ledger does not cover: the pass's work
    todo_bytes: int


class Totals(NamedTuple):
    src_objects: int
    src_bytes: int
    dest_objects: int
    done_objects: int  # confirmed: a destination row for the version the source side ledgered
    done_bytes: int


class _Listings:
    """Listings streamed into scratch databases of an Index's connection (self.db, self.lock)."""

    db: sqlite3.Connection
    lock: threading.RLock

    def load_listing(self, name: str, objs: Iterable, keep: Callable[[str], bool] | None = None) -> tuple[int, int]:
        """A listing streamed into the table `name` (key, size, etag, checksum) of a scratch
        database of this connection (scratch), in key order; (objects, bytes). Duplicate keys (a
        listing that repeats one) are left to the queries (GROUP BY). The rows pass from the
        listing to SQLite by C-level iteration (about 1 us per object); the connection is held
        only while a batch goes in, so two listings (both sides) stream in at once."""
        with self.lock:
            self.scratch(name)
            self.db.execute(f"CREATE TABLE {_SCRATCH}{name}.{name} (key TEXT NOT NULL, size INTEGER NOT NULL, "
                            "etag TEXT NOT NULL, checksum TEXT NOT NULL)")
        # s3.Obj and plan.Item are (key, size, etag, checksum): as plain tuples, SQLite binds them
        # 20% faster than as named tuples
        rows = map(tuple, objs if keep is None else (o for o in objs if keep(o[0])))
        n = nbytes = 0
        while batch := list(islice(rows, BATCH)):
            with self.lock, _transaction(self.db):  # the scratch database's: no lock on the shared file
                try:
                    self.db.executemany(f"INSERT INTO {name} VALUES (?,?,?,?)", batch)
                except UnicodeEncodeError:  # no S3 key: skipped
                    self.db.executemany(f"INSERT INTO {name} VALUES (?,?,?,?)", [r for r in batch if _encodable(r)])
            n += len(batch)
            nbytes += sum(map(_SIZE, batch))
        with self.lock:
            # a covering index: the joins read the listing in key order from it alone (through the
            # table by rowid, each row would be a random read: 9 times slower at 10M objects)
            self.db.execute(f"CREATE INDEX {_SCRATCH}{name}.{name}_key ON {name}(key, size, etag, checksum)")
        return n, nbytes

    def scratch(self, *names: str) -> None:
        """A scratch database for each listing (an anonymous file in the working folder, gone at
        DETACH at once, where DROP TABLE frees its pages one by one: 3 s at 10M objects), attached
        when missing (ATTACH is refused inside a transaction: compare.py attaches before its
        snapshot), emptied when there."""
        with self.lock:
            attached = {r[1] for r in self.db.execute("PRAGMA database_list")}
            for name in names:
                schema = _SCRATCH + name
                if schema in attached:
                    self.db.execute(f"DROP TABLE IF EXISTS {schema}.{name}")
                    continue
                self.db.execute(f"ATTACH DATABASE '' AS {schema}")
                self.db.execute(f"PRAGMA {schema}.journal_mode=OFF")  # thrown away whole, never rolled back
                self.db.execute(f"PRAGMA {schema}.cache_size=-{CACHE_KIB}")

    def drop_listing(self, *names: str) -> None:
        """Listings no longer needed: their scratch databases detached (inside a transaction, their
        tables dropped)."""
        with self.lock:
            attached = {r[1] for r in self.db.execute("PRAGMA database_list")}
            for name in names:
                schema = _SCRATCH + name
                if schema in attached:
                    self.db.execute(f"DROP TABLE IF EXISTS {schema}.{name}" if self.db.in_transaction
                                    else f"DETACH DATABASE {schema}")


class Index(_Listings):
    """One process's connection to the working folder's index; thread-safe (one lock)."""

    def __init__(self, folder: str = ".", path: str | None = None) -> None:
        self.folder = os.path.abspath(folder)
        self.path = path or os.path.join(self.folder, INDEX_FILE)
        self.ledgers = {t: Ledger(os.path.join(self.folder, csv), cols) for t, (csv, cols, _) in TABLES.items()}
        self._db: sqlite3.Connection | None = None
        self.lock = threading.RLock()
        self.rebuilt: set[str] = set()  # tables read again whole by this process (a replaced ledger)

    # -- the connection ----------------------------------------------------------------------
    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = self._open()
        return self._db

    def _open(self) -> sqlite3.Connection:
        for attempt in (1, 2):
            db = sqlite3.connect(self.path, isolation_level=None, timeout=LOCK_POLL, check_same_thread=False)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")  # a power cut may lose the last chunks: absorbed again
                db.execute(f"PRAGMA journal_size_limit={64 << 20}")  # the WAL cut back after a checkpoint
                db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
                db.execute("PRAGMA temp_store=FILE")
                db.execute(f"PRAGMA temp_store_directory='{self.folder.replace(chr(39), chr(39) * 2)}'")
                if db.execute("PRAGMA user_version").fetchone()[0] not in (0, SCHEMA_VERSION):
                    raise sqlite3.DatabaseError("another version of the index")
                with _transaction(db, immediate=True):
                    for statement in _SCHEMA + _triggers():
                        db.execute(statement)
                    db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                return db
            except sqlite3.OperationalError:  # locked, busy, cannot open: no damage, nothing removed
                db.close()
                raise
            except sqlite3.DatabaseError as exc:  # not a database, malformed, another version
                db.close()
                if attempt == 2:
                    raise
                log.warning("the ledger index %s cannot be used (%s); it is built again from the ledgers",
                            self.path, exc)
                self.remove()
        raise AssertionError("unreachable")

    @classmethod
    def elsewhere(cls) -> "Index":
        """An index in a temporary folder (--dry-run writes nothing in the working folder), removed
        at exit; built from the ledgers as any other."""
        import atexit
        import shutil
        import tempfile

        folder = tempfile.mkdtemp(prefix="s5jtransfer-index-")
        atexit.register(shutil.rmtree, folder, True)
        return cls(path=os.path.join(folder, INDEX_FILE))

    def remove(self) -> None:
        """Delete the index (it is rebuilt from the ledgers when next needed)."""
        self.close()
        for suffix in ("", "-wal", "-shm"):
            try:
                os.remove(self.path + suffix)
            except FileNotFoundError:
                pass

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # -- keeping up with the ledgers -----------------------------------------------------------
    def refresh(self, tables: Iterable[str] = ("src", "dest")) -> None:
        """Absorb what each ledger gained since; read again whole a ledger that was replaced."""
        with self.lock:
            for t in tables:
                self._absorb(t)

    def _absorb(self, table: str) -> None:
        led = self.ledgers[table]
        db = self.db
        while True:
            with _transaction(db, immediate=True):
                got = db.execute("SELECT ino, offset, mtime, mark FROM absorbed WHERE ledger = ?", (table,)).fetchone()
                try:
                    fh = open(led.path, "rb")
                except FileNotFoundError:
                    if got is not None and (got[0] is not None or got[1]):
                        self._clear(table)  # removed (reset.py): nothing ledgered
                        db.execute("INSERT OR REPLACE INTO absorbed VALUES (?, NULL, 0, 0, NULL, NULL)", (table,))
                    return
                with fh:
                    st = os.fstat(fh.fileno())
                    if got is not None and got[0] == st.st_ino and st.st_size == got[1] and st.st_mtime_ns == got[2]:
                        return  # as it was
                    if got is None or got[0] != st.st_ino or st.st_size < got[1] or _mark(fh, got[1]) != got[3]:
                        self._rebuild(table, fh, st.st_ino)  # replaced, cut or edited in place
                        return
                    if st.st_size == got[1]:  # touched (a torn line after the offset cut away)
                        db.execute("UPDATE absorbed SET mtime = ? WHERE ledger = ?", (st.st_mtime_ns, table))
                        return
                    chunk = next(led.chunks(fh, got[1]), None)
                    if chunk is None:  # only a line being written: next time
                        return
                    bad = led.bad_lines
                    rows, _keys, offset = chunk
                    self._upsert(table, rows.items())
                    # the time of the file as read (taken after the read: rows appended meanwhile
                    # make it longer than the offset, which the next look sees as such)
                    db.execute("UPDATE absorbed SET offset = ?, bad = bad + ?, mtime = ?, mark = ? WHERE ledger = ?",
                               (offset, led.bad_lines - bad, os.fstat(fh.fileno()).st_mtime_ns, _mark(fh, offset),
                                table))

    def _upsert(self, table: str, items) -> None:
        """Rows (key, (size, ...)) into a table: the last of a key wins (the ledgers' rule)."""
        cols = TABLES[table][2]
        sql = (f"INSERT INTO {table} VALUES (?,?,?,?,?) ON CONFLICT(key) DO UPDATE SET size = excluded.size, "
               f"etag = excluded.etag, verified = excluded.verified, {cols} = excluded.{cols}")
        rows = [(k, *r[:4]) for k, r in items]
        try:
            self.db.executemany(sql, rows)
        except UnicodeEncodeError:  # a damaged line (bytes that are no UTF-8): skipped, as a bad line
            rows = [r for r in rows if _encodable(r)]
            self.db.executemany(sql, rows)
        if table == "src":  # staged, verified and ledgered: the destination side's to upload
            self.db.executemany("INSERT OR REPLACE INTO waiting VALUES (?, ?)", ((staged_name(r[0]), r[0]) for r in rows))

    def _rebuild(self, table: str, fh, ino: int) -> None:
        """Read a ledger again whole (inside the caller's transaction): into a plain table first
        (appends are cheap), then into the keyed table in key order (SQLite sorts on disk; the
        last row of a key wins), then its totals are counted anew."""
        led = self.ledgers[table]
        db = self.db
        log.info("indexing %s (read whole: it was replaced, or the index %s is new)", led.path, self.path)
        led.bad_lines = 0
        self.rebuilt.add(table)
        self._clear(table)
        db.execute(f"CREATE TEMP TABLE raw (key TEXT, size INTEGER, etag TEXT, verified TEXT, {TABLES[table][2]} TEXT)")
        offset = 0
        for rows, _keys, offset in led.chunks(fh, 0):
            items = [(k, *r[:4]) for k, r in rows.items()]
            try:
                db.executemany("INSERT INTO raw VALUES (?,?,?,?,?)", items)
            except UnicodeEncodeError:
                db.executemany("INSERT INTO raw VALUES (?,?,?,?,?)", [r for r in items if _encodable(r)])
        with self._no_triggers():
            db.execute(f"INSERT OR REPLACE INTO {table} SELECT * FROM raw ORDER BY key, rowid")
        db.execute("DROP TABLE raw")
        self._recount()
        db.execute("INSERT OR REPLACE INTO absorbed VALUES (?, ?, ?, ?, ?, ?)",
                   (table, ino, offset, led.bad_lines, os.fstat(fh.fileno()).st_mtime_ns, _mark(fh, offset)))
        if led.bad_lines:
            log.warning("%s: %d line(s) are not ledger rows and are skipped; repair_ledger.py rewrites the file "
                        "without them", led.path, led.bad_lines)
        if table == "src":
            _clear_todo(db)  # the work of a pass against another ledger: list again
            # every object it does not confirm is the destination side's again (staged, or lost)
            cur = db.execute(f"SELECT s.key FROM src s LEFT JOIN dest d ON d.key = s.key WHERE d.key IS NULL "
                             f"OR NOT ({DONE})")
            while rows := cur.fetchmany(BATCH):
                db.executemany("INSERT OR REPLACE INTO waiting VALUES (?, ?)", ((staged_name(k), k) for k, in rows))

    def _clear(self, table: str) -> None:
        with self._no_triggers():
            self.db.execute(f"DELETE FROM {table}")
            if table == "src":
                self.db.execute("DELETE FROM waiting")
        self._recount()

    @contextmanager
    def _no_triggers(self) -> Iterator[None]:
        """Bulk changes without a trigger per row (inside the caller's transaction): the totals are
        counted anew after them."""
        for name in _TRIGGER_NAMES:
            self.db.execute(f"DROP TRIGGER IF EXISTS {name}")
        yield
        for statement in _triggers():
            self.db.execute(statement)

    def _recount(self) -> None:
        self.db.execute(
            "UPDATE totals SET src_objects = (SELECT count(*) FROM src), src_bytes = (SELECT coalesce(sum(size), 0) "
            "FROM src), dest_objects = (SELECT count(*) FROM dest), "
            f"done_objects = (SELECT count(*) FROM src s JOIN dest d ON d.key = s.key WHERE {DONE}), "
            f"done_bytes = (SELECT coalesce(sum(s.size), 0) FROM src s JOIN dest d ON d.key = s.key WHERE {DONE})")

    # -- reading -----------------------------------------------------------------------------
    def row(self, table: str, key: str) -> tuple | None:
        """A ledger's row of `key` as Ledger.load gives it: (size, etag, verified, md5 or source_etag)."""
        with self.lock:
            try:
                return self.db.execute(f"SELECT size, etag, verified, {TABLES[table][2]} FROM {table} WHERE key = ?",
                                       (key,)).fetchone()
            except UnicodeEncodeError:
                return None

    def count_between(self, table: str, lo: str, hi: str, limit: int) -> int:
        """Rows of a ledger whose key is from lo to hi, counted up to limit (by the key's index)."""
        with self.lock:
            return self.db.execute(f"SELECT count(*) FROM (SELECT 1 FROM {table} WHERE key BETWEEN ? AND ? LIMIT ?)",
                                   (lo, hi, limit)).fetchone()[0]

    def totals(self) -> Totals:
        with self.lock:
            return Totals(*self.db.execute("SELECT src_objects, src_bytes, dest_objects, done_objects, done_bytes "
                                           "FROM totals").fetchone())

    def rows(self, table: str, where: str = "", args: tuple = ()) -> Iterator[tuple]:
        """(key, size, etag, verified, md5 or source_etag) of a table in key order, streamed."""
        return _streamed(self, self.db.execute(
            f"SELECT key, size, etag, verified, {TABLES[table][2]} FROM {table} {where} ORDER BY key", args))

    def unconfirmed(self) -> Iterator[tuple]:
        """(key, size, etag, verified, md5) of every source row the destination ledger does not
        confirm (the destination side's work), in key order, streamed."""
        return _streamed(self, self.db.execute(
            "SELECT s.key, s.size, s.etag, s.verified, s.md5 FROM src s LEFT JOIN dest d "
            f"ON d.key = s.key WHERE d.key IS NULL OR NOT ({DONE}) ORDER BY s.key"))

    def bad_lines(self, table: str) -> int:
        """Lines of the ledger that are no rows (damaged by hand or by a disk), skipped when read."""
        with self.lock:
            got = self.db.execute("SELECT bad FROM absorbed WHERE ledger = ?", (table,)).fetchone()
        return got[0] if got else 0

    def etags_matched(self, table: str) -> bool:
        """A row of the ledger verified by its ETag (md5, multipart): its store's ETags are MD5s."""
        with self.lock:
            return self.db.execute(f"SELECT EXISTS (SELECT 1 FROM {table} WHERE verified IN ('md5', 'multipart'))"
                                   ).fetchone()[0] == 1

    def rewrite(self, table: str, change: Callable[[sqlite3.Connection], None]) -> None:
        """Change a ledger's rows (change(db) edits the table, under both the ledger's lock and the
        index's write lock), then write the CSV anew from the table and put it in place (temporary
        file, fsync, rename, fsync of the folder), with the index recording the new file as
        absorbed: no other process reads it again. A stop before the rename leaves the old CSV,
        which the index then reads again whole (the rows changed roll back with the transaction)."""
        from .ledger import file_lock

        led = self.ledgers[table]
        with self.lock, file_lock(led.lock_path):
            self._absorb(table)  # appends made before the lock: in the table first
            db = self.db
            with _transaction(db, immediate=True):
                change(db)
                tmp = led.path + ".tmp"
                with open(tmp, "w", encoding="utf-8", errors="surrogateescape", newline="") as fh:
                    out = csv.writer(fh, lineterminator="\n")  # as ledger._row_line writes a row
                    out.writerow(led.columns)
                    out.writerows((encode_key(r[0]), *r[1:]) for r in self.rows(table))
                    fh.flush()
                    os.fsync(fh.fileno())
                    st = os.fstat(fh.fileno())
                    with open(tmp, "rb") as raw:
                        mark = _mark(raw, st.st_size)
                db.execute("INSERT OR REPLACE INTO absorbed VALUES (?, ?, ?, 0, ?, ?)",
                           (table, st.st_ino, st.st_size, st.st_mtime_ns, mark))
                # in place before the index's write lock is released: no other process can find the
                # index ahead of the file and read the old one again whole
                os.replace(tmp, led.path)
                _fsync_dir(led.path)


class Work:
    """The source side's passes: the work a listing leaves (`todo`), shared through the index (the
    destination side and repair_ledger.py hand objects back into it)."""

    def __init__(self, index: Index) -> None:
        self.index = index

    def new_pass(self, objs: Iterable, keep: Callable[[str], bool] | None = None) -> "PassCounts":
        """One listing (streamed: s3.Obj or plan.Item; keep(key): this host's shard) against the
        source ledger: `todo` made anew with every listed object the ledger does not cover
        (plan.is_done's rule), in plan.order_key's order. The listing goes into a table of this connection
        (no write lock on the shared file while it streams in); the work left is written in short
        transactions, sorted by SQLite on disk."""
        listed, listed_bytes = self.index.load_listing("listed", objs, keep)  # the connection held a batch at a time
        db = self.index.db
        with self.index.lock:
            with _transaction(db, immediate=True):
                _clear_todo(db)
                db.execute("DROP INDEX IF EXISTS todo_key")  # made once after the rows: 4 times cheaper
            cur = db.execute(
                "SELECT l.key, l.size, l.etag, l.checksum FROM listed l LEFT JOIN src s ON s.key = l.key "
                f"WHERE s.key IS NULL OR NOT ({COVERS}) GROUP BY l.key "
                f"ORDER BY CASE WHEN l.size >= {LARGE_BYTES} THEN l.size ELSE 0 END DESC, l.key")  # plan.order_key
            todo = todo_bytes = 0
            while rows := cur.fetchmany(BATCH):
                with _transaction(db, immediate=True):
                    db.executemany("INSERT INTO todo VALUES (?,?,?,?)", rows)
                todo += len(rows)
                todo_bytes += sum(map(_SIZE, rows))
            cur.close()
            with _transaction(db, immediate=True):
                db.execute(_TODO_KEY)  # the index by key (todo_drop, hand_back)
            self.index.drop_listing("listed")
        return PassCounts(listed, listed_bytes, todo, todo_bytes)

    def todo_head(self, limit: int, skip: Callable[[str], bool]) -> list[tuple[str, int, str, str]]:
        """The first `limit` objects of the pass's work left, in order, but those skip(key)
        says to leave now (in flight, or waiting after a failed try)."""
        out = []
        with self.index.lock:
            cur = self.index.db.execute("SELECT key, size, etag, checksum FROM todo ORDER BY rowid")
            while len(out) < limit:
                rows = cur.fetchmany(min(BATCH, max(1000, limit)))
                if not rows:
                    break
                out += [r for r in rows if not skip(r[0])]
            cur.close()
        return out[:limit]

    def todo_left(self) -> int:
        return self.todo_totals()[0]

    def todo_totals(self) -> tuple[int, int]:
        """(objects, bytes) of the pass's work left (kept by triggers: no count at any size)."""
        with self.index.lock:
            return self.index.db.execute("SELECT objects, bytes FROM todo_totals").fetchone()

    def count(self, keys) -> int:
        """How many of these keys (a few: objects set aside) the pass's work holds."""
        n = 0
        with self.index.lock:
            for part, marks in chunks(keys):
                n += self.index.db.execute(f"SELECT count(*) FROM todo WHERE key IN ({marks})", part).fetchone()[0]
        return n

    def rows_of(self, keys) -> list[tuple[str, int, str, str]]:
        """The pass's work of these keys (a volume's staged copies at most): (key, size, etag, checksum)."""
        out = []
        with self.index.lock:
            for part, marks in chunks(keys):
                out += self.index.db.execute(f"SELECT key, size, etag, checksum FROM todo WHERE key IN ({marks})",
                                             part).fetchall()
        return out

    def todo_drop(self, keys: Iterable[str]) -> None:
        """Objects of the pass that need no more work (ledgered, or never to move)."""
        with self.index.lock, _transaction(self.index.db, immediate=True):
            self.index.db.executemany("DELETE FROM todo WHERE key = ?", ((k,) for k in keys))

    def hand_back(self, rows: Iterable[tuple]) -> None:
        """Objects the source side must fetch again, (key, size, etag) each: into the pass's work
        (the caller takes their rows out of the source ledger)."""
        with self.index.lock, _transaction(self.index.db, immediate=True):
            self.index.db.executemany("INSERT INTO todo SELECT ?1, ?2, ?3, '' WHERE NOT EXISTS "
                                "(SELECT 1 FROM todo WHERE key = ?1)", rows)

    def hand_back_selected(self, select: str, params: tuple = ()) -> None:
        """hand_back of the rows (key, size, etag) a query of this connection selects (temporary
        tables: compare.py's), in one statement, whatever their number."""
        with self.index.lock, _transaction(self.index.db, immediate=True):
            self.index.db.execute(f"INSERT INTO todo SELECT x.key, min(x.size), min(x.etag), '' FROM ({select}) x "
                                  "WHERE NOT EXISTS (SELECT 1 FROM todo t WHERE t.key = x.key) GROUP BY x.key", params)


@contextmanager
def _transaction(db: sqlite3.Connection, immediate: bool = False) -> Iterator[None]:
    """BEGIN (IMMEDIATE: the write lock at once) ... COMMIT, or ROLLBACK on an error; nested
    calls join the outer transaction."""
    if db.in_transaction:
        yield
        return
    if immediate:
        _write_lock(db)
    else:
        db.execute("BEGIN")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def chunks(keys: Iterable) -> Iterator[tuple[list, str]]:
    """Keys (or names) CHUNK at a time, each part with its `?,?,...` (SQLite's bound variables)."""
    keys = list(keys)
    for i in range(0, len(keys), CHUNK):
        part = keys[i:i + CHUNK]
        yield part, ",".join("?" * len(part))


def _streamed(index: "Index", cur: sqlite3.Cursor) -> Iterator[tuple]:
    """A query's rows BATCH at a time, the connection held only while a batch is fetched."""
    while True:
        with index.lock:
            got = cur.fetchmany(BATCH)
        if not got:
            return
        yield from got


def _write_lock(db: sqlite3.Connection) -> None:
    """BEGIN IMMEDIATE, waiting for another process of the folder that holds the index's write
    lock (building the index from large ledgers takes minutes), said every LOCK_SAY seconds, for
    at most LOCK_WAIT seconds."""
    waited = said = 0.0
    while True:
        try:
            db.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
        waited += LOCK_POLL
        if waited >= LOCK_WAIT:
            raise S5jError(f"the ledger index {INDEX_FILE} stayed locked by another process of this folder for "
                           f"{LOCK_WAIT // 3600:g} h; see which scripts run here (status.py) and stop the one that "
                           "hangs") from None
        if waited - said >= LOCK_SAY:
            said = waited
            log.warning("waiting for the ledger index %s: another process of this folder is writing it (building "
                        "it from large ledgers takes minutes); waited %d s", INDEX_FILE, waited)


def _mark(fh, offset: int) -> str:
    """A digest of a ledger's first MARK_BYTES and of the MARK_BYTES before `offset` (absorbed.mark):
    what an edit in place changes where edits are made (the header, the last rows)."""
    fd = fh.fileno()
    head = os.pread(fd, min(MARK_BYTES, offset), 0)
    tail = os.pread(fd, min(MARK_BYTES, offset), max(0, offset - MARK_BYTES))
    return hashlib.blake2b(head + b"|" + tail, digest_size=16).hexdigest()


def _encodable(row: tuple) -> bool:
    try:
        for v in row:
            if isinstance(v, str):
                v.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
