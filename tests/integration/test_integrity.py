"""Integrity: hostile keys, corrupted staged copies, overwritten sources, secrets, full volumes."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, script_env, wait_for
from faultproxy import FaultProxy

# Every class of valid S3 key an operator's bucket can hold (LF is valid in S3 but moto's HTTP
# server cannot store it; it is covered by the ledger and run-file unit tests).
HOSTILE_KEYS = [
    "plain.txt", "with space.txt", "single'quote", 'double"quote', "back`tick`", "$(touch PWNED)",
    "semi;pipe|amp&lt<gt>", "glob*?[]{}.txt", "[abc].txt", "percent%20plus+hash#", "unicodé-ñ-中文.txt",
    "emoji-😀🚀.bin", "tab\there", "carriage\rreturn", "trailing-cr\r", " leading-space", "trailing-space ",
    "-leading-dash", "--double-dash", "pkg.deb", "notes.cafe", "image.1234", "upload.tmp", "a",
    "a/b", "a//b", "./x", "x/../y", "../../escape", "../../../../../../etc/passwd-s5j", "/leading-slash",
    "seg" + "s" * 297 + "/file", "/".join(["d"] * 60) + "/deep.txt", "zero-byte", "dir-with-data/",
    "back\\slash", "~tilde", "x/./y", "dots...", "..", ".", "con", "NUL-\x01-control", "del\x7fchar",
    "\u2028line-sep", "vtab\x0bkey", "urlenc:looks-encoded",
]


def data_for(key: str) -> bytes:
    return b"" if key == "zero-byte" else hashlib.sha256(key.encode()).digest() * 3 + key.encode()


@pytest.mark.parametrize("mode", ["s5cmd", "native"])
def test_every_valid_key_moves_byte_exact_and_nothing_escapes(work, tmp_path, mode):
    for k in HOSTILE_KEYS:
        work.put(k, data_for(k))
    work.cfg["transfer_settings"]["src_use_native_s3"] = mode == "native"
    work.write_config()
    outside_before = sorted(os.listdir(work.path.parent))
    r = work.run("sync_mvol.py", "--once", timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    listing = work.listing(work.dst, "copy/")
    assert set(listing) == set(HOSTILE_KEYS)
    for k in HOSTILE_KEYS:
        assert work.dest_bytes(k) == data_for(k), repr(k)
    assert work.ledger_lines() == len(HOSTILE_KEYS) + 1
    # nothing was executed or written outside the working folder and its volumes
    assert not (work.path / "PWNED").exists() and not Path("PWNED").exists()
    assert sorted(os.listdir(work.path.parent)) == outside_before
    assert not Path("/etc/passwd-s5j").exists()
    for p in work.path.rglob("*"):
        assert p.name in ("config.yaml", "src_ledger.csv", "dest_ledger.csv", "src_commands.txt",
                          "dest_commands.txt", "missing_keys.txt", "transfer_report.json") or p.name.startswith(".") or \
            p.is_relative_to(work.volumes[0]) or p.is_relative_to(work.volumes[1]) or \
            p.is_relative_to(work.path / "staging"), p
    # no key is ever a path on a volume: staged copies are hash-named
    assert work.staged_files() == []


def test_hostile_keys_of_objects_fetched_in_order_by_s5cmd_cat_move_byte_exact(work):
    """Objects above the part size go through `s5cmd cat` (its argv, not a run file) and early
    multipart uploads: a key that is shell code, quotes or wildcards is data there too."""
    keys = ["$(touch PWNED).bin", "q'uo\"te *[x]?.bin", "-dash/../x.bin"]
    data = {k: hashlib.sha256(k.encode()).digest() * (6 * 1024 * 1024 // 32 + 7) for k in keys}
    work.put_all(data)
    work.cfg["transfer_settings"]["part_size_mb"] = 5
    work.write_config()
    r = work.run("sync_mvol.py", "--once", timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    for k, v in data.items():
        assert work.dest_bytes(k) == v, repr(k)
    cat_lines = (work.path / "src_commands-cat.txt").read_text().splitlines()
    assert len([ln for ln in cat_lines if ln.startswith("cp --raw ")]) == len(keys)
    assert not (work.path / "PWNED").exists() and not Path("PWNED").exists()


def test_object_whose_key_is_the_source_prefix_itself_moves_to_the_destination_prefix(work):
    """s3://src/data/ holding data (not a zero-byte folder marker) is under the prefix: it goes to
    exactly s3://dst/copy/, is ledgered, and the final comparison counts it."""
    data = {"a.txt": b"a" * 100, "sub/b.txt": b"b" * 5000}
    work.put_all(data)
    work.put("", b"the prefix itself")  # key "data/"
    work.put("sub/", b"")  # a folder marker: skipped, as always
    r = work.run("sync_mvol.py", "--once")
    assert r.returncode == 0, r.stderr[-3000:]
    assert work.dest_bytes("") == b"the prefix itself"
    assert set(work.listing(work.dst, "copy/")) == set(data) | {""}
    assert work.ledger_lines() == 4 and work.ledger_lines("dest_ledger.csv") == 4
    assert "source objects:      3" in r.stdout
    assert work.run("repair_ledger.py").returncode == 0
    again = work.run("sync_mvol.py", "--once")
    assert again.returncode == 0 and work.ledger_lines() == 4


