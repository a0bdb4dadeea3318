"""Unit tests for s5jtransfer.volumes: staged names, layout, discovery, scans, budgets, clearing."""

from __future__ import annotations

import hashlib
import os
import re

import pytest

from s5jtransfer.volumes import Volume, clear_staging, device_space, discover_roots, staged_name

HEX40 = re.compile(r"^[0-9a-f]{40}$")
HOSTILE = ["a", "a/", "a/b", "../../x", "/etc/passwd", "..", ".", "", "x" * 300, "s" * 299 + "/" + "t" * 300,
           "nul\x00byte", "line\nfeed", "日本語/😀", "bad-\udcff-surrogate", "a/../../../../../tmp/evil"]


# --- staged_name -------------------------------------------------------------------------------

@pytest.mark.parametrize("key", HOSTILE)
def test_staged_name_is_40_hex_chars(key):
    assert HEX40.match(staged_name(key))


def test_staged_name_is_stable():
    assert staged_name("some/key.bin") == staged_name("some/key.bin")
    assert staged_name("some/key.bin") == hashlib.sha256(b"some/key.bin").hexdigest()[:40]


def test_staged_name_differs_for_a_and_a_slash_and_a_b():
    names = {staged_name("a"), staged_name("a/"), staged_name("a/b")}
    assert len(names) == 3


def test_staged_name_all_hostile_keys_distinct():
    assert len({staged_name(k) for k in HOSTILE}) == len(HOSTILE)


def test_staged_name_handles_dotdot_and_long_segment():
    for key in ("../../x", "x" * 300):
        name = staged_name(key)
        assert "/" not in name and ".." not in name and len(name) == 40


# --- Volume layout ------------------------------------------------------------------------------

@pytest.mark.parametrize("key", HOSTILE)
def test_staged_path_stays_inside_the_volume_root(tmp_path, key):
    root = tmp_path / "volume-01"
    root.mkdir()
    v = Volume(str(root))
    for path in (v.staged_path(staged_name(key)), v.partial_path(staged_name(key))):
        real = os.path.realpath(path)
        assert os.path.commonpath([real, os.path.realpath(v.data)]) == os.path.realpath(v.data)
        assert os.path.basename(path) == staged_name(key)


def test_staged_path_layout(tmp_path):
    v = Volume(str(tmp_path))
    name = staged_name("k")
    assert v.staged_path(name) == os.path.join(str(tmp_path), "s5jtransfer", "staged", name[:2], name)
    assert v.partial_path(name) == os.path.join(str(tmp_path), "s5jtransfer", "partial", name)


def test_ensure_creates_partial_and_staged_dirs(tmp_path):
    v = Volume(str(tmp_path))
    v.ensure()
    v.ensure()  # idempotent
    assert (tmp_path / "s5jtransfer" / "partial").is_dir()
    assert (tmp_path / "s5jtransfer" / "staged").is_dir()


# --- discover_roots ----------------------------------------------------------------------------

def test_discover_roots_uses_local_volumes_when_given(tmp_path):
    (tmp_path / "volume-01").mkdir()  # ignored: the list wins
    got = discover_roots([str(tmp_path / "v1"), "rel/v2"], str(tmp_path / "dir"), base=str(tmp_path))
    assert got == [str(tmp_path / "v1"), os.path.abspath("rel/v2")]


def test_discover_roots_finds_existing_volume_nn_in_order(tmp_path):
    for name in ("volume-03", "volume-01", "volume-99", "volume-10"):
        (tmp_path / name).mkdir()
    (tmp_path / "volume-100").mkdir()  # out of range
    (tmp_path / "volume-1").mkdir()  # not two digits
    (tmp_path / "volume-00").mkdir()  # NN starts at 01
    (tmp_path / "volume-02").write_text("a file, not a folder")
    got = discover_roots((), str(tmp_path / "dir"), base=str(tmp_path))
    assert got == [str(tmp_path / n) for n in ("volume-01", "volume-03", "volume-10", "volume-99")]


