"""The operator's workflow end to end: real scripts, real s5cmd, real S3 server on loopback."""

from __future__ import annotations

import os
import re
import signal
import subprocess


from conftest import wait_for

MIB = 1024 * 1024


def seed(work, n_small: int = 30, big: bool = True) -> dict[str, bytes]:
    data = {f"dir{i % 3}/file{i}.bin": os.urandom(100 + 37 * i) for i in range(n_small)}
    data["empty.txt"] = b""
    data["odd name 'q' $(echo x) *[x].txt"] = b"odd"
    work.put_all(data)
    if big:
        data["big/multipart.bin"] = os.urandom(11 * MIB)
        work.put_multipart("big/multipart.bin", data["big/multipart.bin"])
    return data


def assert_all_moved(work, data: dict[str, bytes]) -> None:
    listing = work.listing(work.dst, "copy/")
    assert set(listing) == set(data)
    for k, v in data.items():
        assert work.dest_bytes(k) == v, k
    assert work.staged_files() == []


def test_once_moves_everything_verified_and_ledger_counts(work):
    data = seed(work)
    r = work.run("sync_mvol.py", "--once")
    assert r.returncode == 0, r.stderr
    assert_all_moved(work, data)
    # README promise: wc -l src_ledger.csv == object count + 1
    assert work.ledger_lines() == len(data) + 1
    header = (work.path / "src_ledger.csv").read_text().splitlines()[0]
    assert header.startswith("Key,Size")
    assert work.ledger_lines("dest_ledger.csv") == len(data) + 1
    # every row records the check it passed: md5 for single part, multipart for the big one
    text = (work.path / "src_ledger.csv").read_text()
    assert ",multipart," in text and ",md5," in text
    assert (work.path / "src_commands.txt").exists() and (work.path / "dest_commands.txt").exists()


def test_second_run_moves_nothing(work):
    data = seed(work, n_small=5, big=False)
    assert work.run("sync_mvol.py", "--once").returncode == 0
    before = (work.path / "src_ledger.csv").read_bytes(), (work.path / "dest_ledger.csv").read_bytes()
    for name in ("src_commands.txt", "dest_commands.txt"):
        (work.path / name).unlink(missing_ok=True)  # small objects need no run file at all
    log_start = work.server.log_path.stat().st_size
    r = work.run("sync_mvol.py", "--once")
    assert r.returncode == 0, r.stderr
    after = (work.path / "src_ledger.csv").read_bytes(), (work.path / "dest_ledger.csv").read_bytes()
    assert after == before
    # no copy ran at all: no run file was written, no object was read or written
    assert not (work.path / "src_commands.txt").exists()
    assert not (work.path / "dest_commands.txt").exists()
    with open(work.server.log_path, "rb") as fh:
        fh.seek(log_start)
        log = fh.read().decode("utf-8", "replace")
    assert f"GET /{work.src}/data/dir" not in log and "PUT /" not in log and "HEAD /" not in log
    assert_all_moved(work, data)


def test_tldr_workflow_background_syncs_then_repair(work):
    """README TLDR: start both syncs in the background, watch wc -l, stop them, repair."""
    data = seed(work, n_small=20)
    src = work.start("src_sync_mvol.py")
    dest = work.start("dest_sync_mvol.py")
    try:
        wait_for(lambda: work.ledger_lines() == len(data) + 1, 60, "src_ledger.csv to reach count + 1")
        wait_for(lambda: work.ledger_lines("dest_ledger.csv") == len(data) + 1, 60, "every object confirmed")
        wait_for(lambda: work.staged_files() == [], 30, "staged copies to be freed")
    finally:
        for p in (src, dest):
            p.send_signal(signal.SIGTERM)
        for p in (src, dest):
            p.wait(timeout=30)
    assert src.returncode == 128 + signal.SIGTERM and dest.returncode == 128 + signal.SIGTERM
    r = work.run("repair_ledger.py")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Moved (verified):     %d" % len(data) in r.stdout
    assert_all_moved(work, data)


