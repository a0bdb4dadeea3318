"""Large objects uploaded while they are fetched (streaming.py), against a real S3 server: parts
go out from the partial copy (written in order by `s5cmd cat`) as it grows, and the upload is completed only after the
staged copy is verified and every part sent early matches it; anything else is aborted, also
after a power cut (the journal), and the object goes the regular way."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import threading

import pytest

from conftest import wait_for
from faultproxy import FaultProxy
from s5jtransfer import config, s3, streaming
from s5jtransfer.ledger import is_locked
from s5jtransfer.volumes import Volume, staged_name

MIB = 1024 * 1024


def pattern(size: int, seed: int = 0) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest() * (MIB // 32)
    return (block * (size // len(block) + 1))[:size]


def multipart_etag(data: bytes, part: int) -> str:
    digests = [hashlib.md5(data[i:i + part]).digest() for i in range(0, len(data), part)]
    return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def reap(*procs) -> None:
    """Kill whichever of the processes still runs (a test's cleanup)."""
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def open_uploads(work) -> list[dict]:
    return work.server.client().list_multipart_uploads(Bucket=work.dst).get("Uploads", [])


# -- the Streamer on its own, fed notes by hand ------------------------------------------------
def streamer_setup(work, monkeypatch):
    """(config, destination client, volume) for a Streamer run by hand, with 5 MiB parts."""
    monkeypatch.chdir(work.path)
    work.cfg["transfer_settings"]["part_size_mb"] = 5
    work.write_config()
    cfg = config.load(str(work.path / "config.yaml"))
    vol = Volume(str(work.volumes[0]))
    vol.ensure()
    return cfg, s3.client(cfg.destination, cfg.settings), vol


@pytest.fixture
def streamer(work, monkeypatch):
    cfg, client, vol = streamer_setup(work, monkeypatch)
    st = streaming.Streamer(cfg.destination, cfg.settings.part_size, lambda: 0, lambda ep: client,
                            lambda exc: s3.describe_error(exc, cfg.destination))
    yield st, vol, client
    st.close()


class Reports:
    def __init__(self) -> None:
        self.got: list[tuple] = []
        self.eps: list[int] = []  # the endpoint each report names: the upload's own
        self.event = threading.Event()

    def __call__(self, ep, ok, error, answer, made) -> None:
        self.eps.append(ep)
        self.got.append((ok, error, answer.etag if answer else "", made.etag if made else ""))
        self.made = made
        self.event.set()


def stage(vol: Volume, key: str, data: bytes, ready: int, partial: bytes | None = None,
          etag: str = "src-etag") -> tuple[str, str]:
    """A partial copy (`partial` bytes, default the object's) with a note saying `ready` bytes are written."""
    name = staged_name(key)
    path = vol.partial_path(name)
    with open(path, "wb") as fh:
        fh.write(partial if partial is not None else data)
    streaming.write_note(vol, name, key, len(data), etag, ready)
    return name, path


def to_staged(vol: Volume, name: str, data: bytes) -> str:
    path = vol.staged_path(name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)
    return path


def test_parts_sent_early_are_completed_once_the_staged_copy_matches(streamer, work):
    st, vol, client = streamer
    data = pattern(12 * MIB + 7)
    name, _ = stage(vol, "big.bin", data, ready=10 * MIB)
    st.scan([vol])
    u = st.uploads["big.bin"]
    for f in list(u.futures):
        f.result(timeout=30)
    assert sorted(u.md5s) == [1, 2]  # the two parts fully written; the third waits
    parts = client.list_parts(Bucket=work.dst, Key="copy/big.bin", UploadId=u.upload_id)["Parts"]
    assert [p["PartNumber"] for p in parts] == [1, 2]
    staged = to_staged(vol, name, data)
    rep = Reports()
    assert st.take("big.bin", len(data), "src-etag", "md5", staged, md5(data), rep)
    assert rep.event.wait(30)
    ok, error, etag, expected = rep.got[0]
    assert ok, error
    assert rep.eps == [0]
    assert etag == expected == multipart_etag(data, 5 * MIB)
    assert work.dest_bytes("big.bin") == data
    assert open_uploads(work) == []
    assert os.path.getsize(streaming.JOURNAL) == 0  # nothing left to abort at the next start


def test_a_part_that_differs_from_the_staged_copy_aborts_the_upload(streamer, work):
    st, vol, _client = streamer
    data = pattern(11 * MIB, seed=1)
    bad = bytearray(data)
    bad[MIB] ^= 0xFF  # the partial copy held other bytes when part 1 went out
    name, _ = stage(vol, "big.bin", data, ready=len(data), partial=bytes(bad))
    st.scan([vol])
    for f in list(st.uploads["big.bin"].futures):
        f.result(timeout=30)
    rep = Reports()
    assert st.take("big.bin", len(data), "src-etag", "md5", to_staged(vol, name, data), md5(data), rep)
    assert rep.event.wait(30)
    ok, error, _etag, _expected = rep.got[0]
    assert not ok and "part 1 sent early differs from the staged copy" in error
    assert open_uploads(work) == []
    assert "big.bin" not in work.listing(work.dst, "copy/")
    # the next try goes the regular way
    assert not st.take("big.bin", len(data), "src-etag", "md5", vol.staged_path(name), md5(data), Reports())


def test_a_staged_copy_changed_after_its_verification_is_never_completed(streamer, work):
    """Parts 1-2 went out early from the right bytes; the staged copy then changed in part 3,
    which goes out only now: the parts agree with the file, but the file no longer has the MD5
    verified at staging, so the upload is aborted (the destination side discards the copy)."""
    st, vol, _client = streamer
    data = pattern(12 * MIB + 7, seed=5)
    name, _ = stage(vol, "big.bin", data, ready=10 * MIB)
    st.scan([vol])
    for f in list(st.uploads["big.bin"].futures):
        f.result(timeout=30)
    changed = bytearray(data)
    changed[-3] ^= 0xFF
    rep = Reports()
    assert st.take("big.bin", len(data), "src-etag", "md5", to_staged(vol, name, bytes(changed)), md5(data), rep)
    assert rep.event.wait(30)
    ok, error, _etag, _expected = rep.got[0]
    assert not ok and "no longer matches the checksum verified at staging" in error
    assert open_uploads(work) == []
    assert "big.bin" not in work.listing(work.dst, "copy/")


@pytest.mark.parametrize("changed", [False, True])
def test_with_the_sources_parts_the_staged_copy_is_checked_by_them(streamer, work, changed):
    """A source ETag that names its part size (8 MiB: 3 parts of 20 MiB): the early upload takes
    it, not the configured 5 MiB, and the source side verified the copy by those parts without
    its MD5 (""). The completion reads the copy once: its parts must make the source's ETag, which
    is then the upload's; a copy changed after its verification (part 3, sent only now) is not
    completed."""
    st, vol, _client = streamer
    data = pattern(20 * MIB, seed=7)
    src = multipart_etag(data, 8 * MIB)
    name, _ = stage(vol, "big.bin", data, ready=17 * MIB, etag=src)
    st.scan([vol])
    u = st.uploads["big.bin"]
    assert (u.part, u.source_parts) == (8 * MIB, True)
    for f in list(u.futures):
        f.result(timeout=30)
    assert sorted(u.md5s) == [1, 2]
    staged = bytearray(data)
    if changed:
        staged[-3] ^= 0xFF
    rep = Reports()
    assert st.take("big.bin", len(data), src, "multipart", to_staged(vol, name, bytes(staged)), "", rep)
    assert rep.event.wait(30)
    ok, error, etag, expected = rep.got[0]
    if changed:
        assert not ok and "no longer matches the checksum verified at staging" in error
        assert "big.bin" not in work.listing(work.dst, "copy/")
    else:
        assert ok, error
        assert etag == expected == src
        assert work.dest_bytes("big.bin") == data
    assert open_uploads(work) == []


def test_another_version_is_not_completed_with_the_parts_of_the_first(streamer, work):
    st, vol, _client = streamer
    data = pattern(11 * MIB, seed=2)
    name, _ = stage(vol, "big.bin", data, ready=len(data))
    st.scan([vol])
    assert not st.take("big.bin", len(data), "another-etag", "md5", to_staged(vol, name, data), md5(data), Reports())
    assert st.uploads == {}
    wait_for(lambda: open_uploads(work) == [], 30, "the upload aborted")


def test_an_upload_whose_object_is_never_staged_is_aborted(streamer, work, monkeypatch):
    st, vol, _client = streamer
    data = pattern(11 * MIB, seed=3)
    name, _ = stage(vol, "big.bin", data, ready=5 * MIB)
    st.scan([vol])
    assert len(open_uploads(work)) == 1
    streaming.remove_note(vol, name)  # the source side gave the copy up
    monkeypatch.setattr(streaming, "UNCLAIMED_GRACE", 0.0)
    st.scan([vol])
    assert st.uploads == {}
    wait_for(lambda: open_uploads(work) == [], 30, "the upload aborted")


def test_small_objects_and_broken_notes_are_left_alone(streamer, work):
    st, vol, _client = streamer
    stage(vol, "small.bin", pattern(MIB), ready=MIB)  # not above the part size: uploaded once staged
    with open(vol.note_path("torn"), "w") as fh:
        fh.write('{"key": "x", "si')  # a note being written when read
    st.scan([vol])
    assert st.uploads == {}
    assert open_uploads(work) == []


def test_recover_aborts_what_an_earlier_run_journaled(streamer, work):
    st, _vol, client = streamer
    upload_id = client.create_multipart_upload(Bucket=work.dst, Key="copy/left.bin")["UploadId"]
    with open(streaming.JOURNAL, "w") as fh:
        fh.write(json.dumps({"key": "left.bin", "upload_id": upload_id, "ep": 0}) + "\n")
        fh.write(json.dumps({"key": "done.bin", "upload_id": "completed-meanwhile", "ep": 0}) + "\n")
        fh.write('{"key": "torn')  # the power cut hit while this line was written
    st.recover()
    assert open_uploads(work) == []
    assert os.path.getsize(streaming.JOURNAL) == 0


# -- the real scripts --------------------------------------------------------------------------
def streaming_config(work, proxy_url: str) -> None:
    ts = work.cfg["transfer_settings"]
    ts.update(src_endpoint_url=proxy_url, part_size_mb=5)
    work.write_config()


def test_sync_uploads_a_large_object_while_it_is_fetched(work):
    data = pattern(16 * MIB + 1, seed=4)
    src_etag = work.put_multipart("big.bin", data, part_size=8 * MIB)
    work.put_all({f"small-{i}.bin": bytes([i]) * 1000 for i in range(5)})
    with FaultProxy(work.server.url, bandwidth=5_000_000) as link:  # about 3.5 s for the large object
        streaming_config(work, link.url)
        r = work.run("sync_mvol.py", "--once", timeout=120)
    log = (work.path / "sync_mvol.log").read_text() if (work.path / "sync_mvol.log").exists() else ""
    out = r.stdout + r.stderr + log
    assert r.returncode == 0, out
    # the source's 8 MiB parts (its ETag names them), not the configured 5 MiB: the same ETag
    m = re.search(r"uploaded 'big\.bin' while it was fetched: (\d) of 3 parts went out before it was staged", out)
    assert m and int(m.group(1)) >= 1, out
    assert work.dest_bytes("big.bin") == data
    head = work.server.client().head_object(Bucket=work.dst, Key="copy/big.bin")
    assert head["ETag"].strip('"') == src_etag == multipart_etag(data, 8 * MIB)
    row = [ln for ln in (work.path / "dest_ledger.csv").read_text().splitlines() if ln.startswith("big.bin,")]
    assert row and row[0].split(",")[2] == src_etag and row[0].split(",")[4] == src_etag
    # verified at staging by its parts alone (one MD5 pass): no MD5 in the source ledger row
    src_row = [ln for ln in (work.path / "src_ledger.csv").read_text().splitlines() if ln.startswith("big.bin,")]
    assert src_row and src_row[0].split(",")[3:] == ["multipart", ""], src_row
    assert open_uploads(work) == []
    assert work.listing(work.dst, "copy/") == work.listing(work.src, "data/")


def test_destination_side_killed_mid_upload_aborts_it_at_its_next_start(work):
    data = pattern(16 * MIB + 1, seed=5)
    work.put_multipart("big.bin", data, part_size=8 * MIB)
    with FaultProxy(work.server.url, bandwidth=2_500_000) as link:  # about 7 s for the large object
        streaming_config(work, link.url)
        # the destination side first: the source side fetches the object in order (s5cmd cat) only
        # while one runs to upload it as it lands
        dest, src = work.start("dest_sync_mvol.py"), None
        try:
            wait_for(lambda: is_locked(str(work.path / ".dest_sync_mvol.lock")), 30, "the destination side started")
            src = work.start("src_sync_mvol.py", "--once")
            c = work.server.client()

            def a_part_is_up():
                ups = open_uploads(work)
                return ups and c.list_parts(Bucket=work.dst, Key=ups[0]["Key"], UploadId=ups[0]["UploadId"]).get("Parts")

            wait_for(a_part_is_up, 60, "a part sent while the object is fetched")
            dest.send_signal(signal.SIGKILL)  # a power cut, for this side
            dest.wait(10)
            assert len(open_uploads(work)) == 1
            assert src.wait(120) == 0
        finally:
            reap(*(p for p in (src, dest) if p is not None))
        r = work.run("dest_sync_mvol.py", "--once", timeout=120)  # it lists the source, through the link
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "aborted 1 unfinished multipart uploads left by an earlier run" in out
    assert open_uploads(work) == []
    assert work.dest_bytes("big.bin") == data


def test_streaming_can_be_turned_off(work):
    data = pattern(11 * MIB, seed=6)
    work.put_multipart("big.bin", data, part_size=8 * MIB)
    with FaultProxy(work.server.url, bandwidth=5_000_000) as link:
        streaming_config(work, link.url)
        work.cfg["transfer_settings"]["dest_stream_uploads"] = False
        work.write_config()
        r = work.run("sync_mvol.py", "--once", timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "while it was fetched" not in out
    assert not any(v.joinpath("s5jtransfer", "streaming").exists() and any(v.joinpath("s5jtransfer", "streaming").iterdir())
                   for v in work.volumes)
    assert work.dest_bytes("big.bin") == data


def test_parts_queued_when_the_copy_is_renamed_into_staged_are_read_from_there(streamer, work):
    st, vol, _client = streamer
    data = pattern(11 * MIB, seed=7)
    name, partial = stage(vol, "big.bin", data, ready=len(data))
    staged = vol.staged_path(name)
    os.makedirs(os.path.dirname(staged), exist_ok=True)
    os.replace(partial, staged)  # the source side verified it between the note and the parts
    st.scan([vol])
    u = st.uploads["big.bin"]
    for f in list(u.futures):
        f.result(timeout=30)
    assert not u.error and sorted(u.md5s) == [1, 2, 3]
    rep = Reports()
    assert st.take("big.bin", len(data), "src-etag", "md5", staged, md5(data), rep) and rep.event.wait(30)
    assert rep.got[0][0], rep.got[0]
    assert work.dest_bytes("big.bin") == data


def test_an_upload_whose_object_waits_its_turn_is_kept(streamer, work, monkeypatch):
    """Staged and ledgered but not yet taken up (uploads in flight fill max_size_to_transfer_l2dest,
    say): the note is gone, the grace is over, and the upload stays open."""
    st, vol, _client = streamer
    data = pattern(11 * MIB, seed=8)
    name, _ = stage(vol, "big.bin", data, ready=len(data))
    st.scan([vol])
    streaming.remove_note(vol, name)
    monkeypatch.setattr(streaming, "UNCLAIMED_GRACE", 0.0)
    st.scan([vol], waiting=lambda key: key == "big.bin")
    assert "big.bin" in st.uploads and len(open_uploads(work)) == 1
    rep = Reports()
    assert st.take("big.bin", len(data), "src-etag", "md5", to_staged(vol, name, data), md5(data), rep) and rep.event.wait(30)
    assert rep.got[0][0], rep.got[0]
    assert work.dest_bytes("big.bin") == data