def test_discover_roots_falls_back_to_local_directory(tmp_path):
    got = discover_roots([], str(tmp_path / "staging"), base=str(tmp_path))
    assert got == [str(tmp_path / "staging")]


def test_discover_roots_directory_is_made_absolute(tmp_path):
    assert discover_roots((), "relative/staging", base=str(tmp_path)) == [os.path.abspath("relative/staging")]


# --- scans -------------------------------------------------------------------------------------

def test_scan_staged_sees_staged_files_but_not_partial_ones(tmp_path):
    v = Volume(str(tmp_path))
    v.ensure()
    staged = {staged_name(k): n for k, n in (("a", 3), ("b/c", 0), ("d", 10))}
    for name, size in staged.items():
        p = v.staged_path(name)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as fh:
            fh.write(b"x" * size)
    partial = staged_name("in-flight")
    with open(v.partial_path(partial), "wb") as fh:
        fh.write(b"yyyy")
    assert v.scan_staged() == staged
    assert partial not in v.scan_staged()
    assert v.scan_partial() == [v.partial_path(partial)]


def test_scan_staged_on_a_volume_without_data_is_empty(tmp_path):
    v = Volume(str(tmp_path))
    assert v.scan_staged() == {}
    assert v.scan_partial() == []


def test_scan_staged_ignores_stray_files_and_subfolders(tmp_path):
    v = Volume(str(tmp_path))
    v.ensure()
    base = tmp_path / "s5jtransfer" / "staged"
    (base / "stray-file").write_text("x")
    name = staged_name("k")
    sub = base / name[:2]
    sub.mkdir(exist_ok=True)  # made by ensure()
    (sub / name).write_bytes(b"12345")
    (sub / "nested-dir").mkdir()
    assert v.scan_staged() == {name: 5}


# --- device space ------------------------------------------------------------------------------

def test_device_space_is_shared_by_two_volumes_of_one_file_system(tmp_path):
    a, b = tmp_path / "v1", tmp_path / "v2"
    a.mkdir()
    b.mkdir()
    vols = [Volume(str(a)), Volume(str(b))]
    assert vols[0].device() == vols[1].device()
    space = device_space(vols, reserve=0)
    assert list(space) == [os.stat(a).st_dev]
    st = os.statvfs(a)
    free = st.f_bavail * st.f_frsize
    # free space moves a little while the test runs; it must be the device's, not twice it
    got = space[os.stat(a).st_dev]
    assert abs(got.bytes - free) < free // 10 + 10 * 1024 * 1024
    assert got.block == st.f_frsize and (got.files is None) == (st.f_files == 0)


def test_device_space_subtracts_the_reserve_and_never_goes_negative(tmp_path):
    v = Volume(str(tmp_path))
    free = v.free_bytes()
    dev = v.device()
    got = device_space([v], reserve=1024 * 1024)[dev].bytes
    assert got <= free - 1024 * 1024 + 10 * 1024 * 1024
    assert got >= 0
    assert device_space([v], reserve=free * 1000 + 1)[dev].bytes == 0


def test_device_space_empty():
    assert device_space([], reserve=0) == {}


def test_every_folder_of_staged_copies_is_made_at_the_start(tmp_path):
    v = Volume(str(tmp_path))
    v.ensure()
    assert sorted(os.listdir(os.path.join(v.data, "staged"))) == [f"{n:02x}" for n in range(256)]
    assert os.path.dirname(v.staged_path(staged_name("any key"))) in {
        os.path.join(v.data, "staged", f"{n:02x}") for n in range(256)}


# --- clear_staging -----------------------------------------------------------------------------

