"""Shards (issue 19) against the local S3 server: several hosts, each in its own working folder,
split one source prefix; together they move every object exactly once; the whole-prefix check
says COMPLETE only when every share is done."""

from __future__ import annotations

import json
import os
import signal

from conftest import Work, wait_for
from faultproxy import FaultProxy
from s5jtransfer import shard
from s5jtransfer.ledger import DEST_COLUMNS, SRC_COLUMNS, Ledger

N = 3


def make_shards(tmp_path, s3server, src: str, dst: str) -> list[Work]:
    works = []
    for k in range(N):
        folder = tmp_path / f"shard-{k}"
        folder.mkdir()
        works.append(Work(folder, s3server, src, dst))
    return works


def seed(work: Work, n: int, size: int = 300) -> dict[str, bytes]:
    data = {f"site/2026/11/cam-{i % 4:02d}/IMG_{i:06d}.jpg": os.urandom(size + i) for i in range(n)}
    data["odd name 'q' $(echo x) *[x].txt"] = b"odd"
    data["caf\u00e9/\u00fcber.txt"] = b"unicode"
    work.put_all(data)
    return data


def versioned_destination(work: Work) -> None:
    work.server.client().put_bucket_versioning(Bucket=work.dst, VersioningConfiguration={"Status": "Enabled"})


def destination_versions(work: Work) -> dict[str, int]:
    """key (prefix stripped) -> how many versions the destination holds: a PUT makes one each."""
    out: dict[str, int] = {}
    pages = work.server.client().get_paginator("list_object_versions").paginate(Bucket=work.dst, Prefix="copy/")
    for page in pages:
        for v in page.get("Versions", []):
            key = v["Key"][len("copy/"):]
            out[key] = out.get(key, 0) + 1
        assert not page.get("DeleteMarkers"), page.get("DeleteMarkers")
    return out


def share(data: dict, k: int) -> set[str]:
    return {key for key in data if shard.shard_of(key, N) == k}


def ledger_keys(work: Work, name: str, columns) -> set[str]:
    return set(Ledger(str(work.path / name), columns).load())