def test_object_whose_key_is_the_source_prefix_with_no_destination_prefix_keeps_the_run_incomplete(work):
    """Its destination key would be empty: it is never uploaded (a request without a key would be
    a request on the bucket), an error names it and the fix, the rest moves, and the run is not
    reported complete."""
    work.put("a.txt", b"a" * 100)
    work.put("", b"the prefix itself")
    work.cfg["destination"]["bucket_prefix"] = ""
    work.write_config()
    proc = work.start("sync_mvol.py", "--once")
    try:
        log = work.path / "sync_mvol.py.log"
        wait_for(lambda: "its destination key would be empty" in log.read_text(errors="replace"), 60,
                 "the error naming the object")
        wait_for(lambda: "a.txt" in work.listing(work.dst, ""), 60, "the other object at the destination")
        text = log.read_text(errors="replace")
        assert "set destination.bucket_prefix" in text and "'s3://" in text and "/data/'" in text
        assert proc.poll() is None  # --once does not end: the transfer is not complete
        assert set(work.listing(work.dst, "")) == {"a.txt"}
    finally:
        proc.terminate()
        proc.wait(30)
    assert work.run("repair_ledger.py").returncode == 1


def test_corrupted_staged_copy_is_never_uploaded_and_is_fetched_again(work):
    data = {f"f{i}.bin": os.urandom(20_000) for i in range(5)}
    work.put_all(data)
    assert work.run("src_sync_mvol.py", "--once").returncode == 0
    staged = sorted(work.staged_files())
    assert len(staged) == 5
    victim = staged[2]
    raw = bytearray(victim.read_bytes())
    raw[100] ^= 0xFF  # a flipped bit, same size
    victim.write_bytes(bytes(raw))
    r = work.run("sync_mvol.py", "--once")
    assert r.returncode == 0, r.stderr
    assert "does not match the checksum verified at staging" in r.stderr
    for k, v in data.items():
        assert work.dest_bytes(k) == v
    assert work.ledger_lines() == 6 and work.ledger_lines("dest_ledger.csv") == 6


def test_staged_copy_truncated_by_a_power_cut_is_discarded(work):
    data = {f"f{i}.bin": os.urandom(30_000) for i in range(3)}
    work.put_all(data)
    assert work.run("src_sync_mvol.py", "--once").returncode == 0
    victim = sorted(work.staged_files())[0]
    victim.write_bytes(victim.read_bytes()[:1000])
    assert work.run("sync_mvol.py", "--once").returncode == 0
    for k, v in data.items():
        assert work.dest_bytes(k) == v


def test_interrupted_run_adopts_verified_staged_copies_without_refetching(work):
    """Staged and verified but not yet ledgered (a stop between rename and ledger append)."""
    data = {f"f{i}.bin": os.urandom(10_000) for i in range(6)}
    work.put_all(data)
    assert work.run("src_sync_mvol.py", "--once").returncode == 0
    # the power cut lost the ledger rows (and left a torn line), not the staged files
    (work.path / "src_ledger.csv").write_text("Key,Size,ETag,Verified,MD5\nf0.bin,100")
    r = work.run("src_sync_mvol.py", "--once")
    assert r.returncode == 0
    assert "adopted 6 verified staged copies" in r.stderr
    assert not (work.path / "src_commands.txt").read_text().strip() or "copied 0 objects" in r.stderr or \
        "copied " not in r.stderr
    assert work.ledger_lines() == 7
    assert work.run("dest_sync_mvol.py", "--once").returncode == 0
    for k, v in data.items():
        assert work.dest_bytes(k) == v


