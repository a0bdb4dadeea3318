"""The comparison of source and destination at any size (repair_ledger.py, sync_mvol.py's verdict).

Both listings stream into the ledger index (temporary tables of this process's connection), are
joined with the ledgers by key in SQLite, and each source object is sorted by verify.category
(moved / pending / missing / differ). Nothing is held per object in memory: the keys not moved go
to missing_keys.txt and a temporary table, the ledger changes to another, applied at the end
through the index (index.rewrite).

The ledgers and the staged copies are read BEFORE the listings, in one read transaction of the
index that holds while the listings run. Sides may be running (an idle check, repair beside the
syncs): an object staged now is pending in this snapshot, and one whose staged copy is already
gone was uploaded before the listings start, so it is in them. Read after the listings, an object
uploaded and freed meanwhile would look missing and move twice. The changes are applied only to
rows the sides did not change meanwhile: what they wrote while the listings ran stays.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from . import checksum, s3, shard, verify
from .config import Config
from .index import BATCH, Index, Work
from .ledger import SRC_LEDGER, decode_key, encode_key, file_lock
from .s3 import Obj
from .volumes import discover, scan_all

log = logging.getLogger("s5jtransfer.repair")
LEFT_SAMPLE = 1000  # keys not moved that a summary can name (all of them are in the missing file)
_CHG = ("CREATE TEMP TABLE chg (tbl TEXT NOT NULL, key TEXT NOT NULL, op TEXT NOT NULL, o1, o2, o3, o4, "
        "n1, n2, n3, n4)")
_COLS = {"src": ("size", "etag", "verified", "md5"), "dest": ("size", "etag", "verified", "source_etag")}


class Summary:
    """What a comparison found: counts and bytes; the keys not moved are kept in the index
    connection's temporary table `left` (key, category) for the caller's questions."""

    def __init__(self, index: Index) -> None:
        self.index = index
        self.counts: Counter = Counter()
        self.moved_bytes = 0
        self.source_objects = self.source_bytes = 0
        self.extra_at_destination = 0

    @property
    def complete(self) -> bool:
        return self.counts[verify.MOVED] == self.source_objects

    def left(self, limit: int | None = None) -> list[str]:
        """Keys not moved (pending, missing, differ), in key order."""
        sql = "SELECT key FROM temp.left ORDER BY key" + (f" LIMIT {int(limit)}" if limit else "")
        with self.index.lock:
            return [k for k, in self.index.db.execute(sql)]

    def left_outside(self, keys) -> int:
        """How many keys not moved are not among these (objects the sides set aside:
        supervisor.only_set_aside_left)."""
        with self.index.lock:
            db = self.index.db
            db.execute("CREATE TEMP TABLE IF NOT EXISTS aside (key TEXT PRIMARY KEY)")
            db.execute("DELETE FROM temp.aside")
            db.executemany("INSERT OR IGNORE INTO temp.aside VALUES (?)", ((k,) for k in keys if _text(k)))
            return db.execute("SELECT count(*) FROM temp.left WHERE key NOT IN (SELECT key FROM temp.aside)"
                              ).fetchone()[0]


def list_into(index: Index, name: str, side, cfg: Config) -> tuple[int, int]:
    """A side listed (through any endpoint that answers; a shard's keys only: the other shards'
    objects are other hosts' work) into the index's temporary table `name`: (objects, bytes)."""
    keep = None if cfg.shard_spec is None else (lambda key: shard.owns(key, cfg.shard_spec))
    try:
        return s3.listing_any(side, cfg.settings, lambda objs: index.load_listing(name, objs, keep))[0]
    except Exception as exc:  # noqa: BLE001 - one line naming what failed
        raise s3.connect_error(exc, side) from None


def compare(cfg: Config, index: Index, missing_file: str = verify.MISSING_FILE,
            source_listed: bool = False) -> tuple[Summary, dict]:
    """List both sides (the source already, into `listed_src`, when source_listed: sync_mvol.py
    --once lists it while the destination side finishes), sort every source object, and rewrite
    the ledgers so that what is missing or differs moves again. Returns the summary and figures
    for a transfer report."""
    volumes = discover(cfg, create=False)  # a volume missing from the config: said before any listing
    db = index.db
    index.scratch(*_loaded(source_listed))  # attached before the snapshot's transaction (ATTACH is refused in one)
    with index.lock:
        staged = _snapshot(index, volumes)  # and a read transaction, held until the changes are known
    try:
        _listings(cfg, index, source_listed)  # its threads take the connection a batch at a time
        with index.lock:
            _load_to_move(index, missing_file)
            summary = _sort(index, staged, Opaque(cfg, index), missing_file)
            _gone(index)
    finally:
        with index.lock:
            if db.in_transaction:
                db.execute("COMMIT")
    changed = _apply(index)
    _hand_back(index)
    index.drop_listing("listed_src", "listed_dst")
    return summary, _figures(cfg, index, summary, staged, missing_file, changed)


def _snapshot(index: Index, volumes) -> dict[str, int]:
    """Both ledgers absorbed, the staged copies (name -> size) read, under both ledgers' locks; and
    a read transaction begun on the index, so that the rows stay as they are now while the
    listings run (the sides go on writing the CSVs, and other processes the index)."""
    led = index.ledgers
    for ledger in led.values():
        if ledger.exists():
            ledger.ensure()  # a torn last line (a power cut mid-append) is cut, as a side's start does
    with file_lock(led["src"].lock_path), file_lock(led["dest"].lock_path):
        index.refresh()
        staged = {name: size for name, (_v, size) in scan_all(volumes).items()}
        index.db.execute("BEGIN")
        index.db.execute("SELECT count(*) FROM totals").fetchone()  # the snapshot starts here
    return staged


def _loaded(source_listed: bool) -> tuple[str, ...]:
    """The listings a comparison loads (the source's not when already listed)."""
    return ("listed_dst",) if source_listed else ("listed_dst", "listed_src")


def _listings(cfg: Config, index: Index, source_listed: bool) -> None:
    """Both sides into the index (the two listings cross different links: at once)."""
    sides = [(name, cfg.destination if name == "listed_dst" else cfg.source) for name in _loaded(source_listed)]
    if source_listed:
        log.info("compared with the source listing made while the destination side finished")
    log.info("listing %s", " and ".join(f"the {side.name} {side.url()}" for _n, side in sides))
    with ThreadPoolExecutor(max_workers=2) as pool:
        for f in [pool.submit(list_into, index, name, side, cfg) for name, side in sides]:
            f.result()


def _load_to_move(index: Index, missing_file: str) -> None:
    """The keys the last comparison wrote to move again (verify.category) into temp.to_move."""
    db = index.db
    db.execute("DROP TABLE IF EXISTS temp.to_move")
    db.execute("CREATE TEMP TABLE to_move (key TEXT PRIMARY KEY)")
    try:
        with open(missing_file, encoding="utf-8", errors="surrogateescape", newline="\n") as fh:
            keys = ((decode_key(line[:-1] if line.endswith("\n") else line),) for line in fh)
            db.executemany("INSERT OR IGNORE INTO temp.to_move VALUES (?)", (k for k in keys if _text(k[0])))
    except FileNotFoundError:
        pass


class Opaque:
    """Whether each side's ETags say nothing of the bytes (verify.etags_opaque), asked of a few
    objects of the same size whose ETags (both of an MD5's form) differ, when the first such object
    comes (the answer matters to no other: verify.category); until then, and where none comes,
    nothing is asked."""

    def __init__(self, cfg: Config, index: Index) -> None:
        self.cfg, self.index = cfg, index
        self._answer: tuple[bool, bool] | None = None

    def of(self, size: int, etag: str, dsize: int | None, detag: str | None) -> tuple[bool, bool]:
        if dsize != size or detag == etag or checksum.etag_kind(etag) != checksum.MD5 or \
                checksum.etag_kind(detag) != checksum.MD5:
            return False, False  # no answer changes this object's category
        if self._answer is None:
            md5 = "length({0}) = 32 AND {0} NOT GLOB '*[^0-9a-f]*'"
            keys = [k for k, in self.index.db.execute(
                "SELECT l.key FROM listed_src l JOIN listed_dst d ON d.key = l.key WHERE l.size = d.size "
                f"AND l.etag != d.etag AND {md5.format('l.etag')} AND {md5.format('d.etag')} LIMIT {verify.PROBES}")]
            cfg = self.cfg
            self._answer = (verify.etags_opaque(cfg.source, cfg, keys), verify.etags_opaque(cfg.destination, cfg, keys))
        return self._answer


# Each source object with what the destination, the ledgers and the last comparison say of it; and
# whether it is plainly moved, with nothing to change (`fast`): at the destination with its size,
# confirmed there for its ETag, and ledgered as it is (verify.category, src_row_kept and
# dest_row_kept say so of it, without a call)
_JOIN = ("SELECT l.key, l.size, l.etag, d.size, d.etag, s.size, s.etag, s.verified, s.md5, r.size, r.etag, "
         "r.verified, r.source_etag, m.key IS NOT NULL, (d.size = l.size AND r.size = l.size AND r.source_etag = "
         "l.etag AND r.etag = d.etag AND s.size = l.size AND (s.etag = '' OR l.etag = '' OR s.etag = l.etag)) "
         "FROM listed_src l LEFT JOIN listed_dst d ON d.key = l.key LEFT JOIN src s ON s.key = l.key "
         "LEFT JOIN dest r ON r.key = l.key LEFT JOIN temp.to_move m ON m.key = l.key GROUP BY l.key ORDER BY l.key")


def _sort(index: Index, staged: dict[str, int], opaque: Opaque, missing_file: str) -> Summary:
    """Every source object, in key order, sorted (verify.category); the keys not moved into
    temp.left and (missing, differ) the missing file; the ledger changes into temp.chg."""
    db = index.db
    for table in ("left", "chg"):
        db.execute(f"DROP TABLE IF EXISTS temp.{table}")
    db.execute("CREATE TEMP TABLE left (key TEXT PRIMARY KEY, category TEXT)")
    db.execute(_CHG)
    summary = Summary(index)
    cur = db.execute(_JOIN)
    tmp = missing_file + ".tmp"
    plain = plain_bytes = 0
    with open(tmp, "w", encoding="utf-8", errors="surrogateescape", newline="\n") as out:
        while rows := cur.fetchmany(BATCH):
            left, chg = [], []
            for row in rows:
                if row[14]:
                    plain += 1
                    plain_bytes += row[1]
                    continue
                cat = _one(row, staged, opaque, summary, chg)
                if cat != verify.MOVED:
                    left.append((row[0], cat))
                    if cat != verify.PENDING:
                        out.write(encode_key(row[0]) + "\n")
            db.executemany("INSERT OR REPLACE INTO temp.left VALUES (?, ?)", left)
            db.executemany("INSERT INTO temp.chg VALUES (?,?,?,?,?,?,?,?,?,?,?)", chg)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, missing_file)
    summary.counts[verify.MOVED] += plain
    summary.source_objects += plain
    summary.source_bytes += plain_bytes
    summary.moved_bytes += plain_bytes
    summary.extra_at_destination = db.execute(
        "SELECT count(DISTINCT d.key) FROM listed_dst d LEFT JOIN listed_src l ON l.key = d.key "
        "WHERE l.key IS NULL").fetchone()[0]
    return summary


def _one(row: tuple, staged: dict[str, int], opaque: Opaque, summary: Summary, chg: list) -> str:
    """One source object of the join: its category, counted; its ledger changes into chg."""
    key, size, etag, dsize, detag = row[:5]
    srow = tuple(row[5:9]) if row[5] is not None else None
    drow = tuple(row[9:13]) if row[9] is not None else None
    o = Obj(key, size, etag)
    d = Obj(key, dsize, detag) if dsize is not None else None
    cat = verify.category(o, d, srow, drow, staged, bool(row[13]), opaque.of(size, etag, dsize, detag))[0]
    summary.counts[cat] += 1
    summary.source_objects += 1
    summary.source_bytes += size
    if cat == verify.MOVED:
        summary.moved_bytes += size
    for tbl, old, new in (("src", srow, verify.src_row_kept(cat, o, srow)),
                          ("dest", drow, verify.dest_row_kept(cat, o, d, drow))):
        if new != old:
            chg.append((tbl, key, "put" if new is not None else "del", *(old or (None,) * 4),
                        *(new or (None,) * 4)))
    return cat


def _gone(index: Index) -> None:
    """The rows of objects no longer at the source (not in its listing): out of both ledgers."""
    for tbl in ("src", "dest"):
        c = ", ".join(f"t.{x}" for x in _COLS[tbl])
        index.db.execute(f"INSERT INTO temp.chg SELECT '{tbl}', t.key, 'del', {c}, NULL, NULL, NULL, NULL FROM {tbl} t "
                         "WHERE NOT EXISTS (SELECT 1 FROM listed_src l WHERE l.key = t.key)")


def _apply(index: Index) -> int:
    """The changes, made only to rows the sides did not change since the snapshot, and each ledger
    rewritten through the index when it changed (or holds lines that are no rows)."""
    changed = 0
    for tbl in ("src", "dest"):
        if not index.db.execute("SELECT EXISTS (SELECT 1 FROM temp.chg WHERE tbl = ?)", (tbl,)).fetchone()[0] and \
                not index.bad_lines(tbl):
            continue
        count = [0]
        index.rewrite(tbl, lambda db, tbl=tbl: count.__setitem__(0, _changes(db, tbl)))
        changed += count[0]
    return changed


def _hand_back(index: Index) -> None:
    """What is missing or differs, into the source side's work (Work.hand_back): a running source
    side, woken by its ledger's replacement, fetches it again without listing the source again."""
    Work(index).hand_back_selected("SELECT l.key, l.size, l.etag FROM temp.left t JOIN listed_src l ON "
                                   "l.key = t.key WHERE t.category IN (?, ?)", (verify.MISSING, verify.DIFFER))


def _changes(db, tbl: str) -> int:
    """temp.chg's changes to one table, each where the row is still as the snapshot read it."""
    cols = _COLS[tbl]
    same = " AND ".join(f"c.o{i} IS t.{x}" for i, x in enumerate(cols, 1))
    sets = ", ".join(f"{x} = excluded.{x}" for x in cols)
    before = db.total_changes
    db.execute(f"DELETE FROM {tbl} WHERE key IN (SELECT c.key FROM temp.chg c JOIN {tbl} t ON t.key = c.key "
               f"WHERE c.tbl = ? AND c.op = 'del' AND {same})", (tbl,))
    db.execute(f"INSERT INTO {tbl} SELECT c.key, c.n1, c.n2, c.n3, c.n4 FROM temp.chg c LEFT JOIN {tbl} t ON "
               f"t.key = c.key WHERE c.tbl = ? AND c.op = 'put' AND {same} ON CONFLICT(key) DO UPDATE SET {sets}",
               (tbl,))
    return db.total_changes - before


def _figures(cfg: Config, index: Index, summary: Summary, staged: dict, missing_file: str, changed: int) -> dict:
    """The comparison's figures, for the transfer report."""
    db, cats = index.db, summary.counts
    with index.lock:
        levels = {t: {v or "size": n for v, n in db.execute(f"SELECT verified, count(*) FROM {t} GROUP BY verified")}
                  for t in ("src", "dest")}
        to_move = db.execute("SELECT count(*) FROM temp.left WHERE category != ?", (verify.PENDING,)).fetchone()[0]
    return {
        "shard": str(cfg.shard_spec) if cfg.shard_spec else None,
        "source_objects": summary.source_objects, "source_bytes": summary.source_bytes,
        "categories": {c: cats[c] for c in (verify.MOVED, verify.PENDING, verify.MISSING, verify.DIFFER)},
        "moved_bytes": summary.moved_bytes,
        "only_at_destination": summary.extra_at_destination,
        "verification": {"source": levels["src"], "destination": levels["dest"]},
        "ledgered": index.totals().src_objects, "missing_file": missing_file, "to_move_again": to_move,
        "staged": len(staged),  # copies still on the volumes (sync_mvol.py --once then runs the sides)
        "ledger_rows_changed": changed,
    }


def compare_and_repair(cfg: Config, missing_file: str = verify.MISSING_FILE, index=None, source_listed: bool = False):
    """List both sides, sort every source object, and rewrite the ledgers so that what is missing
    or differs moves again (compare.compare, through the working folder's ledger index, or the one
    given: sync_mvol.py lists the source into it while the destination side finishes). Returns
    (summary, figures for a transfer report)."""
    return compare(cfg, index or Index(), missing_file, source_listed)


def repair(cfg: Config, missing_file: str = verify.MISSING_FILE) -> int:
    summary, fig = compare_and_repair(cfg, missing_file)
    cats = fig["categories"]
    if fig["shard"]:
        print(f"Shard:                {fig['shard']} (only its keys are compared; --all-shards: the whole prefix)")
    print(f"Source objects:       {fig['source_objects']}")
    print(f"Moved (verified):     {cats[verify.MOVED]}")
    print(f"Pending (staged):     {cats[verify.PENDING]}")
    print(f"Missing:              {cats[verify.MISSING]}")
    print(f"Differ:               {cats[verify.DIFFER]}")
    print(f"Only at destination:  {fig['only_at_destination']}")
    print(f"Keys to move again written to {missing_file}: {fig['to_move_again']}")
    if summary.complete:
        print("COMPLETE: every source object is at the destination.")
        return 0
    print(f"INCOMPLETE: {SRC_LEDGER} now lists {fig['ledgered']} objects; run src_sync_mvol.py and "
          f"dest_sync_mvol.py (or sync_mvol.py --once) again, then repair_ledger.py.")
    return 1


# -- the whole prefix, whichever host moved what (--all-shards) ---------------------------------
ALL_SHARDS_FILE = "missing_keys_all_shards.txt"
NOT_MOVED_SHOWN = 1000  # objects not moved that the result names (all of them are in the file)


def compare_all_shards(cfg: Config, count: int, missing_file: str | None = None) -> dict:
    """Every source object under the prefix against the destination, by listings alone: the other
    hosts' ledgers are on the other hosts, so nothing here reads or changes a ledger. An object
    is moved when the destination holds it with the same size (and the same ETag where both are
    MD5s); it is missing or differs otherwise, and is named with the shard that owns it, whose
    host moves it when it runs again. Without the ledgers, an object still staged on its way
    counts as missing. Both listings stream through an index of their own (a temporary folder);
    every object not moved is written to missing_file (`K/N<TAB>key` lines), the first
    NOT_MOVED_SHOWN named in the result."""
    index = Index.elsewhere()
    unsharded = dataclasses.replace(cfg, shard_spec=None)
    _listings(unsharded, index, False)
    opaque = Opaque(unsharded, index)
    shares = [{"shard": f"{k}/{count}", "objects": 0, "bytes": 0, "moved": 0, "missing": 0, "differ": 0}
              for k in range(count)]
    shown, not_moved, moved = [], 0, 0
    out = open(missing_file, "w", encoding="utf-8", errors="surrogateescape") if missing_file else None
    try:
        cur = index.db.execute("SELECT l.key, l.size, l.etag, d.size, d.etag FROM listed_src l LEFT JOIN "
                               "listed_dst d ON d.key = l.key GROUP BY l.key ORDER BY l.key")
        while rows := cur.fetchmany(BATCH):
            for key, size, etag, dsize, detag in rows:
                o, d = s3.Obj(key, size, etag), (s3.Obj(key, dsize, detag) if dsize is not None else None)
                cat = verify.category(o, d, None, None, {}, False, opaque.of(size, etag, dsize, detag))[0]
                sh = shares[shard.shard_of(key, count)]
                sh["objects"] += 1
                sh["bytes"] += size
                sh[cat if cat in (verify.MOVED, verify.DIFFER) else verify.MISSING] += 1
                moved += cat == verify.MOVED
                if cat != verify.MOVED:
                    not_moved += 1
                    if out:
                        out.write(f"{sh['shard']}\t{encode_key(key)}\n")
                    if len(shown) < NOT_MOVED_SHOWN:
                        shown.append({"key": key, "shard": sh["shard"], "category": cat, "size": size})
        extra = index.db.execute("SELECT count(DISTINCT d.key) FROM listed_dst d LEFT JOIN listed_src l "
                                 "ON l.key = d.key WHERE l.key IS NULL").fetchone()[0]
    finally:
        if out:
            out.close()
        index.remove()
    shown.sort(key=lambda t: (int(t["shard"].split("/")[0]), t["key"]))
    for sh in shares:
        sh["complete"] = sh["moved"] == sh["objects"]
    objects = sum(sh["objects"] for sh in shares)
    return {"shards": count, "complete": moved == objects, "source_objects": objects,
            "source_bytes": sum(sh["bytes"] for sh in shares), "moved": moved,
            "only_at_destination": extra, "per_shard": shares, "not_moved": shown, "not_moved_count": not_moved}


def render_all_shards(res: dict, limit: int = 20) -> str:
    lines = [f"Whole source prefix over {res['shards']} shards (listings only; no ledger read):",
             f"Source objects:       {res['source_objects']} ({res['source_bytes']} bytes)",
             f"Moved (verified):     {res['moved']}",
             f"Only at destination:  {res['only_at_destination']}"]
    for sh in res["per_shard"]:
        lines.append(f"  shard {sh['shard']:>7}: {sh['moved']}/{sh['objects']} moved, {sh['missing']} missing, "
                     f"{sh['differ']} differ" + ("  done" if sh["complete"] else ""))
    for t in res["not_moved"][:limit]:
        lines.append(f"  {t['category']:<8} {t['shard']:>7}  {t['key']!r}")
    if res["not_moved_count"] > limit:
        lines.append(f"  ... and {res['not_moved_count'] - limit} more")
    if res["complete"]:
        lines.append("COMPLETE: every source object is at the destination.")
    else:
        waiting = [sh["shard"] for sh in res["per_shard"] if not sh["complete"]]
        lines.append(f"INCOMPLETE: {res['not_moved_count']} objects not at the destination; run shard(s) "
                     f"{', '.join(waiting)} again (sync_mvol.py --once --shard K/N on their hosts)")
    return "\n".join(lines)


def repair_all_shards(cfg: Config, count: int, missing_file: str = ALL_SHARDS_FILE) -> int:
    """repair_ledger.py --all-shards: the whole-prefix comparison, printed, and every object not
    moved written to missing_file as `K/N<TAB>key` lines. Changes no ledger (see compare_all_shards)."""
    tmp = missing_file + ".tmp"
    res = compare_all_shards(cfg, count, tmp)
    os.replace(tmp, missing_file)
    print(render_all_shards(res))
    print(f"Objects not moved, with their shards, written to {missing_file}: {res['not_moved_count']}")
    return 0 if res["complete"] else 1


def _text(key: str) -> bool:
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
