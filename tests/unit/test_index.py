"""Unit tests for index.py: the SQLite index agrees with the CSV ledgers (Ledger.load, plan.todo,
ledger.dest_done are the oracles), follows appends and rewrites, and survives damage."""

from __future__ import annotations

import os
import random

import pytest

from s5jtransfer import plan
from s5jtransfer.index import INDEX_FILE, Index, Work
from s5jtransfer.ledger import DEST_COLUMNS, DEST_LEDGER, SRC_COLUMNS, SRC_LEDGER, Ledger, dest_done
from s5jtransfer.s3 import Obj

KEYS = ["plain.bin", "with,comma", 'double"quote', "line\nfeed", "cr\rkey", "urlenc:literal", "ünï/日本.bin",
        " lead", "a/../b", "x" * 900]


def ledgers(tmp_path) -> tuple[Ledger, Ledger]:
    src, dst = Ledger(str(tmp_path / SRC_LEDGER), SRC_COLUMNS), Ledger(str(tmp_path / DEST_LEDGER), DEST_COLUMNS)
    src.ensure()
    dst.ensure()
    return src, dst


def oracle_totals(src: Ledger, dst: Ledger) -> tuple:
    s, d = src.load(), dst.load()
    done = [k for k, r in s.items() if dest_done(r, d.get(k))]
    return len(s), sum(r[0] for r in s.values()), len(d), len(done), sum(s[k][0] for k in done)


def test_appended_rows_are_absorbed_and_the_last_of_a_key_wins(tmp_path):
    src, dst = ledgers(tmp_path)
    src.append([(k, i, f"e{i}", "md5", f"m{i}") for i, k in enumerate(KEYS)])
    idx = Index(str(tmp_path))
    idx.refresh()
    assert idx.row("src", "line\nfeed") == (3, "e3", "md5", "m3")
    src.append([("plain.bin", 99, "e99", "size", "m99")])
    dst.append([("plain.bin", 99, "d", "md5", "e99"), ("with,comma", 1, "d", "md5", "OTHER")])
    idx.refresh()
    assert idx.row("src", "plain.bin") == (99, "e99", "size", "m99")
    assert idx.row("dest", "with,comma") == (1, "d", "md5", "OTHER")
    assert tuple(idx.totals()) == oracle_totals(src, dst)
    assert idx.totals().done_objects == 1  # plain.bin's version; with,comma was uploaded from another
    assert [r[0] for r in idx.rows("src")] == sorted(src.load())


def test_totals_follow_every_change_as_the_ledgers_oracle_says(tmp_path):
    rng = random.Random(5)
    src, dst = ledgers(tmp_path)
    idx = Index(str(tmp_path))
    for _ in range(40):
        k = f"k{rng.randrange(30)}"
        size, etag = rng.randrange(3), rng.choice(["a", "b", ""])
        if rng.random() < 0.5:
            src.append([(k, size, etag, "md5", "")])
        else:
            dst.append([(k, size, "x", "md5", rng.choice(["a", "b", ""]))])
        if rng.random() < 0.3:
            idx.refresh()
            assert tuple(idx.totals()) == oracle_totals(src, dst)
    idx.refresh()
    assert tuple(idx.totals()) == oracle_totals(src, dst)
    got = [(r[0], r[1:]) for r in idx.unconfirmed()]
    d = dst.load()
    assert got == sorted((k, r) for k, r in src.load().items() if not dest_done(r, d.get(k)))


def test_a_ledger_replaced_behind_its_back_is_read_again_whole(tmp_path):
    src, _ = ledgers(tmp_path)
    src.append([("a", 1, "e", "md5", ""), ("b", 2, "e", "md5", "")])
    idx = Index(str(tmp_path))
    idx.refresh()
    other = tmp_path / "copy.csv"
    other.write_text("Key,Size\nb,2\nc,3\n")  # the original two-column ledger, put in place by hand
    os.replace(other, tmp_path / SRC_LEDGER)
    idx.refresh()
    assert idx.row("src", "a") is None and idx.row("src", "c") == (3, "", "", "")
    assert idx.totals().src_objects == 2 and "src" in idx.rebuilt
    os.remove(tmp_path / SRC_LEDGER)
    idx.refresh()
    assert idx.totals().src_objects == 0


