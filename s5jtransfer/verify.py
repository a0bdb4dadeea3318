"""Source vs destination: sort every source object into moved / pending / missing / differ, and repair."""

from __future__ import annotations

import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from . import checksum, evidence, s3, shard
from .atomic import write_atomic
from .config import Config
from .ledger import (DEST_COLUMNS, DEST_LEDGER, SRC_COLUMNS, SRC_LEDGER, Ledger, decode_key, dest_knows_other, encode_key,
                     file_lock)
from .plan import is_done
from .volumes import discover, scan_all, staged_name

log = logging.getLogger("s5jtransfer.repair")
MISSING_FILE = "missing_keys.txt"
MOVED, PENDING, MISSING, DIFFER = "moved", "pending", "missing", "differ"


@dataclass
class Report:
    categories: dict[str, str] = field(default_factory=dict)  # key -> category
    sizes: dict[str, int] = field(default_factory=dict)
    extra_at_destination: int = 0
    by_etag: list[str] = field(default_factory=list)  # keys found to differ by their ETags alone (MD5s of both)

    def counts(self) -> Counter:
        return Counter(self.categories.values())

    def keys(self, *cats: str) -> list[str]:
        return sorted(k for k, c in self.categories.items() if c in cats)

    @property
    def complete(self) -> bool:
        return all(c == MOVED for c in self.categories.values())


def classify(src: dict[str, s3.Obj], dst: dict[str, s3.Obj], src_rows: dict[str, tuple],
             dest_rows: dict[str, tuple], staged: dict[str, int], to_move: frozenset[str] = frozenset(),
             opaque: tuple[bool, bool] = (False, False)) -> Report:
    """Pure: the category of every source object (staged: staged file name -> size; to_move: the
    keys the last comparison found missing or different, whose ledger rows it took away; opaque:
    whether the source's and the destination's ETags say nothing of the bytes, see etags_opaque)."""
    rep = Report()
    for key, o in src.items():
        rep.sizes[key] = o.size
        d = dst.get(key)
        cat = None
        if d is not None:
            if d.size != o.size:
                cat = DIFFER
            else:
                row = dest_rows.get(key)
                confirmed = row is not None and row[0] == o.size and row[3] == o.etag and row[1] == d.etag
                same = d.etag == o.etag
                comparable = checksum.etag_kind(o.etag) == checksum.etag_kind(d.etag) == checksum.MD5 \
                    and not any(opaque)
                # ETags that cannot be compared (multipart of other part sizes, SSE-KMS) count by
                # size only where nothing says otherwise (a bucket moved by other means). The
                # ledgers say otherwise when they know another version: the destination object
                # was confirmed with another ETag (replaced since), or for another source version,
                # or the source object was ledgered with another ETag (changed since); and so
                # does the last comparison, which found it so and took those rows away
                srow = src_rows.get(key)
                # (an empty ETag, as in the original scripts' two-column ledgers, knows nothing)
                other = dest_knows_other(row, d.etag, o.etag) or (srow is not None and srow[1] and srow[1] != o.etag) \
                    or key in to_move
                if confirmed or same:
                    cat = MOVED
                elif comparable or other:
                    cat = DIFFER
                    if comparable and not other:
                        rep.by_etag.append(key)
                else:
                    cat = MOVED
        if cat != MOVED:
            if is_done(o.size, o.etag, src_rows.get(key)) and staged.get(staged_name(key)) == o.size:
                cat = PENDING  # the current version is staged and ledgered: on its way
            elif cat is None:
                cat = MISSING
        rep.categories[key] = cat
    rep.extra_at_destination = sum(1 for k in dst if k not in src)
    return rep


PROBES = 3  # HeadObjects per side that may tell whether its ETags are MD5s


def classified(cfg: Config, src: dict[str, s3.Obj], dst: dict[str, s3.Obj], *rest) -> Report:
    """classify, told whether a side's ETags say nothing of the bytes when that decides anything:
    objects of the same size whose ETags (both of an MD5's form) differ are moved (by size, unless
    the ledgers know better) where a side's ETags are no MD5s (SSE-KMS...)."""
    rep = classify(src, dst, *rest)
    if not rep.by_etag:
        return rep
    opaque = (etags_opaque(cfg.source, cfg, rep.by_etag), etags_opaque(cfg.destination, cfg, rep.by_etag))
    return classify(src, dst, *rest, opaque=opaque) if any(opaque) else rep