def test_clear_staging_removes_only_the_s5jtransfer_folder(tmp_path):
    v = Volume(str(tmp_path))
    v.ensure()
    name = staged_name("k")
    os.makedirs(os.path.dirname(v.staged_path(name)), exist_ok=True)
    open(v.staged_path(name), "wb").close()
    open(v.partial_path(name), "wb").close()
    (tmp_path / "lost+found").mkdir()
    (tmp_path / "lost+found" / "#123").write_text("recovered")
    (tmp_path / "operator-notes.txt").write_text("keep me")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "data.bin").write_bytes(b"1")
    clear_staging(str(tmp_path))
    assert not (tmp_path / "s5jtransfer").exists()
    assert sorted(os.listdir(tmp_path)) == ["lost+found", "operator-notes.txt", "other"]
    assert (tmp_path / "lost+found" / "#123").read_text() == "recovered"
    assert (tmp_path / "operator-notes.txt").read_text() == "keep me"
    assert (tmp_path / "other" / "data.bin").read_bytes() == b"1"


def test_clear_staging_on_a_clean_volume_is_harmless(tmp_path):
    (tmp_path / "keep").write_text("x")
    clear_staging(str(tmp_path))
    assert os.listdir(tmp_path) == ["keep"]


def test_sleep_until_changed_wakes_when_the_ledger_grows(tmp_path):
    import threading
    import time

    from s5jtransfer.runtime import sleep_until_changed
    from s5jtransfer.runtime import Stopper

    path = tmp_path / "src_ledger.csv"
    path.write_text("Key,Size\n")
    timer = threading.Timer(0.2, lambda: path.write_text("Key,Size\na,1\n"))
    timer.start()
    t = time.monotonic()
    assert sleep_until_changed(str(path), 30, Stopper()) is False
    assert time.monotonic() - t < 10  # woke on the change, long before the 30 s
    timer.join()


def test_sleep_until_changed_sleeps_out_an_unchanged_file_and_stops_on_request(tmp_path):
    import time

    from s5jtransfer.runtime import sleep_until_changed
    from s5jtransfer.runtime import Stopper

    path = tmp_path / "src_ledger.csv"
    t = time.monotonic()
    assert sleep_until_changed(str(path), 0.3, Stopper()) is False  # missing file: no change, full sleep
    assert time.monotonic() - t >= 0.3
    stopper = Stopper()
    stopper.event.set()
    assert sleep_until_changed(str(path), 30, stopper) is True


def test_uploads_in_flight_stay_within_the_byte_cap_in_the_order_given():
    from s5jtransfer.dest_sync import within
    from s5jtransfer.upload import Candidate, Pending

    def cand(key, size):
        return Candidate(key, Pending((size, "", "md5", ""), key), "/v/" + key, (0, 0))

    cands = [cand("a", 10), cand("b", 300), cand("c", 40), cand("d", 60)]
    # an object over the cap moves alone, first (so a stream of small ones never starves it)...
    assert [c.key for c in within(cands, 0, 100)] == ["b"]
    # ...then the rest, in the order given (the work's: dest_sync._select), within the cap
    assert [c.key for c in within([c for c in cands if c.key != "b"], 0, 100)] == ["a", "c"]
    assert [c.key for c in within([cand("d", 60), cand("a", 10), cand("c", 40)], 0, 100)] == ["d", "a"]
    assert [c.key for c in within([cand("b", 300)], 50, 100)] == []  # not beside others in flight
    assert [c.key for c in within(cands, 80, 100)] == ["a"]
    assert [c.key for c in within(cands, 0, None)] == ["a", "b", "c", "d"]  # no cap: as they came


def test_sleep_until_changed_returns_at_once_when_the_file_changed_since_it_was_read(tmp_path):
    import time

    from s5jtransfer.runtime import file_signature, sleep_until_changed
    from s5jtransfer.runtime import Stopper

    path = tmp_path / "src_ledger.csv"
    path.write_text("Key,Size\n")
    read_at = file_signature(str(path))
    path.write_text("Key,Size\na,1\n")  # appended while the cycle that read it was running
    t = time.monotonic()
    assert sleep_until_changed(str(path), 30, Stopper(), since=read_at) is False
    assert time.monotonic() - t < 1