def test_a_ledger_edited_in_place_is_read_again_whole_and_one_only_appended_to_or_touched_is_not(tmp_path):
    """An operator's edit that keeps the inode and the length (Python's write_text, an editor
    writing in place): the row changed is seen. Appends, and a torn last line cut away (a side's
    start after a power cut), are absorbed without reading the ledger again."""
    src, _ = ledgers(tmp_path)
    src.append([("a", 501, "e", "md5", ""), ("b", 2, "e", "md5", "")])
    idx = Index(str(tmp_path))
    idx.refresh()
    idx.rebuilt.clear()  # a new index reads both whole
    path = tmp_path / SRC_LEDGER
    ino = path.stat().st_ino
    path.write_text(path.read_text().replace("a,501,", "a,502,"))
    assert path.stat().st_ino == ino
    idx.refresh()
    assert idx.row("src", "a") == (502, "e", "md5", "") and idx.rebuilt == {"src"}
    idx.rebuilt.clear()
    src.append([("c", 3, "e", "md5", "")])
    with open(path, "ab") as fh:
        fh.write(b"d,4,e,md")  # a torn line: a power cut mid-append
    idx.refresh()
    src.ensure()  # cuts it
    idx.refresh()
    assert idx.row("src", "c") == (3, "e", "md5", "") and idx.row("src", "d") is None
    assert idx.rebuilt == set() and idx.totals().src_objects == 3


def test_a_rewrite_through_the_index_needs_no_rebuild_anywhere(tmp_path):
    src, _ = ledgers(tmp_path)
    src.append([(k, i, "e", "md5", "") for i, k in enumerate(KEYS)])
    one, two = Index(str(tmp_path)), Index(str(tmp_path))
    one.refresh()
    two.refresh()
    one.rewrite("src", lambda db: db.execute("DELETE FROM src WHERE key IN (?, ?)", ("plain.bin", "line\nfeed")))
    assert sorted(src.load()) == sorted(set(KEYS) - {"plain.bin", "line\nfeed"})  # the CSV, from the table
    src.append([("new", 5, "e", "md5", "")])
    two.refresh()
    assert two.rebuilt == set() and two.row("src", "plain.bin") is None and two.row("src", "new") is not None
    assert (tmp_path / SRC_LEDGER).read_bytes().count(b"\n") == len(KEYS) - 2 + 1 + 1  # one line per object


def test_damaged_lines_are_skipped_and_a_damaged_index_is_built_again(tmp_path, caplog):
    src, _ = ledgers(tmp_path)
    with open(tmp_path / SRC_LEDGER, "ab") as fh:
        fh.write(b"good,1,e,md5,\nbad\xff\xfekey,2,e,md5,\nnot a row\n")
    idx = Index(str(tmp_path))
    idx.refresh()
    assert idx.row("src", "good") == (1, "e", "md5", "") and idx.totals().src_objects == 1
    idx.close()
    (tmp_path / INDEX_FILE).write_bytes(b"this is no database" * 100)
    for suffix in ("-wal", "-shm"):
        if os.path.exists(str(tmp_path / INDEX_FILE) + suffix):
            os.remove(str(tmp_path / INDEX_FILE) + suffix)
    with caplog.at_level("WARNING"):
        again = Index(str(tmp_path))
        again.refresh()
    assert again.row("src", "good") is not None and "built again from the ledgers" in caplog.text


def test_a_pass_leaves_exactly_what_plan_todo_leaves_largest_first(tmp_path):
    """The oracle: plan.todo over the same listing and Ledger.load's rows."""
    rng = random.Random(11)
    src, _ = ledgers(tmp_path)
    rows = [(f"k{i:03d}", rng.randrange(50), rng.choice(["e1", "e2", ""]), "md5", "") for i in range(200)]
    src.append(rows)
    with open(tmp_path / SRC_LEDGER, "a") as fh:
        fh.write("orig-row,7\n")  # a row of the original two-column ledger: its size decides
    listing = [Obj(f"k{i:03d}", rng.randrange(50), rng.choice(["e1", "e2", ""]), rng.choice(["", "CRC64NVME"]))
               for i in range(0, 300, 2)] + [Obj("orig-row", 7, "zz"), Obj("orig-row2", 1, "a")]
    idx = Index(str(tmp_path))
    idx.refresh()
    work = Work(idx)
    counts = work.new_pass(iter(listing))
    want = plan.todo([plan.Item(o.key, o.size, o.etag) for o in listing], src.load())
    got = work.todo_head(10_000, lambda k: False)
    assert [(k, s, e) for k, s, e, _c in got] == [(i.key, i.size, i.etag) for i in want]
    assert counts == (len(listing), sum(o.size for o in listing), len(want), sum(i.size for i in want))
    assert {k: c for k, _s, _e, c in got} == {o.key: o.checksum for o in listing if o.key in {i.key for i in want}}


