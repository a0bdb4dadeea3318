"""The hops overlap (issue 4): the destination side uploads while the source side still stages,
through a long-lived s5cmd fed line by line, with no batch barrier."""

from __future__ import annotations

import os
import threading

from conftest import wait_for
from faultproxy import FaultProxy

from s5jtransfer import s5cmd


def _rows(path) -> int:
    try:
        with open(path, "rb") as fh:
            return max(0, sum(1 for _ in fh) - 1)
    except FileNotFoundError:
        return 0


def test_destination_uploads_while_the_source_is_still_staging(work):
    data = {f"f{i:03d}.bin": os.urandom(40_000) for i in range(20)}
    total = work.put_all(data)
    # a source link slow enough that staging takes several times as long as an upload may wait
    # for its confirmation (dest_sync.CONFIRM_AFTER, so that a listing confirms many): one object at a time
    link = FaultProxy(work.server.url, bandwidth=total / 8).start()
    work.cfg["transfer_settings"].update(src_endpoint_url=link.url, src_workers=1)
    work.write_config()
    proc = work.start("sync_mvol.py", "--once")
    try:
        seen = {}

        def overlap():
            src, dst = _rows(work.path / "src_ledger.csv"), _rows(work.path / "dest_ledger.csv")
            if dst > 0 and src < len(data):
                seen.update(src=src, dst=dst)
                return True
            assert proc.poll() is None, "the run ended before the destination uploaded anything mid-staging"
            return False

        wait_for(overlap, 60, "a destination upload confirmed while the source side is still staging")
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        link.stop()
    assert 0 < seen["dst"] and seen["src"] < len(data)
    assert len(work.listing(work.dst, "copy/")) == len(data)
    assert {k: work.dest_bytes(k) for k in data} == data
    assert work.staged_files() == []


def _env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


def test_s5cmd_stream_runs_each_line_before_its_input_ends(work, tmp_path):
    reports: list[tuple[str, bool, str]] = []
    got = threading.Event()

    def report(local, ok, error):
        reports.append((local, ok, error))
        got.set()

    files = []
    for i in range(3):
        p = tmp_path / f"obj{i}"
        p.write_bytes(os.urandom(1000 + i))
        files.append(str(p))
    gargs = ["--json", "--endpoint-url", work.server.url]
    stream = s5cmd.Stream(s5cmd.find_binary(), gargs, _env(), str(tmp_path / "dest_commands.txt"), report)
    try:
        for n, f in enumerate(files):
            got.clear()
            assert stream.add(s5cmd.cp_line(f, f"s3://{work.dst}/stream/{n}"), f, 1000 + n)
            # the result arrives while the input is still open: no batch barrier
            wait_for(got.is_set, 30, f"s5cmd's result for line {n + 1} before its input ends")
            assert stream.alive()
    finally:
        rc = stream.close(timeout=30)
    assert rc == 0
    assert reports == [(f, True, "") for f in files]
    assert (tmp_path / "dest_commands.txt").read_text().count("\n") == 3  # the run file records every line
    assert work.listing(work.dst, "stream/") == {"0": 1000, "1": 1001, "2": 1002}


def test_s5cmd_stream_reports_each_object_once_when_s5cmd_dies(work, tmp_path):
    reports: list[tuple[str, bool, str]] = []
    p = tmp_path / "obj"
    p.write_bytes(b"x" * 10)
    # an endpoint that never answers: the line stays in flight until s5cmd is killed
    blackhole = FaultProxy(work.server.url, latency=60).start()
    stream = s5cmd.Stream(s5cmd.find_binary(), ["--json", "--endpoint-url", blackhole.url, "--retry-count", "0"],
                          _env(), str(tmp_path / "run.txt"), lambda *r: reports.append(r))
    try:
        assert stream.add(s5cmd.cp_line(str(p), f"s3://{work.dst}/never"), str(p), 10)
        assert len(stream) == 1
        stream.proc.kill()
        stream.proc.wait()
        q = tmp_path / "later"
        q.write_bytes(b"y")
        assert not stream.add(s5cmd.cp_line(str(q), f"s3://{work.dst}/later"), str(q), 1)
        stream.close(timeout=10)
    finally:
        blackhole.stop()
    assert sorted(r[0] for r in reports) == sorted([str(p), str(q)])  # each exactly once
    assert all(ok is False and err for _local, ok, err in reports)
    assert len(stream) == 0