def test_three_shards_at_once_move_every_object_exactly_once(tmp_path, s3server):
    src, dst = s3server.new_bucket("src"), s3server.new_bucket("dst")
    works = make_shards(tmp_path, s3server, src, dst)
    versioned_destination(works[0])
    data = seed(works[0], 27)
    assert all(share(data, k) for k in range(N))  # every shard has work
    procs = [w.start("sync_mvol.py", "--once", "--shard", f"{k}/{N}") for k, w in enumerate(works)]
    try:
        rcs = [p.wait(timeout=90) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    logs = [(w.path / "sync_mvol.py.log").read_text(errors="replace") for w in works]
    assert rcs == [0] * N, logs
    # every object exactly once: one PUT each makes one version each on a versioned bucket
    assert destination_versions(works[0]) == {k: 1 for k in data}
    for key, body in data.items():
        assert works[0].dest_bytes(key) == body, key
    for k, w in enumerate(works):
        mine = share(data, k)
        # each folder's ledgers hold only its own keys, and all of them
        assert ledger_keys(w, "src_ledger.csv", SRC_COLUMNS) == mine
        assert ledger_keys(w, "dest_ledger.csv", DEST_COLUMNS) == mine
        assert (w.path / "shard.txt").read_text() == f"{k}/{N}\n"
        report = json.loads((w.path / "transfer_report.json").read_text())
        assert report["shard"] == f"{k}/{N}" and report["complete"] is True
        assert report["source_objects"] == len(mine) and report["only_at_destination"] == 0, report
        assert w.staged_files() == []
    st = json.loads(works[1].run("status.py", "--json").stdout)  # the folder's shard, from shard.txt
    assert st["shard"] == f"1/{N}" and st["complete"] is True
    assert st["source"]["total_objects"] == len(share(data, 1))
    # the whole prefix, from any folder
    r = works[1].run("status.py", "--all-shards")
    assert r.returncode == 0 and "COMPLETE" in r.stdout, r.stdout + r.stderr
    r = works[2].run("repair_ledger.py", "--all-shards")
    assert r.returncode == 0 and "COMPLETE" in r.stdout, r.stdout + r.stderr
    assert (works[2].path / "missing_keys_all_shards.txt").read_text() == ""
    # the balance, from one listing
    r = works[0].run("status.py", "--plan-shards", str(N), "--json")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert [s["objects"] for s in plan["shares"]] == [len(share(data, k)) for k in range(N)]
    assert [s["bytes"] for s in plan["shares"]] == [sum(len(data[x]) for x in share(data, k)) for k in range(N)]
    # a later start with another shard is refused (exit 2) and says how to reshard; reset clears it
    r = works[0].run("src_sync_mvol.py", "--once", "--shard", f"1/{N}")
    assert r.returncode == 2 and "records shard 0/3" in r.stderr and "python reset.py" in r.stderr, r.stderr
    assert works[0].run("reset.py").returncode == 0
    assert not (works[0].path / "shard.txt").exists()
    # after a reset, a repair with the new shard ledgers what the destination holds: nothing moves
    r = works[0].run("repair_ledger.py", "--shard", f"1/{N}")
    assert r.returncode == 0 and "COMPLETE" in r.stdout, r.stdout + r.stderr
    assert ledger_keys(works[0], "src_ledger.csv", SRC_COLUMNS) == share(data, 1)
    assert (works[0].path / "shard.txt").read_text() == f"1/{N}\n"


def test_killed_shard_restarted_alone_completes_and_the_whole_check_waits_for_every_share(tmp_path, s3server):
    src, dst = s3server.new_bucket("src"), s3server.new_bucket("dst")
    works = make_shards(tmp_path, s3server, src, dst)
    versioned_destination(works[0])
    data = seed(works[0], 36, size=60_000)
    # shards 0 and 2 finish their shares
    procs = [works[k].start("sync_mvol.py", "--once", "--shard", f"{k}/{N}") for k in (0, 2)]
    assert [p.wait(timeout=90) for p in procs] == [0, 0]
    # the whole-prefix check: not complete, and every object not moved is named with shard 1
    r = works[0].run("repair_ledger.py", "--all-shards")
    assert r.returncode == 1 and "INCOMPLETE" in r.stdout and "run shard(s) 1/3 again" in r.stdout, r.stdout
    assert "shard     1/3: 0/" in r.stdout and "shard     0/3" in r.stdout, r.stdout
    lines = (works[0].path / "missing_keys_all_shards.txt").read_text().splitlines()
    assert sorted(lines) == sorted(f"1/{N}\t{k}" for k in share(data, 1))
    # shard 1 through a slow source link, one copy at a time: killed after its first objects
    mine = share(data, 1)
    w = works[1]
    with FaultProxy(s3server.url, bandwidth=150_000) as link:
        w.cfg["transfer_settings"].update(src_endpoint_url=link.url, src_workers=1)
        w.write_config()
        proc = w.start("sync_mvol.py", "--once", "--shard", f"1/{N}", new_session=True)
        try:
            wait_for(lambda: ledger_keys(w, "src_ledger.csv", SRC_COLUMNS) if (w.path / "src_ledger.csv").exists()
                     else None, 60, "shard 1's first staged object")
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        done_at_kill = set(w.listing(dst, "copy/")) & mine
        assert len(done_at_kill) < len(mine), "the kill came after the shard's share was done"
    # restarted alone (over the regular link), it completes its share
    w.cfg["transfer_settings"].update(src_endpoint_url=s3server.url)
    w.write_config()
    r = w.run("sync_mvol.py", "--once", "--shard", f"1/{N}", timeout=120)
    assert r.returncode == 0, r.stderr
    assert ledger_keys(w, "dest_ledger.csv", DEST_COLUMNS) == mine
    r = works[0].run("status.py", "--all-shards", "--json")
    res = json.loads(r.stdout)
    assert r.returncode == 0 and res["complete"] is True and res["not_moved"] == [], r.stdout
    assert [s["complete"] for s in res["per_shard"]] == [True] * N
    assert [s["objects"] for s in res["per_shard"]] == [len(share(data, k)) for k in range(N)]
    versions = destination_versions(works[0])
    assert set(versions) == set(data)
    assert {k: n for k, n in versions.items() if n != 1} == {}
    for key, body in data.items():
        assert works[0].dest_bytes(key) == body, key


def test_a_scheduler_index_picks_the_shard(tmp_path, s3server, work):
    """A Kubernetes Indexed Job's pod: JOB_COMPLETION_INDEX with shard_count from config.yaml."""
    data = seed(work, 9)
    work.cfg["transfer_settings"]["shard_count"] = N
    work.write_config()
    r = work.run("sync_mvol.py", "--once")
    assert r.returncode == 2 and "no shard index" in r.stderr, r.stderr  # every host would move everything
    # each side on its own with --once: the destination side's completeness check (a listing of
    # the source) counts only the shard's keys, so it finishes
    idx = {"JOB_COMPLETION_INDEX": "2"}
    r = work.run("src_sync_mvol.py", "--once", env=idx, timeout=60)
    assert r.returncode == 0, r.stderr
    assert ledger_keys(work, "src_ledger.csv", SRC_COLUMNS) == share(data, 2)
    r = work.run("dest_sync_mvol.py", "--once", env=idx, timeout=60)
    assert r.returncode == 0, r.stderr
    assert set(work.listing(work.dst, "copy/")) == share(data, 2)
    assert (work.path / "shard.txt").read_text() == f"2/{N}\n"
    r = work.run("sync_mvol.py", "--once", env={"AWS_BATCH_JOB_ARRAY_INDEX": "1"})
    assert r.returncode == 2 and "records shard 2/3" in r.stderr, r.stderr