def test_the_work_of_a_pass_is_taken_skipped_dropped_and_handed_back(tmp_path):
    ledgers(tmp_path)
    work = Work(Index(str(tmp_path)))
    work.index.refresh()
    work.new_pass(iter([Obj("big", 30, "e"), Obj("mid", 20, "e"), Obj("small", 10, "e")]), keep=lambda k: k != "mid")
    assert [r[0] for r in work.todo_head(5, lambda k: False)] == ["big", "small"]
    assert [r[0] for r in work.todo_head(5, lambda k: k == "big")] == ["small"]
    work.todo_drop(["big"])
    work.hand_back([("again", 5, "e"), ("small", 10, "e")])  # one already there is not taken twice
    assert [r[0] for r in work.todo_head(5, lambda k: False)] == ["small", "again"] and work.todo_left() == 2


def test_a_replaced_source_ledger_ends_the_pass(tmp_path):
    src, _ = ledgers(tmp_path)
    idx = Index(str(tmp_path))
    idx.refresh()
    work = Work(idx)
    work.new_pass(iter([Obj("a", 1, "e")]))
    assert work.todo_left() == 1
    other = tmp_path / "x.csv"
    other.write_text("Key,Size,ETag,Verified,MD5\n")
    os.replace(other, tmp_path / SRC_LEDGER)
    idx.refresh()
    assert work.todo_left() == 0  # its work was planned against another ledger: list again


@pytest.mark.parametrize("n", [0, 1, 45_000])
def test_rows_stream_in_key_order_whatever_their_number(tmp_path, n):
    src, _ = ledgers(tmp_path)
    src.append([(f"{i:06d}", i, "e", "md5", "") for i in range(n)][::-1])
    idx = Index(str(tmp_path))
    idx.refresh()
    got = [r[0] for r in idx.rows("src")]
    assert got == [f"{i:06d}" for i in range(n)]


def test_status_counts_through_a_temporary_index_when_the_folders_cannot_be_opened(tmp_path, monkeypatch):
    """A monitoring account that cannot write in the working folder (here: the index's name taken
    by a folder, which SQLite cannot open either): status.py still counts, from the ledgers."""
    from s5jtransfer import status

    src, dst = ledgers(tmp_path)
    src.append([("a", 3, "e", "md5", ""), ("b", 4, "e", "md5", "")])
    dst.append([("a", 3, "d", "md5", "e")])
    (tmp_path / INDEX_FILE).mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(status, "_INDEX", None)
    t = status.ledger_totals()
    assert (t.src_objects, t.src_bytes, t.done_objects, t.done_bytes) == (2, 7, 1, 3)
    assert status._INDEX.path != str(tmp_path / INDEX_FILE)
    src.append([("c", 5, "e", "md5", "")])
    assert status.ledger_totals().src_objects == 3  # kept up to date as any index