def etags_opaque(side, cfg: Config, keys: list[str]) -> bool:
    """Whether a side's ETags say nothing of the bytes: its settings say so (etag_is_md5: false, or
    uploads encrypted with SSE-KMS), or a HeadObject of one of the first PROBES of `keys` shows an
    encryption whose ETags are no MD5s (evidence.OPAQUE_SSE). Headers only: nothing is read back."""
    if not side.etag_is_md5 or side.writes.sse in evidence.OPAQUE_SSE:
        return True
    if side.is_snow:
        return False  # a Snowball names no encryption
    try:
        client = s3.client(side, cfg.settings)
        for key in keys[:PROBES]:
            got = s3.head(side, client, key)
            if got is not None and got.sse in evidence.OPAQUE_SSE:
                log.info("the %s's ETags are no MD5s (%r is encrypted with %s): objects of the same size are "
                         "compared by the ledgers' record", side.name, key, got.sse)
                return True
    except Exception as exc:  # noqa: BLE001 - no answer: ETags are taken for what they look like
        log.debug("cannot tell whether the %s's ETags are MD5s: %s", side.name, s3.describe_error(exc, side))
    return False


def _to_move(missing_file: str) -> frozenset[str]:
    """The keys the last comparison wrote to move again (see classify)."""
    try:
        with open(missing_file, encoding="utf-8", errors="surrogateescape", newline="\n") as fh:
            return frozenset(decode_key(line[:-1] if line.endswith("\n") else line) for line in fh)
    except FileNotFoundError:
        return frozenset()


def list_side_at(side, cfg: Config) -> tuple[dict[str, s3.Obj], int]:
    """Every object of a side by key, listed through any of its endpoints that answers, and the
    index of that endpoint."""
    try:
        return s3.listing_any(side, cfg.settings, lambda objs: {o.key: o for o in objs})
    except Exception as exc:  # noqa: BLE001 - one line naming what failed
        raise s3.connect_error(exc, side) from None


def _list_side(side, cfg: Config) -> dict[str, s3.Obj]:
    return list_side_at(side, cfg)[0]


def compare_and_repair(cfg: Config, missing_file: str = MISSING_FILE, src: dict[str, s3.Obj] | None = None,
                       dst: dict[str, s3.Obj] | None = None) -> tuple[Report, dict]:
    """List both sides, classify every source object, and rewrite the ledgers so that what is
    missing or differs moves again. Returns the report and figures for a transfer report.
    src, dst: a side's listing already made (sync_mvol.py --once makes them while the
    destination side finishes, see supervisor.EarlyListings); a side without one is listed here."""
    volumes = discover(cfg, create=False)  # a volume missing from the config: said before any listing
    src_ledger = Ledger(SRC_LEDGER, SRC_COLUMNS)
    dest_ledger = Ledger(DEST_LEDGER, DEST_COLUMNS)
    src_rows, dest_rows, bad_lines, staged = _snapshot(src_ledger, dest_ledger, volumes)
    src, dst = _listings(cfg, src, dst)
    # a shard (shard.py) compares only the keys it owns, on both sides: the other shards' objects
    # are other hosts' work, neither missing here nor extra at the destination
    src, dst = shard.select_map(src, cfg.shard_spec), shard.select_map(dst, cfg.shard_spec)
    rep = classified(cfg, src, dst, src_rows, dest_rows, staged, _to_move(missing_file))
    keep_src = src_rows_to_keep(rep, src, src_rows)
    keep_dest = dest_rows_to_keep(rep, src, dst, dest_rows)
    _rewrite_ledgers(((src_ledger, src_rows, keep_src), (dest_ledger, dest_rows, keep_dest)), bad_lines)
    todo = rep.keys(MISSING, DIFFER)
    write_atomic(missing_file, (encode_key(k) + "\n" for k in todo), errors="surrogateescape")
    return rep, _figures(cfg, rep, src, keep_src, keep_dest, staged, missing_file, len(todo))


def _snapshot(src_ledger: Ledger, dest_ledger: Ledger, volumes) -> tuple[dict, dict, int, dict[str, int]]:
    """Both ledgers' rows, their count of bad lines, and the staged copies (name -> size)."""
    for led in (src_ledger, dest_ledger):
        if led.exists():
            led.ensure()  # a torn last line (a power cut mid-append) is cut, as a side's start does
    # The ledgers and the staged copies are read BEFORE the listings. Sides may be running (an
    # idle check, repair beside the syncs): an object staged now is pending in this snapshot,
    # and one whose staged copy is already gone was uploaded before the listings start, so it
    # is in them. Read after the listings, an object uploaded and freed meanwhile would look
    # missing and move twice.
    with file_lock(src_ledger.lock_path), file_lock(dest_ledger.lock_path):
        src_rows = src_ledger.load()
        dest_rows = dest_ledger.load()
        bad_lines = src_ledger.bad_lines + dest_ledger.bad_lines
        staged = {name: size for name, (_v, size) in scan_all(volumes).items()}
    return src_rows, dest_rows, bad_lines, staged


