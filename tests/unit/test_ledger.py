"""Unit tests for s5jtransfer.ledger: CSV round-trips, torn lines, tail/rewrite, process locks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from s5jtransfer.errors import LockHeld
from s5jtransfer.ledger import (DEST_COLUMNS, SRC_COLUMNS, Ledger, ProcessLock, decode_key, encode_key,
                                holder_pid, is_locked)

ROOT = Path(__file__).resolve().parents[2]
HEADER = b"Key,Size,ETag,Verified,MD5\n"

HOSTILE_KEYS = [
    "plain/key.txt",
    "with,comma,s",
    'double"quote"s',
    "single'quote",
    '"starts and ends with quotes"',
    "unicode/äöü/日本語/😀.bin",
    " leading space",
    "trailing space ",
    "  both  ",
    "tab\there",
    "carriage\rreturn",
    "line\nfeed",
    "crlf\r\nkey\n",
    "\n",
    "100%25 not decoded%0A",
    "Key",
]


def new_ledger(tmp_path, name="src_ledger.csv", columns=SRC_COLUMNS) -> Ledger:
    return Ledger(str(tmp_path / name), columns)


def rows_for(keys):
    return [(k, i + 1, f"etag{i}", "1", f"md5{i}") for i, k in enumerate(keys)]


# --- creation and round-trip -------------------------------------------------------------------

def test_ensure_writes_the_header(tmp_path):
    led = new_ledger(tmp_path)
    led.ensure()
    assert Path(led.path).read_bytes() == HEADER
    assert led.load() == {}


def test_ensure_writes_the_dest_header(tmp_path):
    led = new_ledger(tmp_path, "dest_ledger.csv", DEST_COLUMNS)
    led.ensure()
    assert Path(led.path).read_bytes() == b"Key,Size,ETag,Verified,SourceETag\n"


def test_ensure_keeps_an_existing_whole_ledger(tmp_path):
    led = new_ledger(tmp_path)
    led.ensure()
    led.append(rows_for(["a", "b"]))
    before = Path(led.path).read_bytes()
    led.ensure()
    assert Path(led.path).read_bytes() == before


def test_append_to_missing_file_writes_header_first(tmp_path):
    led = new_ledger(tmp_path)
    led.append([("k", 3, "e", "", "")])
    assert Path(led.path).read_bytes() == HEADER + b"k,3,e,,\n"


def test_append_nothing_creates_nothing(tmp_path):
    led = new_ledger(tmp_path)
    led.append([])
    assert not os.path.exists(led.path)


def test_hostile_keys_round_trip_with_one_line_per_row(tmp_path):
    led = new_ledger(tmp_path)
    led.ensure()
    rows = rows_for(HOSTILE_KEYS)
    led.append(rows)
    loaded = new_ledger(tmp_path).load()
    assert loaded == {k: (size, etag, ver, md5) for k, size, etag, ver, md5 in rows}
    data = Path(led.path).read_bytes()
    assert data.count(b"\n") == len(rows) + 1


def test_keys_with_cr_or_lf_are_stored_urlencoded(tmp_path):
    led = new_ledger(tmp_path)
    led.append([("a\nb", 1, "", "", ""), ("c\rd", 2, "", "", "")])
    lines = Path(led.path).read_bytes().split(b"\n")
    assert lines[1].startswith(b"urlenc:") and lines[2].startswith(b"urlenc:")
    assert b"\r" not in Path(led.path).read_bytes()


def test_literal_key_starting_with_urlenc_round_trips(tmp_path):
    keys = ["urlenc:", "urlenc:a%0Ab", "urlenc:plain"]
    led = new_ledger(tmp_path)
    led.append(rows_for(keys))
    assert set(new_ledger(tmp_path).load()) == set(keys)
    for k in keys:
        assert decode_key(encode_key(k)) == k


def test_encode_key_leaves_ordinary_keys_alone():
    for k in ("a/b", "with,comma", 'q"uote', "tab\tx"):
        assert encode_key(k) == k


def test_surrogate_escaped_key_round_trips(tmp_path):
    key = b"bad-\xff-utf8".decode("utf-8", "surrogateescape")
    led = new_ledger(tmp_path)
    led.append([(key, 5, "e", "", ""), (key + "\n", 6, "e", "", "")])
    loaded = new_ledger(tmp_path).load()
    assert loaded[key] == (5, "e", "", "")
    assert loaded[key + "\n"] == (6, "e", "", "")


@pytest.mark.parametrize("key", ["a\x0bb", "c\x0cd", "e\x1cf", "g\x1dh", "i\x1ej", "k\x85l", "m\u2028n", "o\u2029p"])
def test_keys_with_unicode_line_separators_round_trip(tmp_path, key):
    led = new_ledger(tmp_path)
    led.append([(key, 7, "e", "", "")])
    assert new_ledger(tmp_path).load() == {key: (7, "e", "", "")}
    assert Path(led.path).read_bytes().count(b"\n") == 2


def test_real_key_named_key_is_not_taken_for_the_header(tmp_path):
    led = new_ledger(tmp_path)
    led.ensure()
    led.append([("Key", 9, "e", "", "")])
    assert led.load() == {"Key": (9, "e", "", "")}
    # also when it arrives through tail() after the header was read
    led2 = new_ledger(tmp_path, "other.csv")
    led2.ensure()
    rows = led2.load()
    led2.append([("Key", 4, "x", "", "")])
    replaced, got = led2.tail(rows)
    assert (replaced, got) == (False, ["Key"])
    assert rows == {"Key": (4, "x", "", "")}


def test_last_row_for_a_key_wins(tmp_path):
    led = new_ledger(tmp_path)
    led.append([("k", 1, "old", "", ""), ("other", 2, "o", "", "")])
    led.append([("k", 3, "new", "1", "m")])
    assert led.load() == {"k": (3, "new", "1", "m"), "other": (2, "o", "", "")}


def test_legacy_two_column_rows_are_padded(tmp_path):
    p = tmp_path / "src_ledger.csv"
    p.write_bytes(b"Key,Size\na,10\nb,20\n")
    assert Ledger(str(p), SRC_COLUMNS).load() == {"a": (10, "", "", ""), "b": (20, "", "", "")}


def test_rows_with_non_numeric_size_are_skipped(tmp_path):
    p = tmp_path / "src_ledger.csv"
    p.write_bytes(HEADER + b"a,notanumber,e,,\nb,5,e,,\nlonely\n")
    assert Ledger(str(p), SRC_COLUMNS).load() == {"b": (5, "e", "", "")}


# --- torn lines --------------------------------------------------------------------------------

def test_ensure_cuts_a_torn_last_line_and_keeps_whole_rows(tmp_path):
    p = tmp_path / "src_ledger.csv"
    p.write_bytes(HEADER + b"a,1,e1,,\nb,2,e2,,\nc,3,e")
    led = Ledger(str(p), SRC_COLUMNS)
    led.ensure()
    assert p.read_bytes() == HEADER + b"a,1,e1,,\nb,2,e2,,\n"
    assert led.load() == {"a": (1, "e1", "", ""), "b": (2, "e2", "", "")}
    led.append([("d", 4, "e4", "", "")])
    assert p.read_bytes() == HEADER + b"a,1,e1,,\nb,2,e2,,\nd,4,e4,,\n"


def test_ensure_cuts_a_torn_line_in_a_large_ledger(tmp_path):
    p = tmp_path / "src_ledger.csv"
    body = b"".join(b"key-%06d,%d,etag,,\n" % (i, i) for i in range(10000))  # > 64 KiB
    p.write_bytes(HEADER + body + b"torn-key,12")
    Ledger(str(p), SRC_COLUMNS).ensure()
    assert p.read_bytes() == HEADER + body


def test_torn_partial_header_restarts_with_the_header(tmp_path):
    p = tmp_path / "src_ledger.csv"
    p.write_bytes(b"Key,Si")
    led = Ledger(str(p), SRC_COLUMNS)
    led.ensure()
    assert p.read_bytes() == HEADER


def test_ensure_on_an_empty_file_writes_the_header(tmp_path):
    p = tmp_path / "src_ledger.csv"
    p.write_bytes(b"")
    Ledger(str(p), SRC_COLUMNS).ensure()
    assert p.read_bytes() == HEADER


def test_load_ignores_a_torn_last_line(tmp_path):
    p = tmp_path / "src_ledger.csv"
    p.write_bytes(HEADER + b"a,1,e,,\nb,2")
    assert Ledger(str(p), SRC_COLUMNS).load() == {"a": (1, "e", "", "")}


# --- tail and rewrite --------------------------------------------------------------------------

def test_tail_returns_only_new_keys(tmp_path):
    led = new_ledger(tmp_path)
    led.append([("a", 1, "e", "", "")])
    rows = led.load()
    assert led.tail(rows) == (False, [])
    led.append([("b", 2, "e", "", ""), ("c\nx", 3, "e", "", "")])
    assert led.tail(rows) == (False, ["b", "c\nx"])
    assert set(rows) == {"a", "b", "c\nx"}
    assert led.tail(rows) == (False, [])


def test_tail_waits_for_the_end_of_a_partly_written_line(tmp_path):
    led = new_ledger(tmp_path)
    led.append([("a", 1, "e", "", "")])
    rows = led.load()
    with open(led.path, "ab") as fh:
        fh.write(b"b,2,e")
    assert led.tail(rows) == (False, [])
    with open(led.path, "ab") as fh:
        fh.write(b",,\n")
    assert led.tail(rows) == (False, ["b"])
    assert rows["b"] == (2, "e", "", "")


def test_seek_end_makes_tail_read_only_rows_appended_after_it(tmp_path):
    led = new_ledger(tmp_path)
    led.append(rows_for(["a", "b"]))
    with open(led.path, "ab") as fh:
        fh.write(b"c,3,e")  # a row being appended at that moment: new, not skipped
    led.seek_end()
    rows: dict = {}
    with open(led.path, "ab") as fh:
        fh.write(b",,\n")
    led.append([("d\nx", 4, "e", "", "")])
    assert led.tail(rows) == (False, ["c", "d\nx"])
    assert set(rows) == {"c", "d\nx"}


def test_seek_end_on_a_missing_ledger_then_tail_reads_it_all(tmp_path):
    led = new_ledger(tmp_path)
    led.seek_end()
    led.append(rows_for(["a"]))  # the header is not taken for a row
    rows: dict = {}
    assert led.tail(rows) == (False, ["a"])


def test_seek_end_then_a_rewrite_is_reported(tmp_path):
    led = new_ledger(tmp_path)
    led.append(rows_for(["a", "b", "c"]))
    led.seek_end()
    new_ledger(tmp_path).rewrite({"z": (26, "ez", "", "")})
    rows: dict = {}
    assert led.tail(rows) == (True, ["z"])


def test_tail_detects_a_rewrite_and_reloads(tmp_path):
    led = new_ledger(tmp_path)
    led.append(rows_for(["a", "b", "c"]))
    rows = led.load()
    other = new_ledger(tmp_path)  # e.g. repair_ledger.py in another process
    other.rewrite({"b": (2, "etag1", "1", "md51"), "z": (26, "ez", "", "")})
    replaced, got = led.tail(rows)
    assert replaced is True
    assert sorted(got) == ["b", "z"]
    assert rows == {"b": (2, "etag1", "1", "md51"), "z": (26, "ez", "", "")}


def test_tail_detects_a_truncated_file(tmp_path):
    led = new_ledger(tmp_path)
    led.append(rows_for(["a", "b", "c"]))
    rows = led.load()
    with open(led.path, "r+b") as fh:
        fh.truncate(len(HEADER))
    replaced, got = led.tail(rows)
    assert replaced is True and got == [] and rows == {}


def test_tail_after_the_file_is_removed_reports_replaced(tmp_path):
    led = new_ledger(tmp_path)
    led.append(rows_for(["a"]))
    rows = led.load()
    os.remove(led.path)
    assert led.tail(rows) == (True, [])
    assert rows == {}


def test_rewrite_is_atomic_and_leaves_no_tmp(tmp_path):
    led = new_ledger(tmp_path)
    led.append(rows_for(["a", "b"]))
    ino = os.stat(led.path).st_ino
    led.rewrite({"only,one": (1, "e", "", ""), "x\ny": (2, "f", "", "")})
    assert not os.path.exists(led.path + ".tmp")
    assert sorted(os.listdir(tmp_path)) == sorted([os.path.basename(led.path), os.path.basename(led.lock_path)])
    assert os.stat(led.path).st_ino != ino  # replaced by rename, never written in place
    data = Path(led.path).read_bytes()
    assert data.startswith(HEADER) and data.count(b"\n") == 3
    assert new_ledger(tmp_path).load() == {"only,one": (1, "e", "", ""), "x\ny": (2, "f", "", "")}


def test_rewrite_to_empty_keeps_the_header(tmp_path):
    led = new_ledger(tmp_path)
    led.append(rows_for(["a"]))
    led.rewrite({})
    assert Path(led.path).read_bytes() == HEADER


# --- process lock ------------------------------------------------------------------------------

HOLDER = """
import sys
sys.path.insert(0, sys.argv[2])
from s5jtransfer.ledger import ProcessLock
lock = ProcessLock(sys.argv[1], "test holder").acquire()
print("ready", flush=True)
sys.stdin.read()
lock.release()
"""


@pytest.fixture
def held_lock(tmp_path):
    path = str(tmp_path / ".src_sync.lock")
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, path, str(ROOT)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "ready", proc.stderr.read()
        yield path, proc
    finally:
        if proc.poll() is None:
            proc.stdin.close()
            proc.wait(timeout=10)


def test_second_acquire_in_another_process_fails_naming_the_pid(held_lock):
    path, proc = held_lock
    with pytest.raises(LockHeld) as ei:
        ProcessLock(path, "src_sync_mvol.py").acquire()
    msg = str(ei.value)
    assert ei.value.exit_code == 3
    assert f"PID {proc.pid}" in msg
    assert "src_sync_mvol.py is already running" in msg
    assert holder_pid(path) == proc.pid


def test_is_locked_follows_another_process_holding_and_releasing(held_lock):
    path, proc = held_lock
    assert is_locked(path) is True
    proc.stdin.close()
    assert proc.wait(timeout=10) == 0
    assert is_locked(path) is False
    lock = ProcessLock(path, "again").acquire()  # free again: acquirable
    lock.release()


def test_is_locked_true_while_held_false_after_release(tmp_path):
    path = str(tmp_path / ".lock")
    assert is_locked(path) is False
    lock = ProcessLock(path, "me").acquire()
    try:
        assert is_locked(path) is True
        assert holder_pid(path) == os.getpid()
    finally:
        lock.release()
    assert is_locked(path) is False
    lock.release()  # a second release is harmless


def test_lock_file_holds_only_the_current_pid(tmp_path):
    path = tmp_path / ".lock"
    path.write_text("999999999999 stale junk\n")
    lock = ProcessLock(str(path), "me").acquire()
    try:
        assert path.read_text() == f"{os.getpid()}\n"
    finally:
        lock.release()


def test_append_after_a_torn_append_does_not_glue_rows(tmp_path):
    """A write cut short (disk full) leaves a torn tail; the next append drops it first."""
    from s5jtransfer.ledger import SRC_COLUMNS, Ledger

    led = Ledger(str(tmp_path / "src_ledger.csv"), SRC_COLUMNS)
    led.ensure()
    led.append([("a", 1, "e1", "md5", "m1")])
    with open(led.path, "ab") as fh:
        fh.write(b"b,2,e2,md")  # torn
    led.append([("c", 3, "e3", "md5", "m3")])
    rows = led.load()
    assert rows == {"a": (1, "e1", "md5", "m1"), "c": (3, "e3", "md5", "m3")}
    assert open(led.path, "rb").read().count(b"\n") == 3


@pytest.mark.parametrize("damaged", ['bad,"open quote,1,e', '"', '\x00\x00\x00', 'garbage line', ''])
def test_a_damaged_line_loses_only_itself_never_the_rows_after_it(tmp_path, damaged, caplog):
    """An unmatched quote made the CSV reader take the rest of the file as one field, hiding
    every later row (objects then moved again, and ledgered again, on every start)."""
    p = tmp_path / "src_ledger.csv"
    rows = [f"k{i},{i},e{i},md5,m{i}" for i in range(5)]
    p.write_text("Key,Size,ETag,Verified,MD5\n" + "\n".join(rows[:2] + [damaged] + rows[2:]) + "\n",
                 errors="surrogateescape")
    led = Ledger(str(p), SRC_COLUMNS)
    with caplog.at_level("WARNING"):
        got = led.load()
    assert sorted(got) == [f"k{i}" for i in range(5)]
    assert got["k4"] == (4, "e4", "md5", "m4")
    assert "1 line(s) are not ledger rows" in caplog.text


# --- the fast reader reads what csv.reader reads -----------------------------------------------

def reference_load(data: bytes, ncol: int = 5):
    """The reader before the fast path: csv.reader over the LF-split lines, a record over several
    lines read line by line. Returns (rows, keys, bad lines)."""
    import csv

    rows, keys, bad = {}, [], 0
    lines = data[: data.rfind(b"\n") + 1].decode("utf-8", "surrogateescape").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    reader = csv.reader(lines)
    at, skip_header = 0, True
    for rec in reader:
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
                bad += 1
                continue
            key = decode_key(rec[0])
            rows[key] = (size, *rec[2:ncol])
            keys.append(key)
    return rows, keys, bad


LINE_POOL = [
    b"plain/key-%d.bin,%d,0123456789abcdef0123456789abcdef,md5,fedcba9876543210fedcba9876543210",
    b"k%d,%d,e,,",
    b"k%d,%d,e,1,m",
    b"legacy-%d,%d",  # the original two-column rows
    b"three-%d,%d,e",
    b"six-%d,%d,e,md5,m,extra",
    b'"with,comma-%d",%d,e,md5,m',
    b'"q""uote-%d",%d,e,md5,m',
    b"crlf-%d,%d,e,md5,m\r",
    b"legacy-crlf-%d,%d\r",
    b"urlenc:a%%0Ab-%d,%d,e,md5,m",
    b"urlenc:%%75rlenc%%3Ax-%d,%d,,,",
    b"\xff\xfebad-utf8-%d,%d,e,md5,m",
    "unicode/äöü/日本語/😀-%d,%d,e,md5,m".encode(),
    b"tab\there-%d,%d,e,md5,m",
    b" spaced-%d , %d ,e,md5,m",
    b"nul\x00-%d,%d,e,md5,m",
    b"Key,%d%d,e,md5,m",  # a real key named Key
    b"size-%d-underscore,1_%d,e,md5,m",
    b"bad-size-%d,x%d,e,md5,m",
    b"lonely-%d%d",
    b"",
    b'"open quote-%d,%d,e,md5,m',
    b'mid"quote-%d,%d,e,md5,m',
    b'"',
    b"dup,%d%d,e,md5,m",  # the same key again: the last row wins
]


def make_ledger(rng, n, pool, header=HEADER):
    out = [header]
    for i in range(n):
        t = pool[rng.randrange(len(pool))]
        out.append((t % (i, i * 7) if b"%" in t else t) + b"\n")
    return b"".join(out)


@pytest.mark.parametrize("seed", range(24))
@pytest.mark.parametrize("chunk", [7, 64, 4096, 4 << 20])
def test_load_and_tail_read_what_the_csv_reader_read(tmp_path, monkeypatch, seed, chunk):
    import random

    from s5jtransfer import ledger as ledger_mod

    monkeypatch.setattr(ledger_mod, "_READ_BYTES", chunk)
    rng = random.Random(seed)
    # mostly-plain ledgers (the fast path), mixed ones (runs) and hostile ones (line by line)
    pool = [LINE_POOL[0]] * 30 + LINE_POOL[1:] if seed % 3 == 0 else (LINE_POOL if seed % 3 == 1 else LINE_POOL[:3])
    header = [HEADER, b"Key,Size\n", b"Key,Size,ETag,Verified,MD5\r\n", b'"Key",Size\n', b""][seed % 5]
    data = make_ledger(rng, rng.randrange(1, 400), pool, header) + b"torn,1"
    p = tmp_path / "src_ledger.csv"
    p.write_bytes(data)
    want_rows, want_keys, want_bad = reference_load(data)
    led = Ledger(str(p), SRC_COLUMNS)
    assert led.load() == want_rows
    assert list(led.load()) == list(want_rows)  # the same order too
    assert led.bad_lines == want_bad
    # tail from the start returns every key read, in order
    led2 = Ledger(str(p), SRC_COLUMNS)
    rows: dict = {}
    assert led2.tail(rows) == (False, want_keys)
    assert rows == want_rows
    # and appended rows arrive through tail, torn line completed
    with open(p, "ab") as fh:
        fh.write(b"x,e,md5,m\nnew-a,5,e,md5,m\n")
    more, more_keys, _ = reference_load(data + b"x,e,md5,m\nnew-a,5,e,md5,m\n")
    assert led2.tail(rows) == (False, more_keys[len(want_keys):])
    assert rows == more


def test_a_cr_inside_an_unquoted_field_loses_only_its_line(tmp_path):
    """csv.reader raised on it ('new-line character seen in unquoted field'), so the whole load
    failed; now it is a damaged line like any other."""
    p = tmp_path / "src_ledger.csv"
    p.write_bytes(HEADER + b"a,1,e,md5,m\nb\rc,2,e,md5,m\nd,3,e,md5,m\n")
    led = Ledger(str(p), SRC_COLUMNS)
    assert led.load() == {"a": (1, "e", "md5", "m"), "d": (3, "e", "md5", "m")}
    assert led.bad_lines == 1


def test_the_verified_column_is_one_string_object_per_word(tmp_path):
    p = tmp_path / "src_ledger.csv"
    p.write_bytes(HEADER + b"".join(b"k%d,%d,e,md5,m\n" % (i, i) for i in range(100)))
    rows = Ledger(str(p), SRC_COLUMNS).load()
    assert len({id(r[2]) for r in rows.values()}) == 1


def test_gc_is_back_on_after_a_load(tmp_path):
    import gc

    p = tmp_path / "src_ledger.csv"
    p.write_bytes(HEADER + b"a,1,e,md5,m\n")
    assert gc.isenabled()
    Ledger(str(p), SRC_COLUMNS).load()
    assert gc.isenabled()
    gc.disable()
    try:
        Ledger(str(p), SRC_COLUMNS).load()
        assert not gc.isenabled()  # left as it was
    finally:
        gc.enable()