def test_an_index_locked_by_another_process_is_waited_for_and_never_taken_for_damaged(tmp_path, monkeypatch):
    """Another process holding the write lock (building the index from large ledgers) is waited
    for, said in the log, for a bounded time; the index is never removed for it."""
    import sqlite3

    from s5jtransfer import index as ix
    from s5jtransfer.errors import S5jError

    monkeypatch.setattr(ix, "LOCK_POLL", 0.2)
    monkeypatch.setattr(ix, "LOCK_WAIT", 0.6)
    monkeypatch.setattr(ix, "LOCK_SAY", 0.2)
    src, _ = ledgers(tmp_path)
    src.append([("a", 1, "e", "md5", "")])
    Index(str(tmp_path)).refresh()
    other = sqlite3.connect(str(tmp_path / INDEX_FILE), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process writes
    ino = (tmp_path / INDEX_FILE).stat().st_ino
    src.append([("b", 2, "e", "md5", "")])
    late = Index(str(tmp_path))
    with pytest.raises(S5jError, match="stayed locked by another process"):
        late.refresh()
    assert (tmp_path / INDEX_FILE).stat().st_ino == ino  # not removed as damaged
    other.execute("COMMIT")
    late.refresh()
    assert late.row("src", "b") == (2, "e", "md5", "")


def test_confirmed_rows_with_no_staged_copy_leave_the_waiting_table_as_lost_objects_are_looked_for(tmp_path):
    from s5jtransfer.volumes import staged_name
    from s5jtransfer.waiting import Waiting

    src, dst = ledgers(tmp_path)
    src.append([(k, 1, f"e{k}", "md5", "") for k in ("a", "b", "c")])
    idx = Index(str(tmp_path))
    idx.refresh(("src",))  # the source ledger first: every row waits (an index built from both at once)
    dst.append([(k, 1, "d", "md5", f"e{k}") for k in ("a", "b")])
    idx.refresh()
    waiting = Waiting(idx)
    names = lambda: {n for n, in idx.db.execute("SELECT name FROM waiting")}  # noqa: E731
    assert names() == {staged_name(k) for k in "abc"}
    lost = waiting.lost({staged_name("b")}, 10)
    assert [k for _n, k, _r in lost] == ["c"]  # unconfirmed and gone: lost
    assert names() == {staged_name("b"), staged_name("c")}  # a: confirmed and gone, released; b: staged, to free


class _Scan:
    """What volumes.StagedScan gives StagedWork: the staged copies, and what the last scan changed."""

    def __init__(self) -> None:
        self.staged: dict = {}
        self.added: dict = {}
        self.removed: set = set()

    def now(self, staged: dict) -> "_Scan":
        self.added = {n: v for n, v in staged.items() if self.staged.get(n) != v}
        self.removed = set(self.staged) - set(staged)
        self.staged = dict(staged)
        return self


def test_staged_work_looks_each_copy_up_once_and_walks_the_work_in_order(tmp_path):
    from s5jtransfer.plan import LARGE_BYTES
    from s5jtransfer.volumes import staged_name
    from s5jtransfer.waiting import StagedWork, Waiting

    src, dst = ledgers(tmp_path)
    big = LARGE_BYTES + 5
    src.append([("k/c", 3, "ec", "md5", ""), ("k/a", 1, "ea", "md5", ""), ("k/big", big, "eb", "md5", ""),
                ("k/done", 1, "ed", "md5", "")])
    dst.append([("k/done", 1, "d", "md5", "ed")])
    idx = Index(str(tmp_path))
    idx.refresh()
    waiting = Waiting(idx)
    asked: list[list[str]] = []
    real = waiting.staged_work
    waiting.staged_work = lambda names: (asked.append(sorted(names)), real(names))[1]  # type: ignore[method-assign]
    work, scan = StagedWork(waiting), _Scan()
    staged = {staged_name(k): ("vol", size) for k, size in (("k/c", 3), ("k/a", 1), ("k/big", big), ("k/done", 1))}
    staged["orphan"] = ("vol", 7)  # no row names it (yet)
    done = work.update(scan.now(staged), ("sig", 1))
    assert list(done) == [staged_name("k/done")]  # confirmed already: to free
    assert [work.todo[n][0] for n in work.ordered()] == ["k/big", "k/a", "k/c"]  # large first, then key order
    assert len(asked) == 1
    assert work.update(scan.now(staged), ("sig", 1)) == {} and len(asked) == 1  # nothing new: no lookup
    # the source ledger changed: only the copies no row named are looked up again
    src.append([("k/late", 2, "el", "md5", "")])
    idx.refresh()
    staged[staged_name("k/late")] = ("vol", 2)
    work.update(scan.now(staged), ("sig", 2))
    assert asked[-1] == sorted([staged_name("k/late"), "orphan"])  # not the confirmed one
    assert [work.todo[n][0] for n in work.ordered()] == ["k/big", "k/a", "k/c", "k/late"]
    # a copy gone from the volumes leaves the walk; one whose size changed is looked up again
    del staged[staged_name("k/a")]
    staged[staged_name("k/c")] = ("vol", 30)
    work.update(scan.now(staged), ("sig", 2))
    assert asked[-1] == [staged_name("k/c")]
    assert [work.todo[n][0] for n in work.ordered()] == ["k/big", "k/c", "k/late"]
    # a row newer than the one looked up (the source side staged a new version): forgotten, not damage
    name_c = staged_name("k/c")
    key_c, row_c, _size = work.todo[name_c]
    assert work.newer([(name_c, key_c, row_c)]) == set()
    src.append([("k/c", 30, "ec2", "md5", "")])
    idx.refresh()
    from s5jtransfer.upload import Candidate, Pending

    cand = Candidate(key_c, Pending(row_c, name_c), "/v/" + name_c, None)
    ok_cand = Candidate("k/late", Pending((2,), staged_name("k/late")), "/v/late", None)
    assert work.without_newer([cand, ok_cand], [False, True]) == ([ok_cand], [True])  # not taken for damaged
    assert name_c not in work.todo
    work.update(scan.now(staged), ("sig", 2))
    assert work.todo[name_c][1][:2] == (30, "ec2")
    # released by this side (its copy kept): never walked again, not looked up again
    work.released([staged_name("k/big")])
    n = len(asked)
    work.update(scan.now(staged), ("sig", 3))
    assert [work.todo[n][0] for n in work.ordered()] == ["k/c", "k/late"] and len(asked) == n + 1
    assert asked[-1] == ["orphan"]
    # every minute, every copy is looked up again (rows changed by another process)
    work._since -= StagedWork.REVALIDATE
    work.update(scan.now(staged), ("sig", 3))
    assert asked[-1] == sorted(staged)
