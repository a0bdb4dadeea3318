"""What waits for an upload: source-ledger rows (staged, verified) not yet confirmed in the
destination ledger, kept in step with both ledgers as the sides append to them."""

from __future__ import annotations

import time

from .ledger import DEST_COLUMNS, DEST_LEDGER, SRC_COLUMNS, SRC_LEDGER, Ledger, dest_done, file_lock
from .progress import SRC_STATE, Progress, read_state
from .upload import Pending
from .volumes import staged_name


class Waiting:
    def __init__(self) -> None:
        self.src = Ledger(SRC_LEDGER, SRC_COLUMNS)
        self.dest = Ledger(DEST_LEDGER, DEST_COLUMNS)
        self.src_rows: dict[str, tuple] = {}
        self.dest_rows: dict[str, tuple] = {}
        self.pending: dict[str, Pending] = {}
        self.loaded = False
        self.stale = True  # rows or pending changed since the progress totals were summed
        self.handed_back = 0.0  # when keys were last taken out of the source ledger

    def load(self, create: bool) -> None:
        if create:
            self.dest.ensure()
        self.dest_rows = self.dest.load()
        self.src_rows = self.src.load()
        self._recompute()
        self.loaded = True

    def tail(self) -> bool:
        """Read what both ledgers gained; True when either was replaced (repair_ledger.py, or
        objects handed back): everything was read anew."""
        replaced_s, keys = self.src.tail(self.src_rows)
        replaced_d, _ = self.dest.tail(self.dest_rows)
        if replaced_s or replaced_d:
            self._recompute()
            return True
        for k in keys:
            r = self.src_rows[k]
            if not dest_done(r, self.dest_rows.get(k)):
                self.pending[k] = Pending(r, staged_name(k))
            else:
                self.settle(k)
        self.stale |= bool(keys)
        return False

    def _recompute(self) -> None:
        get = self.dest_rows.get
        self.pending = {k: Pending(r, staged_name(k)) for k, r in self.src_rows.items() if not dest_done(r, get(k))}
        self.stale = True

    def settle(self, key: str) -> None:
        """The key no longer waits for an upload (confirmed, or handed back to the source side)."""
        if self.pending.pop(key, None) is not None:
            self.stale = True

    def confirmed_names(self) -> set[str]:
        """Staged file names of the objects already confirmed at the destination."""
        return {staged_name(k) for k, r in self.src_rows.items() if dest_done(r, self.dest_rows.get(k))}

    def hand_back(self, keys: list[str]) -> None:
        """Take keys out of the source ledger (atomic rewrite under its lock) so the source side
        fetches them again; a running source side notices the new file and reloads it."""
        self.handed_back = time.time()
        with file_lock(self.src.lock_path):
            src_rows = self.src.load()
            for k in keys:
                src_rows.pop(k, None)
            self.src.write_locked(src_rows)
        for k in keys:
            self.settle(k)
        self.src.tail(self.src_rows)

    def update_progress(self, progress: Progress) -> None:
        """Totals: what the source side last listed (its state file), else what is ledgered.
        Summed only when something changed: a cycle comes every 0.25 s while the source stages."""
        if not self.stale:
            return
        self.stale = False
        ledgered_bytes = sum(r[0] for r in self.src_rows.values())
        pending_bytes = sum(p.row[0] for p in self.pending.values())
        src = read_state(SRC_STATE) or {}
        total = max(int(src.get("total_objects") or 0), len(self.src_rows))
        total_bytes = max(int(src.get("total_bytes") or 0), ledgered_bytes)
        progress.set_totals(total, total_bytes, len(self.src_rows) - len(self.pending), ledgered_bytes - pending_bytes)
        progress.write_state(force=True)