def test_source_once_ledgers_everything_then_destination_once(work):
    data = seed(work, n_small=8, big=False)
    r = work.run("src_sync_mvol.py", "--once")
    assert r.returncode == 0, r.stderr
    assert work.ledger_lines() == len(data) + 1
    assert work.listing(work.dst, "copy/") == {}
    assert len(work.staged_files()) == len(data)
    r = work.run("dest_sync_mvol.py", "--once")
    assert r.returncode == 0, r.stderr
    assert_all_moved(work, data)


def test_uploads_through_s5cmd_are_confirmed_by_one_listing_page_not_a_head_each(work):
    """dest_sync_mvol.py --once alone: 150 uploads through s5cmd (no PUT answer to confirm them)
    cost less as one listing page (about 100 HeadObjects: confirm.LIST_PAGE_COST) than as 150
    HeadObjects."""
    data = {f"c{i:03d}.bin": os.urandom(200 + i) for i in range(150)}
    work.put_all(data)
    # the destination already holds 1,001 other objects after these keys: a page more that a
    # listing of the uploads' range of keys never asks for
    from concurrent.futures import ThreadPoolExecutor

    cl = work.server.client()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: cl.put_object(Bucket=work.dst, Key=f"copy/zz-other-{i:04d}", Body=b""), range(1001)))
    assert work.run("src_sync_mvol.py", "--once").returncode == 0
    log_start = work.server.log_path.stat().st_size
    r = work.run("dest_sync_mvol.py", "--once")
    assert r.returncode == 0, r.stderr
    with open(work.server.log_path, "rb") as fh:
        fh.seek(log_start)
        log = fh.read().decode("utf-8", "replace").splitlines()
    heads = [ln for ln in log if f"HEAD /{work.dst}/" in ln]
    dest_lists = [ln for ln in log if f"GET /{work.dst}?" in ln and "list-type=2" in ln]
    puts = [ln for ln in log if f"PUT /{work.dst}/" in ln]
    assert dest_lists, "\n".join(log[-40:])
    assert all("start-after=" in ln for ln in dest_lists) and len(dest_lists) <= 2  # a page per batch
    assert len(heads) < len(data)
    assert len(puts) == len(data)  # one PUT each: nothing uploaded twice
    for k, v in data.items():
        assert work.dest_bytes(k) == v
    assert work.ledger_lines("dest_ledger.csv") == len(data) + 1


def test_every_request_of_a_default_run_comes_from_s5cmd_or_botocore(work):
    """The defaults an operator gets, both sides through a recording proxy: s5cmd (aws-sdk-go)
    moves the bytes and botocore lists, probes, confirms and sends the parts of early uploads; no
    other HTTP client is in the suite. Every object goes through a run file line (src_commands*.txt,
    dest_commands.txt), but those uploaded part by part while they were fetched."""
    from faultproxy import FaultProxy

    data = seed(work, n_small=12)
    with FaultProxy(work.server.url) as link:
        work.cfg["transfer_settings"].update(src_endpoint_url=link.url, dest_endpoint_url=link.url)
        work.write_config()
        r = work.run("sync_mvol.py", "--once", timeout=180)
        agents = dict(link.agents)
    assert r.returncode == 0, r.stderr[-3000:]
    assert_all_moved(work, data)
    assert agents and set(agents) <= {"aws-sdk-go", "Boto3", "Botocore"}, agents
    assert agents.get("aws-sdk-go", 0) >= 2 * len(data)  # every GET and PUT of an object
    src_lines = [ln for f in work.path.glob("src_commands*.txt") for ln in f.read_text().splitlines()
                 if ln.startswith("cp ")]
    assert len(src_lines) == len(data)
    # an object above the 8 MiB part of an early upload goes up part by part through botocore
    # when the destination side saw it land (a race with the source side: it may be staged first)
    early = [k for k, v in data.items() if len(v) > 8 * MIB]
    assert early == ["big/multipart.bin"]
    # a destination side runs beside the source side: that object is fetched in order (s5cmd cat,
    # recorded as the cp line without flags that repeats it)
    cat = [ln for ln in (work.path / "src_commands-cat.txt").read_text().splitlines() if ln.startswith("cp ")]
    assert len(cat) == 1 and "big/multipart.bin" in cat[0] and cat[0].split()[2].startswith("s3://"), cat
    streamed = "uploaded 'big/multipart.bin' while it was fetched" in r.stdout + r.stderr
    dest_lines = (work.path / "dest_commands.txt").read_text().splitlines()
    assert len(dest_lines) == len(data) - streamed, (streamed, dest_lines)


