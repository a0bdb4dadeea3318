"""What waits for an upload: the source rows (staged, verified) the destination side has not yet
confirmed and freed, kept in the ledger index (index.py, table `waiting`, by the name of each
staged copy) so that the destination side holds in memory only what is staged now.

The source side's ledger rows enter it as the index absorbs them; the destination side releases
each once it is confirmed and its staged copy freed (or kept: delete_staging_data false); a row
taken out of the source ledger (handed back) leaves it. Queries go by the staged copies found on
the volumes (a few thousand at most), never over every object.
"""

from __future__ import annotations

import time

from .index import DONE, Index, Work, _transaction, chunks
from .ledger import DEST_COLUMNS, DEST_LEDGER, Ledger
from .progress import Progress

_ROW = "s.key, s.size, s.etag, s.verified, s.md5"
PRUNE = 100_000  # confirmed rows without a staged copy released per look for lost objects (Waiting.lost)


class Waiting:
    def __init__(self, index: Index | None = None) -> None:
        self.index = index or Index()
        self.dest = Ledger(DEST_LEDGER, DEST_COLUMNS)
        self.loaded = False
        self.handed_back = 0.0  # when keys were last taken out of the source ledger

    def load(self, create: bool) -> None:
        if create:
            self.dest.ensure()
        self.index.refresh()
        self.index.rebuilt.clear()
        self.loaded = True

    def tail(self) -> bool:
        """Absorb what both ledgers gained; True when either was replaced behind the index's back
        (read again whole: objects set aside are tried again)."""
        self.index.refresh()
        replaced = bool(self.index.rebuilt)
        self.index.rebuilt.clear()
        return replaced

    # -- queries -------------------------------------------------------------------------------
    def staged_work(self, names) -> tuple[dict[str, tuple[str, tuple]], dict[str, tuple[str, tuple]]]:
        """For staged copies (their names): those waiting to be uploaded, and those whose object the
        destination ledger already confirms (to free), each name -> (key, source row)."""
        todo: dict[str, tuple[str, tuple]] = {}
        done: dict[str, tuple[str, tuple]] = {}
        with self.index.lock:
            for part, marks in chunks(names):
                for name, key, *row, confirmed in self.index.db.execute(
                        f"SELECT w.name, {_ROW}, d.key IS NOT NULL AND {DONE} FROM waiting w JOIN src s ON s.key = "
                        f"w.key LEFT JOIN dest d ON d.key = w.key WHERE w.name IN ({marks})", part):
                    (done if confirmed else todo)[name] = (key, tuple(row))
        return todo, done

    def lost(self, staged: set[str], limit: int) -> list[tuple[str, str, tuple]]:
        """Up to `limit` objects waiting whose staged copy is on no volume: (name, key, source row).
        Rows the destination ledger confirms whose copy is gone need nothing more: released as met
        (up to PRUNE a call; an index built from both ledgers at once holds every source row)."""
        out: list[tuple[str, str, tuple]] = []
        stale: list[tuple[str]] = []
        with self.index.lock:
            cur = self.index.db.execute(f"SELECT w.name, {_ROW}, d.key IS NOT NULL AND {DONE} FROM waiting w JOIN src s "
                                        "ON s.key = w.key LEFT JOIN dest d ON d.key = w.key")
            while len(out) < limit and len(stale) < PRUNE and (rows := cur.fetchmany(1000)):
                for name, key, *row, confirmed in rows:
                    if name in staged:
                        continue
                    if confirmed:
                        stale.append((name,))
                    else:
                        out.append((name, key, tuple(row)))
            cur.close()
            if stale:
                with _transaction(self.index.db, immediate=True):
                    self.index.db.executemany("DELETE FROM waiting WHERE name = ?", stale)
        return out[:limit]

    def unconfirmed(self) -> int:
        """Source rows the destination ledger does not confirm."""
        t = self.index.totals()
        return t.src_objects - t.done_objects

    def unconfirmed_of(self, keys) -> int:
        """How many of these keys (a few: objects set aside) the destination ledger does not confirm."""
        n = 0
        with self.index.lock:
            for part, marks in chunks(keys):
                n += self.index.db.execute(
                    f"SELECT count(*) FROM src s LEFT JOIN dest d ON d.key = s.key WHERE s.key IN ({marks}) "
                    f"AND (d.key IS NULL OR NOT ({DONE}))", part).fetchone()[0]
        return n

    def is_waiting(self, key: str) -> bool:
        """Ledgered at the source and not confirmed here (its turn to come)."""
        src, dest = self.index.row("src", key), self.index.row("dest", key)
        from .ledger import dest_done

        return src is not None and not dest_done(src, dest)

    # -- changes -------------------------------------------------------------------------------
    def release(self, done: list[tuple[str, tuple]]) -> None:
        """Objects confirmed and freed: (key, source row) each; a newer version ledgered meanwhile
        (another row) stays waiting."""
        with self.index.lock, _transaction(self.index.db, immediate=True):
            self.index.db.executemany(
                "DELETE FROM waiting WHERE key = ?1 AND EXISTS (SELECT 1 FROM src WHERE key = ?1 AND size = ?2 AND "
                "etag = ?3)", ((k, r[0], r[1]) for k, r in done))

    def hand_back(self, keys: list[str]) -> None:
        """Take keys out of the source ledger (rewritten through the index, under its lock) and into
        the source side's work, so that it fetches them again without a listing."""
        self.handed_back = time.time()
        rows: list[tuple] = []

        def change(db) -> None:
            for part, marks in chunks(keys):
                rows.extend(db.execute(f"SELECT key, size, etag FROM src WHERE key IN ({marks})", part).fetchall())
                db.execute(f"DELETE FROM src WHERE key IN ({marks})", part)

        self.index.rewrite("src", change)
        Work(self.index).hand_back(rows)

    def update_progress(self, progress: Progress) -> None:
        """Totals: what the source side last listed (its state file), else what is ledgered."""
        from .progress import SRC_STATE, read_state

        t = self.index.totals()
        src = read_state(SRC_STATE) or {}
        total = max(int(src.get("total_objects") or 0), t.src_objects)
        total_bytes = max(int(src.get("total_bytes") or 0), t.src_bytes)
        progress.set_totals(total, total_bytes, t.done_objects, t.done_bytes)
        progress.write_state()