def _listings(cfg: Config, src: dict[str, s3.Obj] | None,
              dst: dict[str, s3.Obj] | None) -> tuple[dict[str, s3.Obj], dict[str, s3.Obj]]:
    """Both sides' listings: the ones given, the others listed here."""
    if src is not None and dst is not None:
        log.info("compared with the listings made while the destination side finished")
    elif src is not None:
        log.info("listing the destination %s", cfg.destination.url())
        dst = _list_side(cfg.destination, cfg)
    elif dst is not None:
        log.info("listing the source %s", cfg.source.url())
        src = _list_side(cfg.source, cfg)
    else:
        # Both sides are listed at once: the two listings cross different links.
        log.info("listing the source %s and the destination %s", cfg.source.url(), cfg.destination.url())
        with ThreadPoolExecutor(max_workers=2) as pool:
            futs = [pool.submit(_list_side, side, cfg) for side in (cfg.source, cfg.destination)]
            src, dst = (f.result() for f in futs)
    return src, dst


def src_rows_to_keep(rep: Report, src: dict[str, s3.Obj], src_rows: dict[str, tuple]) -> dict[str, tuple]:
    """Pure: the source ledger after a comparison. A pending object keeps its row; a moved one
    keeps a row that says it is done, or gets one from the listing."""
    keep_src = {}
    for key, cat in rep.categories.items():
        if cat == PENDING:
            keep_src[key] = src_rows[key]
        elif cat == MOVED:
            o = src[key]
            row = src_rows.get(key)
            keep_src[key] = row if is_done(o.size, o.etag, row) else (o.size, o.etag, "destination", "")
    return keep_src


def dest_rows_to_keep(rep: Report, src: dict[str, s3.Obj], dst: dict[str, s3.Obj],
                      dest_rows: dict[str, tuple]) -> dict[str, tuple]:
    """Pure: the destination ledger after a comparison."""
    # a row is kept only for a moved object and only as it is at the destination (a row edited
    # by hand, or left from another version, is dropped; the destination side confirms the
    # object there again)
    keep_dest = {k: r for k, r in dest_rows.items() if rep.categories.get(k) == MOVED
                 and r[0] == dst[k].size and (not r[1] or r[1] == dst[k].etag)}  # '': the original ledger
    # a moved object whose destination row was lost (a power cut between upload and ledger):
    # ledgered from the listing where the ETags prove the bytes, so the destination side
    # frees its staged copy instead of uploading it again
    for key, cat in rep.categories.items():
        d, o = dst.get(key), src[key]
        if cat == MOVED and key not in keep_dest and d is not None and d.etag == o.etag:
            kind = checksum.etag_kind(d.etag)
            if kind in (checksum.MD5, checksum.MULTIPART):
                keep_dest[key] = (d.size, d.etag, kind, o.etag)
    return keep_dest


def _rewrite_ledgers(plans: tuple[tuple[Ledger, dict, dict], ...], bad_lines: int) -> None:
    """Write each ledger as `keep` (ledger, rows read before the listings, keep), updated in place
    with what the sides wrote since."""
    src_ledger, dest_ledger = plans[0][0], plans[1][0]
    # Both ledgers are locked while they are read again and rewritten: a running sync waits for
    # the few milliseconds this takes, then reloads the new files. What the sides wrote while
    # the listings ran is newer than this comparison and stays as they wrote it (a row added or
    # changed is kept, a row they took out stays out).
    with file_lock(src_ledger.lock_path), file_lock(dest_ledger.lock_path):
        for led, before, keep in plans:
            now = led.load()
            for k in [k for k in keep if k in before and k not in now]:
                del keep[k]
            keep.update({k: r for k, r in now.items() if before.get(k) != r})
            if keep != now or bad_lines or not led.exists():
                if led is dest_ledger and not keep and not led.exists():
                    continue  # no destination ledger to write
                led.write_locked(keep)


def _figures(cfg: Config, rep: Report, src: dict[str, s3.Obj], keep_src: dict, keep_dest: dict,
             staged: dict[str, int], missing_file: str, to_move_again: int) -> dict:
    """The comparison's figures, for the transfer report."""
    counts = rep.counts()
    return {
        "shard": str(cfg.shard_spec) if cfg.shard_spec else None,
        "source_objects": len(src), "source_bytes": sum(o.size for o in src.values()),
        "categories": {c: counts[c] for c in (MOVED, PENDING, MISSING, DIFFER)},
        "moved_bytes": sum(rep.sizes[k] for k, c in rep.categories.items() if c == MOVED),
        "only_at_destination": rep.extra_at_destination,
        "verification": {
            "source": dict(Counter(r[2] or "size" for r in keep_src.values())),
            "destination": dict(Counter(r[2] or "size" for r in keep_dest.values())),
        },
        "ledgered": len(keep_src), "missing_file": missing_file, "to_move_again": to_move_again,
        "staged": len(staged),  # copies still on the volumes (sync_mvol.py --once then runs the sides)
    }


