"""repair_ledger.py, reset.py, bad configs and the connect tests, as an operator runs them."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import pytest

from conftest import wait_for


def seed(work, n: int = 10) -> dict[str, bytes]:
    data = {f"k{i:03d}.bin": os.urandom(500 + i) for i in range(n)}
    work.put_all(data)
    return data


def test_repair_after_objects_deleted_at_destination(work):
    data = seed(work)
    assert work.run("sync_mvol.py", "--once").returncode == 0
    c = work.server.client()
    gone = ["k001.bin", "k005.bin", "k009.bin"]
    for k in gone:
        c.delete_object(Bucket=work.dst, Key="copy/" + k)
    r = work.run("repair_ledger.py")
    assert r.returncode == 1
    assert "Missing:              3" in r.stdout
    assert "Moved (verified):     7" in r.stdout
    missing = (work.path / "missing_keys.txt").read_text().split("\n")[:-1]
    assert sorted(missing) == gone
    # the ledger no longer lists them, so the next run moves them again
    assert work.ledger_lines() == len(data) - len(gone) + 1
    assert not any(k in (work.path / "src_ledger.csv").read_text() for k in gone)
    assert work.run("sync_mvol.py", "--once").returncode == 0
    r = work.run("repair_ledger.py")
    assert r.returncode == 0, r.stdout
    for k in gone:
        assert work.dest_bytes(k) == data[k]
    assert work.ledger_lines() == len(data) + 1


def test_repair_counts_staged_objects_as_pending_not_missing(work):
    data = seed(work, 6)
    assert work.run("src_sync_mvol.py", "--once").returncode == 0  # staged and ledgered, not uploaded
    r = work.run("repair_ledger.py")
    assert r.returncode == 1
    assert "Pending (staged):     6" in r.stdout and "Missing:              0" in r.stdout
    assert work.ledger_lines() == len(data) + 1  # pending keys stay in the ledger
    assert work.run("dest_sync_mvol.py", "--once").returncode == 0
    assert work.run("repair_ledger.py").returncode == 0


def test_repair_flags_a_changed_destination_object_as_differ(work):
    data = seed(work, 4)
    assert work.run("sync_mvol.py", "--once").returncode == 0
    work.server.client().put_object(Bucket=work.dst, Key="copy/k002.bin", Body=b"tampered")
    r = work.run("repair_ledger.py")
    assert r.returncode == 1 and "Differ:               1" in r.stdout
    assert work.run("sync_mvol.py", "--once").returncode == 0
    assert work.dest_bytes("k002.bin") == data["k002.bin"]
    assert work.run("repair_ledger.py").returncode == 0


def test_repair_drops_a_destination_ledger_row_that_does_not_match_the_destination(work):
    seed(work, 3)
    assert work.run("sync_mvol.py", "--once").returncode == 0
    path = work.path / "dest_ledger.csv"
    lines = path.read_text().splitlines()
    key, size, *rest = lines[1].split(",")
    lines[1] = ",".join([key, str(int(size) + 1), *rest])  # edited by hand: a wrong size
    path.write_text("\n".join(lines) + "\n")
    assert work.run("repair_ledger.py").returncode == 0  # the object itself is there: moved
    # the edited row is gone; the object's ETag equals the source's, so it is ledgered anew as it is there
    mine = [line for line in path.read_text().splitlines() if line.startswith(key + ",")]
    assert len(mine) == 1 and mine[0].split(",")[1] == size, mine
    assert work.ledger_lines("dest_ledger.csv") == 4
    assert work.run("sync_mvol.py", "--once").returncode == 0
    assert work.run("repair_ledger.py").returncode == 0


def test_the_destination_side_names_the_source_when_the_source_fails(work):
    """dest_sync_mvol.py --once lists the source to know it is complete: a failure there names
    the source's key to fix, not the destination's."""
    work.cfg["source"]["bucket_name"] = "no-such-bucket-s5j"
    work.write_config()
    proc = work.start("dest_sync_mvol.py", "--once")
    try:
        log = work.path / "dest_sync_mvol.py.log"
        wait_for(lambda: "cycle failed" in log.read_text(errors="replace"), 60, "the failed cycle")
        line = next(x for x in log.read_text(errors="replace").splitlines() if "cycle failed" in x)
        assert "'no-such-bucket-s5j'" in line and "source.bucket_name" in line and "destination" not in line, line
    finally:
        proc.terminate()
        proc.wait(30)


def test_reset_starts_over(work):
    seed(work, 3)
    work.cfg["destination"]["delete_staging_data"] = False
    work.write_config()
    assert work.run("sync_mvol.py", "--once").returncode == 0
    other = work.volumes[0] / "operator-notes.txt"
    other.write_text("keep me")
    (work.volumes[0] / "lost+found").mkdir()
    assert work.staged_files() and (work.path / ".ledger_index.db").exists()
    r = work.run("reset.py")
    assert r.returncode == 0, r.stderr
    assert (work.path / "src_ledger.csv").read_text() == "Key,Size,ETag,Verified,MD5\n"
    for name in ("dest_ledger.csv", "src_commands.txt", "dest_commands.txt", ".ledger_index.db"):
        assert not (work.path / name).exists()
    assert work.staged_files() == []
    assert other.read_text() == "keep me" and (work.volumes[0] / "lost+found").is_dir()
    assert (work.path / "staging").is_dir()  # local.directory recreated
    # and everything moves again
    assert work.run("sync_mvol.py", "--once").returncode == 0
    assert work.ledger_lines() == 4


def test_reset_refuses_while_a_sync_runs_in_the_folder(work):
    seed(work, 2)
    proc = work.start("dest_sync_mvol.py")
    try:
        lock = work.path / ".dest_sync_mvol.lock"
        wait_for(lambda: lock.exists() and lock.read_text().strip() == str(proc.pid), 30, "the sync's lock")
        (work.path / "src_commands.txt").write_text("keep me\n")
        r = work.run("reset.py")
        assert r.returncode == 3
        assert "dest_sync_mvol.py is running" in r.stderr and str(proc.pid) in r.stderr
        assert (work.path / "src_commands.txt").read_text() == "keep me\n"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.mark.parametrize("script", ["sync_mvol.py", "repair_ledger.py", "status.py"])
def test_a_log_file_that_cannot_be_opened_is_one_line_and_exit_2(work, script):
    r = work.run(script, "--log-file", str(work.path / "no-such-folder" / "x.log"))
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and "--log-file" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_a_working_folder_it_cannot_write_in_is_named_with_exit_2(work):
    (work.path / ".sync_mvol.lock").mkdir()  # as a read-only folder would, the lock cannot be written
    r = work.run("sync_mvol.py", "--once")
    assert r.returncode == 2, r.stderr
    assert "cannot write in the working folder" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("script", ["sync_mvol.py", "status.py"])  # every script has the same first lines
def test_ctrl_c_while_a_script_starts_is_no_traceback(work, script):
    """Ctrl-C at any moment of the start (modules still loading, or the command running): exit
    130 (or the signal itself, before Python has set up its handler), never a traceback from the
    script or the suite. (The interpreter's own start-up, before the script's first line, is
    Python's: a Ctrl-C in those few milliseconds is reported by Python itself.)"""
    for delay in (0.02, 0.05, 0.1, 0.2):
        proc = subprocess.Popen(work.argv(script), cwd=work.path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, text=True)
        time.sleep(delay)  # a moment of the start, not a wait for something
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        # a frame of the suite, or of the script past its first line ("line 0": not started yet)
        ours = "Traceback" in err and ("s5jtransfer" in err or re.search(re.escape(script) + r'", line [1-9]', err))
        assert not ours and ("KeyboardInterrupt" not in err or "Traceback" in err), (delay, err)
        # Python's own start-up, before the script: "Fatal Python error: init_import_site" (or
        # init_sys_streams, ...), whichever step of the interpreter's start the signal lands in
        python_start = re.search(r"Fatal Python error: init_\w+", err) is not None
        assert proc.returncode in (0, 130, -signal.SIGINT) or python_start, (delay, proc.returncode, err)


def test_an_s5cmd_path_that_is_not_one_stops_the_sync_with_exit_2_instead_of_restarting(work):
    work.cfg["transfer_settings"]["s5cmd_path"] = str(work.path / "no-s5cmd")
    work.write_config()
    r = work.run("sync_mvol.py", "--once", timeout=60)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "transfer_settings.s5cmd_path" in r.stderr and "restarting" not in r.stderr


@pytest.mark.parametrize("script", ["sync_mvol.py", "reset.py", "repair_ledger.py"])
def test_a_staging_directory_that_is_a_file_is_exit_2_and_nothing_is_touched(work, script):
    seed(work, 1)
    (work.path / "src_ledger.csv").write_text("Key,Size,ETag,Verified,MD5\nk,1,e,md5,e\n")
    (work.path / "afile").write_text("x")
    work.cfg["local"] = {"directory": str(work.path / "afile"), "volumes": []}
    work.write_config()
    r = work.run(script)
    assert r.returncode == 2 and "local.directory" in r.stderr and "is a file" in r.stderr, r.stderr
    assert (work.path / "src_ledger.csv").read_text() == "Key,Size,ETag,Verified,MD5\nk,1,e,md5,e\n"


def test_reset_that_cannot_empty_a_staging_area_resets_nothing(work, monkeypatch):
    """A read-only mount (root ignores file modes, so the refusal is made here): the ledgers stay."""
    import errno

    from s5jtransfer import commands, volumes

    (work.path / "src_ledger.csv").write_text("Key,Size,ETag,Verified,MD5\nk,1,e,md5,e\n")
    (work.volumes[0] / "s5jtransfer").mkdir()

    def refuse(path, *a, **k):
        raise OSError(errno.EROFS, "Read-only file system", path)

    monkeypatch.setattr(volumes.shutil, "rmtree", refuse)
    monkeypatch.chdir(work.path)
    assert commands.reset([]) == 1
    assert (work.path / "src_ledger.csv").read_text() == "Key,Size,ETag,Verified,MD5\nk,1,e,md5,e\n"


@pytest.mark.parametrize("value", ["-1", "nan", "1e300", "soon"])
def test_status_watch_takes_a_sane_interval_or_says_so(work, value):
    r = work.run("status.py", "--watch", value)
    assert r.returncode == 2 and "--watch" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_a_missing_volume_is_exit_2_before_anything_is_created_on_the_others(work):
    work.cfg["local"]["volumes"] = [str(work.volumes[0]), str(work.path / "not-mounted")]
    work.write_config()
    for script in ("src_sync_mvol.py", "dest_sync_mvol.py"):
        r = work.run(script, "--once")
        assert r.returncode == 2 and "not-mounted" in r.stderr, r.stderr
    assert list(work.volumes[0].iterdir()) == []


BAD_CONFIGS = [
    (lambda c: c["source"].pop("bucket_name"), "source.bucket_name"),
    (lambda c: c["source"].update(bucket_prefx="x/"), "did you mean 'bucket_prefix'"),
    (lambda c: c["source"].update(bucket_prefix="/data/"), "source.bucket_prefix"),
    (lambda c: c["destination"].update(bucket_prefix="copy"), "trailing slash"),
    (lambda c: c["destination"].update(region="snow"), "destination.region"),
    (lambda c: c["transfer_settings"].update(max_size_to_transfer_src2l="lots"), "max_size_to_transfer_src2l"),
    (lambda c: c["transfer_settings"].update(src_endpoint_url="192.0.2.1:8080"), "src_endpoint_url"),
    (lambda c: c.pop("local"), "local"),
]


# Every rule through sync_mvol.py; every other script with two of them.
CASES = [("sync_mvol.py", m, e) for m, e in BAD_CONFIGS] + [
    (script, m, e) for script in ("src_sync_mvol.py", "dest_sync_mvol.py", "repair_ledger.py", "reset.py",
                                  "src_connect_test.py", "dest_connect_test.py") for m, e in BAD_CONFIGS[:4:3]]


@pytest.mark.parametrize("script,mutate,expected", CASES, ids=[f"{s}-{e}" for s, _, e in CASES])
def test_bad_config_one_line_exit_2_nothing_touched(work, script, mutate, expected):
    mutate(work.cfg)
    work.write_config()
    before = sorted(p.name for p in work.path.rglob("*"))
    r = work.run(script)
    assert r.returncode == 2
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, r.stderr
    assert "config.yaml" in lines[0] and expected in lines[0]
    assert "Traceback" not in r.stderr
    assert sorted(p.name for p in work.path.rglob("*")) == before


def test_unreadable_yaml_names_the_line(work):
    (work.path / "config.yaml").write_text("source:\n  bucket_name: a\n    region: x\n")
    r = work.run("src_sync_mvol.py")
    assert r.returncode == 2
    assert "config.yaml: line 3" in r.stderr and "Traceback" not in r.stderr


def test_missing_config_says_where_to_run(work):
    (work.path / "config.yaml").unlink()
    r = work.run("sync_mvol.py", "--once")
    assert r.returncode == 2 and "config.yaml: not found in" in r.stderr


def test_world_readable_config_with_keys_warns(work):
    (work.path / "config.yaml").chmod(0o644)
    r = work.run("src_connect_test.py", "--quiet")
    assert r.returncode == 0
    assert "chmod 600 config.yaml" in r.stderr


def test_connect_tests_print_listing_and_totals(work):
    data = seed(work, 4)
    r = work.run("src_connect_test.py")
    assert r.returncode == 0, r.stderr
    assert f"Total Number of Objects: {len(data)}" in r.stdout
    assert f"Total Size of Objects (bytes): {sum(map(len, data.values()))}" in r.stdout
    assert "'k000.bin': 500" in r.stdout
    r = work.run("dest_connect_test.py")
    assert r.returncode == 0 and "Total Number of Objects: 0" in r.stdout


@pytest.mark.parametrize("change,word", [
    (lambda w: w.cfg["transfer_settings"].update(src_endpoint_url="http://127.0.0.1:9"), "endpoint"),
    (lambda w: w.cfg["transfer_settings"].update(src_endpoint_url=w.server.url.replace("http:", "https:")), "TLS"),
    (lambda w: w.cfg["source"].update(bucket_name="no-such-bucket-s5j"), "bucket"),
], ids=["endpoint", "tls", "bucket"])
def test_connect_test_failure_names_what_failed(work, change, word):
    change(work)
    work.cfg["transfer_settings"]["retries"] = 1
    work.write_config()
    r = work.run("src_connect_test.py", timeout=90)
    assert r.returncode == 1
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and word in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_secrets_never_reach_logs_or_run_files(work):
    secret = "SUPERSECRETKEY123456"
    work.cfg["source"]["secret_access_key"] = secret
    work.cfg["destination"]["secret_access_key"] = secret
    work.write_config()
    seed(work, 3)
    r = work.run("sync_mvol.py", "--once", "--debug")
    assert r.returncode == 0
    for name in ("src_commands.txt", "dest_commands.txt", "src_ledger.csv", "dest_ledger.csv"):
        assert secret not in (work.path / name).read_text()
    assert secret not in r.stdout + r.stderr


def test_upgrade_from_an_original_v11_ledger_moves_nothing_twice(work):
    """An operator switches mid-job from the original scripts: their two-column ledger lists what
    they moved (already at the destination, staging freed). Nothing listed there moves again."""
    data = {f"old{i}.bin": os.urandom(2000 + i) for i in range(5)}
    data.update({f"new{i}.bin": os.urandom(1500 + i) for i in range(3)})
    c = work.server.client()
    for k, v in data.items():
        work.put(k, v)
        if k.startswith("old"):  # moved by the original scripts
            c.put_object(Bucket=work.dst, Key="copy/" + k, Body=v)
    # multipart at the source, one PUT at the destination: the ETags cannot be compared
    data["oldmp.bin"] = os.urandom(6 * 1024 * 1024)
    work.put_multipart("oldmp.bin", data["oldmp.bin"])
    c.put_object(Bucket=work.dst, Key="copy/oldmp.bin", Body=data["oldmp.bin"])
    (work.path / "src_ledger.csv").write_text(
        "Key,Size\n" + "".join(f"{k},{len(v)}\n" for k, v in data.items() if k.startswith("old")))
    log_start = work.server.log_path.stat().st_size
    r = work.run("sync_mvol.py", "--once", timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    for k, v in data.items():
        assert work.dest_bytes(k) == v
    with open(work.server.log_path, "rb") as fh:
        fh.seek(log_start)
        log = fh.read().decode("utf-8", "replace")
    for k in data:
        fetched = f"GET /{work.src}/data/{k} " in log
        assert fetched == k.startswith("new"), k  # only the new objects were read from the source
    assert work.ledger_lines() == len(data) + 1
    assert work.run("repair_ledger.py").returncode == 0


def test_a_damaged_ledger_line_hides_no_rows_and_repair_rewrites_the_ledgers_without_it(work):
    data = seed(work, 5)
    assert work.run("sync_mvol.py", "--once").returncode == 0
    for name in ("src_ledger.csv", "dest_ledger.csv"):
        p = work.path / name
        lines = p.read_text().splitlines()
        p.write_text("\n".join(lines[:2] + ['oops,"unclosed'] + lines[2:]) + "\n")
    r = work.run("sync_mvol.py", "--once")
    assert r.returncode == 0 and "nothing to do" in r.stderr, r.stderr[-2000:]
    assert "line(s) are not ledger rows" in r.stderr
    assert work.run("repair_ledger.py").returncode == 0
    for name in ("src_ledger.csv", "dest_ledger.csv"):
        assert work.ledger_lines(name) == len(data) + 1 and "unclosed" not in (work.path / name).read_text()


def test_a_comparison_beside_running_sides_does_not_move_an_object_uploaded_while_it_lists(work, monkeypatch):
    """An idle check or repair_ledger.py beside running sides: an object the destination side
    uploads, ledgers and frees while the comparison lists the destination is not in that
    listing. The ledgers are read before the listings, so it counts as pending, and the rows the
    side wrote meanwhile are kept: nothing is handed back to move twice."""
    from s5jtransfer import compare, config, verify

    data = {"a.bin": b"a" * 100, "b.bin": b"b" * 200}
    work.put_all(data)
    assert work.run("src_sync_mvol.py", "--once").returncode == 0
    monkeypatch.chdir(work.path)
    cfg = config.load("config.yaml")
    listing = compare.list_into

    def list_while_b_is_uploaded(index, name, side, cfg_):
        got = listing(index, name, side, cfg_)
        if side.name == "destination":  # b.bin goes out right after this listing was made
            work.server.client().put_object(Bucket=work.dst, Key="copy/b.bin", Body=data["b.bin"])
            etag = work.server.client().head_object(Bucket=work.dst, Key="copy/b.bin")["ETag"].strip('"')
            with open("dest_ledger.csv", "a") as fh:
                fh.write(("" if os.path.exists("dest_ledger.csv") and os.path.getsize("dest_ledger.csv") else
                          "Key,Size,ETag,Verified,SourceETag\n") + f"b.bin,200,{etag},md5,{etag}\n")
            for f in work.staged_files():
                if f.stat().st_size == 200:
                    f.unlink()
        return got

    monkeypatch.setattr(compare, "list_into", list_while_b_is_uploaded)
    rep, _fig = compare.compare_and_repair(cfg)
    assert rep.counts[verify.PENDING] == 2 and rep.left() == ["a.bin", "b.bin"]  # b.bin: not missing
    src_keys = {line.split(",")[0] for line in (work.path / "src_ledger.csv").read_text().splitlines()[1:]}
    assert src_keys == {"a.bin", "b.bin"}  # nothing handed back
    assert "b.bin,200," in (work.path / "dest_ledger.csv").read_text()  # the side's row kept