def test_source_object_overwritten_mid_run_moves_again(work):
    work.put("doc.txt", b"version one")
    work.put("other.txt", b"stays")
    proc = work.start("sync_mvol.py")
    try:
        wait_for(lambda: "doc.txt" in work.listing(work.dst, "copy/"), 60, "v1 at the destination")
        wait_for(lambda: work.ledger_lines("dest_ledger.csv") == 3, 60, "both confirmed")
        work.put("doc.txt", b"version two, longer")
        wait_for(lambda: work.dest_bytes("doc.txt") == b"version two, longer", 60, "v2 at the destination")
        wait_for(lambda: work.ledger_lines("dest_ledger.csv") == 3 and work.ledger_lines() == 3, 30,
                 "ledgers compacted to one row per object")
        work.put("doc.txt", b"v3 same len 123456")  # same size, new content: the ETag decides
        wait_for(lambda: work.dest_bytes("doc.txt") == b"v3 same len 123456", 60, "v3 at the destination")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert work.run("repair_ledger.py").returncode == 0


def test_same_size_changes_behind_its_back_with_incomparable_etags_move_again(work):
    """A multipart source object (its ETag cannot be compared with the destination's single-PUT
    MD5): the destination copy replaced by other bytes of the same size, then the source object
    replaced the same way, each after a completed run. The ledgers know the version they moved,
    so neither counts as moved by size."""
    mib = 1024 * 1024
    v1, v2 = os.urandom(12 * mib), os.urandom(12 * mib)
    work.put_multipart("mp.bin", v1)
    work.put("small.txt", b"stays")
    assert work.run("sync_mvol.py", "--once").returncode == 0
    assert work.dest_bytes("mp.bin") == v1
    # the destination object replaced behind its back
    work.server.client().put_object(Bucket=work.dst, Key="copy/mp.bin", Body=os.urandom(12 * mib))
    r = work.run("repair_ledger.py")
    assert r.returncode == 1 and re.search(r"Differ:\s+1", r.stdout), r.stdout
    assert work.run("sync_mvol.py", "--once").returncode == 0
    assert work.dest_bytes("mp.bin") == v1
    # the source object replaced by another multipart object of the same size
    work.put_multipart("mp.bin", v2)
    r = work.run("sync_mvol.py", "--once")
    assert r.returncode == 0, r.stderr[-2000:]
    assert work.dest_bytes("mp.bin") == v2
    assert work.run("repair_ledger.py").returncode == 0


def test_a_lost_staged_copy_of_a_new_version_is_not_confirmed_by_the_old_one_at_the_destination(work):
    """The source object changed (same size) after a completed run; its new version is staged and
    ledgered, then its staged copy is lost. The destination still holds the old version, whose
    multipart ETag cannot be compared with the new single-part one: the same size is not enough,
    since the destination ledger knows it was confirmed for the old version. It moves again."""
    mib = 1024 * 1024
    work.cfg["transfer_settings"]["part_size_mb"] = 5  # the 6 MiB object is a multipart upload
    work.write_config()
    v1, v2 = os.urandom(6 * mib), os.urandom(6 * mib)
    work.put("m.bin", v1)
    assert work.run("sync_mvol.py", "--once").returncode == 0
    assert "-" in work.server.client().head_object(Bucket=work.dst, Key="copy/m.bin")["ETag"]
    work.put("m.bin", v2)
    assert work.run("src_sync_mvol.py", "--once").returncode == 0
    for f in work.staged_files():
        f.unlink()  # the new version's staged copy is lost
    proc = work.start("dest_sync_mvol.py")  # the destination side on its own finds it lost
    try:
        wait_for(lambda: "m.bin" not in (work.path / "src_ledger.csv").read_text()
                 or ",size," in (work.path / "dest_ledger.csv").read_text(), 60, "the lost copy dealt with")
    finally:
        proc.terminate()
        proc.wait(30)
    assert ",size," not in (work.path / "dest_ledger.csv").read_text()  # not confirmed by size
    r = work.run("sync_mvol.py", "--once")
    assert r.returncode == 0, r.stderr[-2000:]
    assert work.dest_bytes("m.bin") == v2
    rows = [line for line in (work.path / "dest_ledger.csv").read_text().splitlines() if line.startswith("m.bin,")]
    assert len(rows) == 1 and ",size," not in rows[0], rows