def test_bytes_in_flight_capped_by_max_size_to_transfer_l2dest(work):
    """max_size_to_transfer_l2dest caps the bytes in flight to the destination; an object larger
    than the cap still moves, on its own."""
    data = {"big.bin": os.urandom(300_000), **{f"s{i}.bin": os.urandom(20_000) for i in range(12)}}
    work.put_all(data)
    work.cfg["transfer_settings"]["max_size_to_transfer_l2dest"] = 50_000
    work.write_config()
    r = work.run("sync_mvol.py", "--once", timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    assert {k: work.dest_bytes(k) for k in data} == data
    assert work.staged_files() == []


def _s5cmd_pids(endpoint: str) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            argv = open(f"/proc/{d}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"s5cmd") and endpoint.encode() in argv and b"run" in argv:
            out.append(int(d))
    return out


def test_destination_s5cmd_killed_mid_upload_is_replaced_and_nothing_is_lost(work):
    import signal

    data = {f"f{i:03d}.bin": os.urandom(60_000) for i in range(20)}
    total = work.put_all(data)
    link = FaultProxy(work.server.url, bandwidth=total / 3).start()  # uploads take a few seconds
    work.cfg["transfer_settings"].update(dest_endpoint_url=link.url, dest_workers=2)
    work.write_config()
    proc = work.start("sync_mvol.py", "--once")
    try:
        pids = wait_for(lambda: _s5cmd_pids(link.url), 60, "the destination side's streaming s5cmd")
        os.kill(pids[0], signal.SIGKILL)
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        link.stop()
    assert {k: work.dest_bytes(k) for k in data} == data
    assert work.ledger_lines("dest_ledger.csv") == len(data) + 1
    assert work.staged_files() == []


def test_large_objects_get_their_own_s5cmd_largest_first(work):
    """Without early uploads (dest_stream_uploads false), objects of 8 MiB or more are copied one at
    a time, largest first, in parallel ranges, by their own s5cmd (src_commands-large.txt) beside
    the one for the smaller ones (src_commands.txt), so they are staged early rather than all at
    the end."""
    mib = 1024 * 1024
    data = {"small.bin": os.urandom(1000), "medium.bin": os.urandom(2 * mib),
            "large-a.bin": os.urandom(8 * mib), "large-b.bin": os.urandom(9 * mib)}
    work.put_all(data)
    work.cfg["transfer_settings"]["dest_stream_uploads"] = False
    work.write_config()
    r = work.run("sync_mvol.py", "--once", timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    assert {k: work.dest_bytes(k) for k in data} == data
    rest = (work.path / "src_commands.txt").read_text().splitlines()
    large = (work.path / "src_commands-large.txt").read_text().splitlines()
    assert len(rest) == 2 and "medium.bin" in rest[0] and "small.bin" in rest[1]
    assert len(large) == 2 and "large-b.bin" in large[0] and "large-a.bin" in large[1]
    assert all(" -c 5 -p 8 " in line for line in large)  # each in parallel ranged GETs (plan.large_flags)


def test_s5cmd_stream_takes_more_lines_than_its_pipe_holds(work, tmp_path):
    """Long keys: 300 lines of ~1 KB are more than a pipe buffer (64 KiB). Feeding blocks while
    s5cmd catches up (its output is drained meanwhile), never deadlocks, and every object lands."""
    reports: list[tuple[str, bool, str]] = []
    src = tmp_path / "one"
    src.write_bytes(b"z")
    seg = "k" * 200
    stream = s5cmd.Stream(s5cmd.find_binary(), ["--json", "--numworkers", "4", "--endpoint-url", work.server.url],
                          _env(), str(tmp_path / "run.txt"), lambda *r: reports.append(r))
    n = 300
    done = threading.Event()

    def feed():
        for i in range(n):
            # distinct local names: the results are matched by local path
            p = tmp_path / f"l{i:04d}"
            os.link(src, p)
            stream.add(s5cmd.cp_line(str(p), f"s3://{work.dst}/long/{seg}/{seg}/{seg}/{seg}/{i:04d}"), str(p), 1)
        done.set()

    t = threading.Thread(target=feed, daemon=True)
    t.start()
    try:
        wait_for(done.is_set, 120, "every line fed")
    finally:
        stream.close(timeout=120)
    assert len(reports) == n and all(ok for _p, ok, _e in reports)
    assert len(work.listing(work.dst, "long/")) == n
