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
from .plan import order_of
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


class StagedWork:
    """Waiting.staged_work kept across the destination side's cycles, so that a cycle costs what
    changed, not what is staged: a staged copy is looked up in the index when it is first seen
    (again when its size changes, and every REVALIDATE seconds); one no row names yet (staged, its
    ledger row not yet appended) is looked up again when the source ledger changes. The copies
    waiting for an upload are walked in the work's order (plan.order_key: large objects first,
    largest first, then key order, so that a batch of small uploads is one narrow range of keys,
    which one listing confirms: confirm.py), and a cycle reads only as many as it hands over."""

    REVALIDATE = 60.0  # seconds between lookups of every staged copy again (rows changed elsewhere)

    def __init__(self, waiting: Waiting) -> None:
        self.waiting = waiting
        self.todo: dict[str, tuple[str, tuple, int]] = {}  # name -> (key, source row, staged size)
        self._unnamed: dict[str, tuple[int, float]] = {}  # looked up, no waiting row names it (yet): name -> (size, since)
        self._done: dict[str, int] = {}  # looked up, confirmed already (kept: delete_staging_data false): name -> size
        self._order: list[tuple[tuple[int, str], str]] = []  # (plan.order_key, name); sorted unless _unsorted
        self._unsorted = False
        self._ledger_sig: tuple | None = None
        self._since = time.monotonic()  # when every copy was last looked up
        self._all = True  # every staged copy is to be looked up at the next update
        self._relook: set[str] = set()  # ... these (forgotten)

    def forget(self, names=None) -> None:
        """Look these staged copies up again at the next update (all of them: None)."""
        if names is None:
            self.todo.clear()
            self._unnamed.clear()
            self._done.clear()
            self._order = []
            self._all = True
            return
        names = list(names)
        self._drop(names)
        self._relook.update(names)

    def _drop(self, names) -> None:
        for name in names:
            for cache in (self.todo, self._unnamed, self._done):
                cache.pop(name, None)

    def released(self, names, replaced=()) -> None:
        """Confirmed and released by this side (its copy kept, or freed): not to upload again; those
        `replaced` by a newer version meanwhile are looked up again."""
        for name in names:
            got = self.todo.pop(name, None)
            if got is not None:
                self._done[name] = got[2]
        self.forget(replaced)

    def newer(self, looked_up: list[tuple[str, str, tuple]]) -> set[str]:
        """Of these (name, key, source row) as looked up, the names whose row is no longer the
        index's (a newer version staged, or no longer waiting): forgotten, looked up next update."""
        now, _done = self.waiting.staged_work([name for name, _k, _r in looked_up])
        out = {name for name, key, row in looked_up if now.get(name) != (key, row)}
        self.forget(out)
        return out

    def without_newer(self, cands: list, ok: list[bool]) -> tuple[list, list[bool]]:
        """Candidates (upload.Candidate) and whether each re-hash matched its row, without those
        that did not match a row older than the index's (newer())."""
        newer = self.newer([(c.pending.name, c.key, c.pending.row) for c, good in zip(cands, ok) if not good])
        kept = [(c, good) for c, good in zip(cands, ok) if c.pending.name not in newer]
        return [c for c, _ in kept], [good for _, good in kept]

    def update(self, scan, ledger_sig: tuple) -> dict[str, tuple[str, tuple]]:
        """Take in what a volumes.StagedScan saw change (its `added` and `removed`) and the source
        ledger's signature; returns the copies newly seen whose object the destination ledger
        confirms (name -> (key, source row)), to free."""
        staged, now = scan.staged, time.monotonic()
        if now - self._since >= self.REVALIDATE:
            self.forget()
        if self._all:
            self._all, self._since, new = False, now, set(staged)
        else:
            new = self._relook | set(scan.added)
            self._drop(scan.removed | set(scan.added))  # gone, or another size: looked up again
            if ledger_sig != self._ledger_sig:  # rows appended: the copies no row named lately may be named now
                recent = [n for n, (_size, since) in self._unnamed.items() if now - since < self.REVALIDATE]
                for name in recent:  # (one unnamed for longer is left by another run: looked up at REVALIDATE)
                    del self._unnamed[name]
                new.update(recent)
        self._ledger_sig, self._relook = ledger_sig, set()
        new_names = [n for n in new if n in staged and n not in self.todo and n not in self._unnamed
                     and n not in self._done]
        if not new_names:
            return {}
        todo, done = self.waiting.staged_work(new_names)
        for name in new_names:
            got, size = todo.get(name), staged[name][1]
            if got is None:
                if name in done:
                    self._done[name] = size
                else:
                    self._unnamed[name] = (size, now)
                continue
            key, row = got
            self.todo[name] = (key, row, size)
            self._order.append((order_of(row[0], key), name))
            self._unsorted = True
        return done

    def ordered(self):
        """The names waiting for an upload, in the work's order (a generator: walk what you need)."""
        if len(self._order) > 2 * len(self.todo) + 1000:  # entries of names gone: made anew
            self._order = [(order_of(row[0], key), name) for name, (key, row, _size) in self.todo.items()]
            self._unsorted = True
        if self._unsorted:
            self._order.sort()  # runs already in order, merged: about linear
            self._unsorted = False
        gone = 0
        while gone < len(self._order) and self._order[gone][1] not in self.todo:
            gone += 1  # released: the work's front moves on
        del self._order[:gone]
        seen = set()
        for _okey, name in self._order:
            if name in self.todo and name not in seen:
                seen.add(name)
                yield name