def test_the_staged_scan_reads_again_only_folders_that_changed_and_sees_every_change(tmp_path, monkeypatch):
    import os as _os
    import time as _time

    from s5jtransfer import volumes as vmod

    v = vmod.Volume(str(tmp_path / "v"))
    v.ensure()
    scan = vmod.StagedScan()
    names = ["ab" + "1" * 38, "ab" + "2" * 38, "cd" + "3" * 38]
    for n in names[:2]:
        open(v.staged_path(n), "w").close()
    old = _time.time_ns() - 10**9  # folders last changed a second ago: not fresh
    for sub in range(256):
        _os.utime(_os.path.dirname(v.staged_path(f"{sub:02x}" + "0" * 38)), ns=(old, old))
    assert set(scan.scan([v])) == set(names[:2]) and set(scan.added) == set(names[:2]) and not scan.removed
    reads = []
    real = vmod._read_dir
    monkeypatch.setattr(vmod, "_read_dir", lambda p: reads.append(p) or real(p))
    assert set(scan.scan([v])) == set(names[:2]) and reads == []  # nothing changed: no folder read
    assert not scan.added and not scan.removed
    with open(v.staged_path(names[2]), "w") as fh:  # a new copy: its folder's time moves on
        fh.write("12345")
    _os.remove(v.staged_path(names[0]))
    assert set(scan.scan([v])) == {names[1], names[2]}
    assert set(scan.added) == {names[2]} and scan.removed == {names[0]} and scan.bytes == {v.root: 5}
    assert sorted(_os.path.basename(p) for p in reads) == ["ab", "cd"]
    reads.clear()
    assert set(scan.scan([v])) == {names[1], names[2]}
    assert len(reads) == 2  # changed within the last 0.2 s: read again, a change in the same tick is not missed


def test_the_staged_scan_sees_a_copy_of_the_same_name_on_another_volume_when_one_goes(tmp_path):
    import os as _os

    from s5jtransfer import volumes as vmod

    v1, v2 = vmod.Volume(str(tmp_path / "v1")), vmod.Volume(str(tmp_path / "v2"))
    for v in (v1, v2):
        v.ensure()
    name = "ab" + "1" * 38
    for v, data in ((v1, "1"), (v2, "22")):
        with open(v.staged_path(name), "w") as fh:
            fh.write(data)
    scan = vmod.StagedScan()
    seen = scan.scan([v1, v2])[name][0]
    other = v2 if seen is v1 else v1
    _os.remove(seen.staged_path(name))
    _os.utime(_os.path.dirname(seen.staged_path(name)), ns=(1, 1))  # the folder's time moves on
    got = scan.scan([v1, v2])
    assert got[name][0] is other and name in scan.added and name not in scan.removed
    assert scan.bytes.get(seen.root, 0) == 0 and scan.bytes[other.root] == _os.path.getsize(other.staged_path(name))


def test_the_staged_folders_are_looked_at_when_due_and_not_at_every_cycle_while_uploads_are_busy():
    from s5jtransfer.dest_sync import SCAN_EVERY, SCAN_MIN, scan_due
    assert 0 < SCAN_MIN < SCAN_EVERY
    # SCAN_EVERY after the last look: always, even with plenty known to wait
    assert scan_due(SCAN_EVERY, known=10_000, busy=0, most=100)
    # plenty known to wait (at least twice a cycle's hand-over beyond what is busy): not sooner
    assert not scan_due(SCAN_EVERY - 0.01, known=300, busy=100, most=100)
    # the known work runs low while uploads are busy: sooner, but not before SCAN_MIN
    assert not scan_due(SCAN_MIN - 0.01, known=10, busy=50, most=100)
    assert scan_due(SCAN_MIN, known=10, busy=50, most=100)
    # ... nor while only copies known to wait remain (they are handed over first)
    assert not scan_due(0.1, known=10, busy=0, most=100)
    # nothing busy and nothing known: at once, whatever the last look
    assert scan_due(0.0, known=0, busy=0, most=100)
    # no hand-over limit (--dry-run): every cycle looks
    assert scan_due(0.0, known=10_000, busy=10_000, most=None)