def repair(cfg: Config, missing_file: str = MISSING_FILE) -> int:
    rep, fig = compare_and_repair(cfg, missing_file)
    cats = fig["categories"]
    if fig["shard"]:
        print(f"Shard:                {fig['shard']} (only its keys are compared; --all-shards: the whole prefix)")
    print(f"Source objects:       {fig['source_objects']}")
    print(f"Moved (verified):     {cats[MOVED]}")
    print(f"Pending (staged):     {cats[PENDING]}")
    print(f"Missing:              {cats[MISSING]}")
    print(f"Differ:               {cats[DIFFER]}")
    print(f"Only at destination:  {fig['only_at_destination']}")
    print(f"Keys to move again written to {missing_file}: {fig['to_move_again']}")
    if rep.complete:
        print("COMPLETE: every source object is at the destination.")
        return 0
    print(f"INCOMPLETE: {SRC_LEDGER} now lists {fig['ledgered']} objects; run src_sync_mvol.py and "
          f"dest_sync_mvol.py (or sync_mvol.py --once) again, then repair_ledger.py.")
    return 1


# -- the whole prefix, whichever host moved what (--all-shards) ---------------------------------
ALL_SHARDS_FILE = "missing_keys_all_shards.txt"


def compare_all_shards(cfg: Config, count: int) -> dict:
    """Every source object under the prefix against the destination, by listings alone: the other
    hosts' ledgers are on the other hosts, so nothing here reads or changes a ledger. An object
    is moved when the destination holds it with the same size (and the same ETag where both are
    MD5s); it is missing or differs otherwise, and is named with the shard that owns it, whose
    host moves it when it runs again. Without the ledgers, an object still staged on its way
    counts as missing."""
    log.info("listing the source %s and the destination %s", cfg.source.url(), cfg.destination.url())
    with ThreadPoolExecutor(max_workers=2) as pool:
        futs = [pool.submit(_list_side, side, cfg) for side in (cfg.source, cfg.destination)]
        src, dst = (f.result() for f in futs)
    rep = classified(cfg, src, dst, {}, {}, {})
    shares = [{"shard": f"{k}/{count}", "objects": 0, "bytes": 0, "moved": 0, "missing": 0, "differ": 0}
              for k in range(count)]
    todo = []
    for key, cat in rep.categories.items():
        k = shard.shard_of(key, count)
        sh = shares[k]
        sh["objects"] += 1
        sh["bytes"] += rep.sizes[key]
        sh[cat if cat in (MOVED, DIFFER) else MISSING] += 1
        if cat != MOVED:
            todo.append({"key": key, "shard": sh["shard"], "category": cat, "size": rep.sizes[key]})
    todo.sort(key=lambda t: (int(t["shard"].split("/")[0]), t["key"]))
    for sh in shares:
        sh["complete"] = sh["moved"] == sh["objects"]
    return {"shards": count, "complete": rep.complete, "source_objects": len(src),
            "source_bytes": sum(o.size for o in src.values()), "moved": rep.counts()[MOVED],
            "only_at_destination": rep.extra_at_destination, "per_shard": shares, "not_moved": todo}


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
    if len(res["not_moved"]) > limit:
        lines.append(f"  ... and {len(res['not_moved']) - limit} more")
    if res["complete"]:
        lines.append("COMPLETE: every source object is at the destination.")
    else:
        waiting = [sh["shard"] for sh in res["per_shard"] if not sh["complete"]]
        lines.append(f"INCOMPLETE: {len(res['not_moved'])} objects not at the destination; run shard(s) "
                     f"{', '.join(waiting)} again (sync_mvol.py --once --shard K/N on their hosts)")
    return "\n".join(lines)


def repair_all_shards(cfg: Config, count: int, missing_file: str = ALL_SHARDS_FILE) -> int:
    """repair_ledger.py --all-shards: the whole-prefix comparison, printed, and every object not
    moved written to missing_file as `K/N<TAB>key` lines. Changes no ledger (see compare_all_shards)."""
    res = compare_all_shards(cfg, count)
    write_atomic(missing_file, (f"{t['shard']}\t{encode_key(t['key'])}\n" for t in res["not_moved"]),
                 errors="surrogateescape")
    print(render_all_shards(res))
    print(f"Objects not moved, with their shards, written to {missing_file}: {len(res['not_moved'])}")
    return 0 if res["complete"] else 1