def test_native_mode_moves_through_boto3_without_s5cmd_for_the_source(work):
    data = seed(work, n_small=10)
    work.cfg["transfer_settings"]["src_use_native_s3"] = True
    work.write_config()
    r = work.run("sync_mvol.py", "--once")
    assert r.returncode == 0, r.stderr
    assert_all_moved(work, data)
    assert not (work.path / "src_commands.txt").exists()  # the source side never ran s5cmd


def test_snow_region_with_http_ip_port_endpoint(work):
    data = seed(work, n_small=6, big=False)
    work.cfg["source"]["region"] = "snow"
    work.write_config()
    r = work.run("src_connect_test.py", "--quiet")
    assert r.returncode == 0, r.stderr
    assert f"Total Number of Objects: {len(data)}" in r.stdout
    r = work.run("sync_mvol.py", "--once")
    assert r.returncode == 0, r.stderr
    assert_all_moved(work, data)


def test_objects_that_do_not_fit_wait_for_the_next_batch(work):
    """A small per-volume batch budget splits the work; nothing is ledgered before it is copied."""
    data = {f"f{i}.bin": os.urandom(40_000) for i in range(12)}
    work.put_all(data)
    work.cfg["transfer_settings"]["max_size_to_transfer_src2l"] = 100_000  # ~2 objects per volume per batch
    work.write_config()
    r = work.run("src_sync_mvol.py", "--once", "--debug")
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("over to be fetched") >= 3, r.stderr  # several batches were needed
    assert work.ledger_lines() == len(data) + 1
    r = work.run("dest_sync_mvol.py", "--once")
    assert r.returncode == 0
    assert_all_moved(work, data)


def test_object_larger_than_the_batch_budget_still_moves(work):
    data = {"huge.bin": os.urandom(300_000)}
    work.put("huge.bin", data["huge.bin"])
    work.cfg["transfer_settings"]["max_size_to_transfer_src2l"] = 1000
    work.write_config()
    assert work.run("sync_mvol.py", "--once").returncode == 0
    assert_all_moved(work, data)


def test_keep_staging_data_when_configured(work):
    data = seed(work, n_small=3, big=False)
    work.cfg["destination"]["delete_staging_data"] = False
    work.write_config()
    assert work.run("sync_mvol.py", "--once").returncode == 0
    assert len(work.staged_files()) == len(data)
    assert work.listing(work.dst, "copy/").keys() == data.keys()


def test_scripts_run_by_path_from_any_folder_and_under_nohup(work):
    data = seed(work, n_small=3, big=False)
    r = subprocess.run(["nohup", *work.argv("sync_mvol.py", "--once")], cwd=work.path, capture_output=True,
                       timeout=120, env={"PATH": os.environ["PATH"], "HOME": str(work.path)})
    assert r.returncode == 0
    assert_all_moved(work, data)


def test_sync_mvol_restarts_a_child_that_dies(work):
    data = seed(work, n_small=3, big=False)
    sup = work.start("sync_mvol.py", log_name="sync.log")
    try:
        log = work.path / "sync.log"
        wait_for(lambda: b"started dest_sync_mvol.py (PID" in log.read_bytes(), 30, "dest child to start")
        wait_for(lambda: work.ledger_lines("dest_ledger.csv") == len(data) + 1, 60, "first objects confirmed")
        pid = int(log.read_bytes().split(b"started dest_sync_mvol.py (PID ")[1].split(b")")[0])
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: b"dest_sync_mvol.py exited with code -9; restarting" in log.read_bytes(), 30,
                 "the supervisor to notice")
        wait_for(lambda: log.read_bytes().count(b"started dest_sync_mvol.py") == 2, 30, "the restart")
        work.put("late.txt", b"after restart")
        wait_for(lambda: "late.txt" in work.listing(work.dst, "copy/"), 60, "a new object to move after the restart")
    finally:
        sup.send_signal(signal.SIGTERM)
        sup.wait(timeout=40)
    assert sup.returncode == 128 + signal.SIGTERM
    # the children were stopped with it
    assert b"Traceback" not in (work.path / "sync.log").read_bytes()