def test_credentials_only_in_each_sides_own_child_environment(work, tmp_path):
    """s5cmd children get their side's keys in their environment, never in argv."""
    real = subprocess.run([str(ROOT / "bin" / "s5cmd"), "version"], capture_output=True, text=True)
    assert real.returncode == 0
    record = tmp_path / "s5cmd-calls.txt"
    wrapper = tmp_path / "s5cmd-wrapper"
    wrapper.write_text(f"""#!{sys.executable}
import json, os, sys
with open({str(record)!r}, "a") as fh:
    fh.write(json.dumps({{"argv": sys.argv, "env": dict(os.environ)}}) + "\\n")
os.execv({str(ROOT / "bin" / "s5cmd")!r}, [{str(ROOT / "bin" / "s5cmd")!r}] + sys.argv[1:])
""")
    wrapper.chmod(0o755)
    work.cfg["source"].update(access_key="SRCACCESSKEY", secret_access_key="SRCSECRET0000")
    work.cfg["destination"].update(access_key="DSTACCESSKEY", secret_access_key="DSTSECRET0000")
    work.cfg["transfer_settings"]["s5cmd_path"] = str(wrapper)
    work.write_config()
    work.put("a.txt", b"a")
    r = work.run("sync_mvol.py", "--once", "--debug", env={"AWS_SECRET_ACCESS_KEY": "OPERATORSHELLSECRET"})
    assert r.returncode == 0, r.stderr
    import json

    calls = [json.loads(l) for l in record.read_text().splitlines()]
    assert len(calls) == 2
    for call in calls:
        argv = " ".join(call["argv"])
        assert "SECRET" not in argv and "ACCESSKEY" not in argv
        assert "OPERATORSHELLSECRET" not in json.dumps(call)  # config keys replace the shell's
    by_side = {("download" if c["env"].get("AWS_ACCESS_KEY_ID") == "SRCACCESSKEY" else "upload"): c["env"]
               for c in calls}
    assert by_side["download"]["AWS_SECRET_ACCESS_KEY"] == "SRCSECRET0000"
    assert "DSTSECRET0000" not in json.dumps(by_side["download"])
    assert by_side["upload"]["AWS_SECRET_ACCESS_KEY"] == "DSTSECRET0000"
    assert "SRCSECRET0000" not in json.dumps(by_side["upload"])
    for text in (r.stdout + r.stderr, (work.path / "src_commands.txt").read_text(),
                 (work.path / "dest_commands.txt").read_text()):
        assert "SECRET0000" not in text


needs_root = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mount"), reason="needs root for a tmpfs")


@needs_root
def test_volume_that_fills_up_mid_copy_retries_later(work, tmp_path):
    """Another process fills the volume while a copy is in flight: that object is not ledgered,
    the budget is corrected from the real free space, and it moves once space is back."""
    vol = tmp_path / "tiny"
    vol.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(vol)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount tmpfs: {r.stderr!r}")
    try:
        work.cfg["local"]["volumes"] = [str(vol)]
        work.write_config()
        big = os.urandom(5 * 1024 * 1024)
        small = {f"s{i}": os.urandom(1000) for i in range(3)}
        # fill the volume before the first cycle so the plan is made on a nearly empty disk,
        # then the filler grows: simulate with a file written while the source side runs
        filler = vol / "filler"
        work.put("big.bin", big)
        for k, v in small.items():
            work.put(k, v)
        filler.write_bytes(b"\0" * (6 * 1024 * 1024))  # only ~2 MiB left: big.bin cannot fit
        proc = work.start("src_sync_mvol.py", log_name="src.log")
        try:
            wait_for(lambda: work.ledger_lines() == 4, 60, "the small objects to be ledgered")
            log = (work.path / "src.log").read_text()
            assert "wait for space" in log
            assert "big.bin" not in (work.path / "src_ledger.csv").read_text()
            filler.unlink()
            wait_for(lambda: work.ledger_lines() == 5, 60, "big.bin once space is back")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        assert work.run("dest_sync_mvol.py", "--once").returncode == 0
        assert work.dest_bytes("big.bin") == big
    finally:
        subprocess.run(["umount", "-l", str(vol)], capture_output=True)


@needs_root
def test_disk_full_during_copy_is_not_ledgered(work, tmp_path):
    """The plan believed there was room (reserve 0, budget from statvfs), but the copy hit ENOSPC."""
    vol = tmp_path / "tiny"
    vol.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(vol)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount tmpfs: {r.stderr!r}")
    link = FaultProxy(work.server.url, bandwidth=1_000_000).start()  # the copy takes ~3 s
    try:
        work.cfg["local"]["volumes"] = [str(vol)]
        work.cfg["transfer_settings"]["src_endpoint_url"] = link.url
        work.write_config()
        # two objects of 3 MiB: the planner sees 4 MiB free and places one; a hostile neighbour
        # takes the space after planning by holding a file that grows while s5cmd writes.
        blob = os.urandom(3 * 1024 * 1024)
        work.put("one.bin", blob)
        hog = subprocess.Popen([sys.executable, "-c", f"""
import os, time
p = {str(vol / 'hog')!r}
part = {str(vol / 's5jtransfer' / 'partial')!r}
deadline = time.time() + 60
while time.time() < deadline:
    if os.path.isdir(part) and os.listdir(part):
        break
    time.sleep(0.001)
with open(p, 'wb') as fh:
    try:
        fh.write(b'\\0' * 4 * 1024 * 1024)
    except OSError:
        pass
"""])
        proc = work.start("src_sync_mvol.py", log_name="src.log")
        try:
            hog.wait(timeout=60)
            # something else filled the volume: a pause on it, not a failed try (the copy waits)
            wait_for(lambda: "no space left on" in (work.path / "src.log").read_text()
                     or work.ledger_lines() == 2, 60, "the copy to finish or wait for space")
            assert work.ledger_lines() == 1, "the copy finished before the volume filled up"
            assert "one.bin" not in (work.path / "src_ledger.csv").read_text()
            (vol / "hog").unlink()
            wait_for(lambda: work.ledger_lines() == 2, 60, "one.bin after space is freed")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            hog.kill()
        assert work.run("dest_sync_mvol.py", "--once").returncode == 0
        assert work.dest_bytes("one.bin") == blob
    finally:
        link.stop()
        subprocess.run(["umount", "-l", str(vol)], capture_output=True)


def test_wiped_staging_volume_is_refetched_not_waited_for(work):
    """Staged, ledgered, then the volume is wiped (disk replaced): the objects move again."""
    data = {f"w{i}.bin": os.urandom(8000) for i in range(6)}
    work.put_all(data)
    assert work.run("src_sync_mvol.py", "--once").returncode == 0
    for p in work.staged_files():
        p.unlink()
    # the two sides on their own (no sync_mvol.py verification first): the destination side
    # notices the vanished copies and hands them back to the running source side
    src = work.start("src_sync_mvol.py", log_name="src.log")
    try:
        r = work.run("dest_sync_mvol.py", "--once", timeout=120)
    finally:
        src.send_signal(signal.SIGTERM)
        src.wait(timeout=30)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "have no staged copy on any volume and are not at the destination" in r.stderr
    for k, v in data.items():
        assert work.dest_bytes(k) == v
    assert work.ledger_lines() == len(data) + 1


@needs_root
def test_a_ledger_that_cannot_be_written_holds_its_rows_and_the_run_still_completes(work, tmp_path):
    """The working folder's disk fills while the source side stages (its staging volumes have
    room): rows that cannot be appended are held, never dropped and never taken for done; once
    there is space again every object is ledgered once and the run completes."""
    wf = tmp_path / "wf"
    wf.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(wf)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount tmpfs: {r.stderr!r}")
    link = FaultProxy(work.server.url, bandwidth=300_000).start()  # ~120 objects in ~2 s
    try:
        data = {f"f{i:03d}.bin": os.urandom(5000) for i in range(120)}
        work.put_all(data)
        work.cfg["transfer_settings"]["src_endpoint_url"] = link.url
        work.cfg["transfer_settings"]["src_workers"] = 4
        work.write_config()
        shutil.copy(work.path / "config.yaml", wf / "config.yaml")
        log = open(tmp_path / "src.log", "wb")  # not on the full disk: the warning must be readable
        proc = subprocess.Popen(work.argv("src_sync_mvol.py", "--once"), cwd=wf, stdout=log, stderr=subprocess.STDOUT,
                                env=script_env(), stdin=subprocess.DEVNULL)
        filler = wf / "filler"
        try:
            wait_for(lambda: (wf / "src_ledger.csv").exists() and (wf / "src_ledger.csv").stat().st_size > 200, 60,
                     "the first rows")
            fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
            try:  # take every byte left
                while os.write(fd, b"\0" * 4096):
                    pass
            except OSError:
                pass
            finally:
                os.close(fd)
            wait_for(lambda: "cannot append to src_ledger.csv" in (tmp_path / "src.log").read_text(errors="replace"), 60,
                     "an append refused for lack of space")
            # the batch ends while the disk is still full: its last flush fails, so does the cycle
            wait_for(lambda: "cycle failed" in (tmp_path / "src.log").read_text(errors="replace"), 60,
                     "the cycle to fail rather than count unwritten rows as done")
            assert proc.poll() is None  # not finished while rows are not on disk
            filler.unlink()
            assert proc.wait(timeout=90) == 0, (tmp_path / "src.log").read_text(errors="replace")[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()
        keys = [line.split(",")[0] for line in (wf / "src_ledger.csv").read_text().splitlines()[1:]]
        assert sorted(keys) == sorted(data)  # every object once, none lost
        assert "adopted" in (tmp_path / "src.log").read_text()  # the staged copies, not fetched again
    finally:
        link.stop()
        subprocess.run(["umount", "-l", str(wf)], capture_output=True)