def test_second_copy_of_a_sync_refuses_and_names_the_pid(work):
    seed(work, n_small=1, big=False)
    first = work.start("src_sync_mvol.py")
    try:
        lock = work.path / ".src_sync_mvol.lock"
        wait_for(lambda: lock.exists() and lock.read_text().strip() == str(first.pid), 30, "the lock")
        r = work.run("src_sync_mvol.py", "--once")
        assert r.returncode == 3
        assert f"PID {first.pid}" in r.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=30)


def test_defaults_fetch_small_objects_together_and_large_ones_in_ranges_when_no_destination_side_runs(work):
    """The defaults, the sides run one after the other: objects below 8 MiB through one s5cmd with
    many workers (src_commands.txt), one of exactly 8 MiB (one part of an early upload) through its
    own in parallel ranges (src_commands-large.txt). A larger one would be fetched in order with
    s5cmd cat if a destination side ran to upload it while it lands; none does, so it goes with cp
    in parallel ranges too (src_commands-cat.txt). Each object is one GET (or its ranges) and one PUT."""
    data = seed(work, n_small=10)
    data["large-a.bin"] = os.urandom(8 * MIB)
    work.put("large-a.bin", data["large-a.bin"])
    log_start = work.server.log_path.stat().st_size
    for script in ("src_sync_mvol.py", "dest_sync_mvol.py"):
        r = work.run(script, "--once")
        assert r.returncode == 0, r.stderr
    large = (work.path / "src_commands-large.txt").read_text().splitlines()
    small = (work.path / "src_commands.txt").read_text().splitlines()
    cat = [ln for ln in (work.path / "src_commands-cat.txt").read_text().splitlines() if not ln.startswith("#")]
    assert len(cat) == 1 and "big/multipart.bin" in cat[0] and cat[0].startswith("cp --raw -c 5 -p 8 "), cat
    assert len(large) == 1 and "large-a.bin" in large[0] and " -c 5 -p 8 " in large[0], large
    assert len(small) == len(data) - 2 and all(line.startswith("cp --raw ") for line in small)
    with open(work.server.log_path, "rb") as fh:
        fh.seek(log_start)
        log = fh.read().decode("utf-8", "replace")
    assert log.count(f"GET /{work.src}/data/big/multipart.bin ") == 2  # 11 MiB in ranges of 8 MiB
    # the sides ran one after the other: nothing to upload while it landed, so s5cmd uploads it
    # once, in the source's 5 MiB parts (its ETag names them), not the configured 50 MiB
    assert log.count(f"POST /{work.dst}/copy/big/multipart.bin?uploads") == 1
    assert log.count(f"PUT /{work.dst}/copy/big/multipart.bin?") == 3
    assert work.server.client().head_object(Bucket=work.dst, Key="copy/big/multipart.bin")["ETag"] == \
        work.server.client().head_object(Bucket=work.src, Key="data/big/multipart.bin")["ETag"]
    puts = [ln for ln in log.splitlines() if f"PUT /{work.dst}/copy/dir0/file0.bin" in ln]
    assert len(puts) == 1, puts
    assert_all_moved(work, data)


def test_a_stop_mid_batch_logs_one_line_for_the_copies_it_cut_short(work):
    """SIGTERM while many copies are in flight: one line says how many were not finished (they
    are fetched again at the next start), not one warning per object."""
    from faultproxy import FaultProxy

    data = {f"s/{i:03d}.bin": os.urandom(20_000) for i in range(60)}
    work.put_all(data)
    with FaultProxy(work.server.url, bandwidth=150_000) as link:  # about 8 s for the batch
        work.cfg["transfer_settings"].update(src_endpoint_url=link.url, src_workers=8)
        work.write_config()
        src = work.start("src_sync_mvol.py", log_name="src.log")
        try:
            wait_for(lambda: work.ledger_lines() >= 3, 60, "the first objects staged")
        finally:
            src.send_signal(signal.SIGTERM)
            src.wait(timeout=30)
    assert src.returncode == 128 + signal.SIGTERM
    log = (work.path / "src.log").read_text()
    assert "failed: stopped" not in log and "(try 1 of" not in log, log[-3000:]
    assert len(re.findall(r"stopping: \d+ copies not finished", log)) == 1, log[-3000:]
