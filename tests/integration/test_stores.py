"""Stores as operators have them: SSE-KMS buckets on either side, stores whose ETags are no MD5s,
checksums, bucket policies that demand encryption, archive storage classes.

moto (the real S3 server of the tests) keeps ETags as MD5s and enforces no policy: a front
(tests/storefront.py, in tests/faultproxy.py) makes one bucket behave like the store in question.
The real scripts run as an operator runs them, through the real s5cmd.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import sys
import time
import urllib.parse
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from faultproxy import FaultProxy  # noqa: E402
from storefront import Front  # noqa: E402

MIB = 1024 * 1024
KEY_ARN = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
POLICY = {"x-amz-server-side-encryption": "aws:kms", "x-amz-server-side-encryption-aws-kms-key-id": KEY_ARN,
          "x-amz-acl": "bucket-owner-full-control", "x-amz-storage-class": "DEEP_ARCHIVE"}
WRITES = {"sse": "aws:kms", "sse_kms_key_id": KEY_ARN, "acl": "bucket-owner-full-control",
          "storage_class": "DEEP_ARCHIVE"}


def rows(work, name: str) -> list[dict[str, str]]:
    with open(work.path / name, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def seed(work, n: int = 6, big: bool = True) -> dict[str, bytes]:
    data = {f"d{i % 2}/obj{i}.bin": os.urandom(1000 + 3001 * i) for i in range(n)}
    data["empty.txt"] = b""
    work.put_all(data)
    if big:  # fetched in order and uploaded in parts while it lands (an early multipart upload)
        data["big/large.bin"] = os.urandom(12 * MIB + 5)
        work.put("big/large.bin", data["big/large.bin"])
    return data


@contextlib.contextmanager
def in_front(work, side: str, front: Front):
    """The side's endpoint is the front (written to config.yaml) while the block runs."""
    with FaultProxy(work.server.url, **front.proxy_args()) as proxy:
        work.cfg["transfer_settings"][f"{'src' if side == 'source' else 'dest'}_endpoint_url"] = proxy.url
        work.write_config()
        yield proxy


def object_requests(front: Front, method: str, prefix: str) -> Counter:
    """Requests of one method per object key (the prefix stripped), without the listings."""
    out: Counter = Counter()
    for m, target, _h in front.requests:
        path = urllib.parse.unquote(urllib.parse.urlsplit(target).path)
        if m == method and path.startswith(f"/{front.bucket}/{prefix}"):
            out[path[len(f"/{front.bucket}/{prefix}"):]] += 1
    return out


def uploads_of(front: Front) -> Counter:
    """Uploads begun per key: a PutObject, or a CreateMultipartUpload (its parts are one upload)."""
    out: Counter = Counter()
    for m, target, _h in front.requests:
        u = urllib.parse.urlsplit(target)
        key = urllib.parse.unquote(u.path)[len(f"/{front.bucket}/copy/"):]
        if (m == "PUT" and "uploadId=" not in u.query) or (m == "POST" and u.query.startswith("uploads")):
            out[key] += 1
    return out


def fetches_of(front: Front) -> Counter:
    """Reads of each object from its start (a GET without a range, or of the range from byte 0):
    a fetch in several ranges counts once."""
    out: Counter = Counter()
    for m, target, h in front.requests:
        path = urllib.parse.unquote(urllib.parse.urlsplit(target).path)
        if m == "GET" and path.startswith(f"/{front.bucket}/data/") and h.get("range", "bytes=0-").startswith("bytes=0-"):
            out[path[len(f"/{front.bucket}/data/"):]] += 1
    return out


def assert_arrived(work, data: dict[str, bytes]) -> None:
    for k, v in data.items():
        assert work.dest_bytes(k) == v, k
    assert work.staged_files() == []


# -- SSE-KMS on either side --------------------------------------------------------------------
@pytest.mark.parametrize("early", [True, False])
def test_an_sse_kms_destination_takes_each_object_once_confirmed_by_its_content_md5(work, early):
    """Every ETag of the bucket is no MD5 (SSE-KMS default encryption), and its answers say
    aws:kms: each object is uploaded once (s5cmd's Content-MD5, or each early part's) and
    confirmed by its size and that Content-MD5, never by a second upload. Without early uploads,
    the large object goes up with s5cmd in 5 MiB parts."""
    if not early:
        work.cfg["transfer_settings"].update(dest_stream_uploads=False, part_size_mb=5)
    data = seed(work)
    front = Front(work.dst, kms=True)
    with in_front(work, "destination", front):
        r = work.run("sync_mvol.py", "--once", timeout=120)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-4000:]
    assert_arrived(work, data)
    assert uploads_of(front) == Counter({k: 1 for k in data}), log[-3000:]
    dest = rows(work, "dest_ledger.csv")
    assert {row["Key"]: row["Verified"] for row in dest} == {k: "content-md5" for k in data}
    report = json.loads((work.path / "transfer_report.json").read_text())
    assert report["verification_levels"]["destination"] == {"content-md5": len(data)}
    assert "does not confirm" not in log and "etag_is_md5" not in log


def test_an_sse_kms_source_moves_each_object_with_one_fetch_verified_by_checksum_or_size(work):
    """ETags no MD5s, answers that say aws:kms. Objects uploaded with a CRC64NVME checksum are
    verified by it (the listing names it, a HeadObject gives it); the others by their size."""
    c = work.server.client()
    with_sum = {f"sum/{i}.bin": os.urandom(2000 + 777 * i) for i in range(4)}
    for k, v in with_sum.items():
        c.put_object(Bucket=work.src, Key="data/" + k, Body=v, ChecksumAlgorithm="CRC64NVME")
    plain = seed(work, n=3)
    data = {**with_sum, **plain}
    front = Front(work.src, kms=True)
    with in_front(work, "source", front):
        r = work.run("sync_mvol.py", "--once", timeout=120)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-4000:]
    assert_arrived(work, data)
    assert fetches_of(front) == Counter({k: 1 for k in data}), log[-3000:]
    src = {row["Key"]: row for row in rows(work, "src_ledger.csv")}
    assert {k: src[k]["Verified"] for k in data} == {**{k: "checksum" for k in with_sum},
                                                     **{k: "size" for k in plain}}
    for k, v in data.items():  # the staged bytes' MD5, which the destination side checks again
        assert src[k]["MD5"] == hashlib.md5(v).hexdigest(), k
    assert "verified by size only" in log and "etag_is_md5" not in log


@pytest.mark.parametrize("setting", [None, False])
def test_etags_that_are_no_md5s_unsaid_cost_two_reads_and_one_warning_or_one_with_the_setting(work, setting):
    """A store whose ETags are no MD5s and says nothing (no encryption header): two reads that
    agree with each other but not with the ETag show it, once per object, named in one warning
    that names the setting; with source.etag_is_md5: false each object is read once."""
    data = seed(work, n=5, big=False)
    if setting is not None:
        work.cfg["source"]["etag_is_md5"] = setting
    front = Front(work.src, kms=True, kms_header=False)
    with in_front(work, "source", front):
        r = work.run("sync_mvol.py", "--once", timeout=120)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-4000:]
    assert_arrived(work, data)
    reads = 2 if setting is None else 1
    assert fetches_of(front) == Counter({k: reads for k in data}), log[-3000:]
    assert {row["Verified"] for row in rows(work, "src_ledger.csv")} == {"size"}
    warned = log.count("set source.etag_is_md5: false")
    assert warned == (1 if setting is None else 0), log[-3000:]


def test_a_destination_whose_etags_are_no_md5s_unsaid_takes_each_upload_once_and_warns_once(work):
    """No encryption header: its HeadObject and its listing agree on an ETag the staged bytes (read
    again, still as verified) do not make. Each object is uploaded once, confirmed by its upload's
    Content-MD5, and one warning names destination.etag_is_md5."""
    data = seed(work, n=4, big=False)
    front = Front(work.dst, kms=True, kms_header=False)
    with in_front(work, "destination", front):
        r = work.run("sync_mvol.py", "--once", timeout=120)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-4000:]
    assert_arrived(work, data)
    assert uploads_of(front) == Counter({k: 1 for k in data}), log[-3000:]
    assert {row["Verified"] for row in rows(work, "dest_ledger.csv")} == {"content-md5"}
    assert log.count("set destination.etag_is_md5: false") == 1, log[-3000:]


def test_a_copy_damaged_alike_twice_at_a_store_of_md5_etags_is_never_ledgered(work):
    """The last resort holds only where no ETag of the store matched (in this run or an earlier
    one, as the ledger says): an object whose every read is damaged the same way is set aside,
    never ledgered."""
    from s5jtransfer.progress import GAVE_UP

    work.put_all({"a.bin": os.urandom(3000), "b.bin": os.urandom(2000)})
    first = work.run("src_sync_mvol.py", "--once", timeout=60)  # ledgered: their MD5s match
    assert first.returncode == 0, first.stderr[-2000:]
    work.put("rotten.bin", os.urandom(9000))

    def flip(method, target, status, headers, body):
        if method == "GET" and target.split("?")[0].endswith("/data/rotten.bin") and status in (200, 206):
            return (headers, b"") if body is None else (headers, bytes([body[0] ^ 1]) + body[1:])
        return None

    with FaultProxy(work.server.url, lie=flip) as link:
        work.cfg["transfer_settings"]["src_endpoint_url"] = link.url
        work.write_config()
        r = work.run("src_sync_mvol.py", "--once", timeout=120)
    log = r.stdout + r.stderr
    assert r.returncode == GAVE_UP, log[-3000:]
    assert "gave up on 'rotten.bin' after 5 tries" in log
    assert "rotten.bin" not in {row["Key"] for row in rows(work, "src_ledger.csv")}
    assert "etag_is_md5" not in log


# -- bucket policies, settings, archive classes -----------------------------------------------
@pytest.mark.parametrize("code,fix", [("AccessDenied", "destination.sse"), ("KMS.DisabledException",
                                                                              "destination.sse_kms_key_id")])
def test_a_refusing_destination_stops_the_run_at_once_with_exit_2_naming_the_fix(work, code, fix):
    """A bucket policy that demands SSE-KMS, a key, an ACL and DEEP_ARCHIVE (or a disabled key):
    the side stops within a minute with exit 2, one line names the endpoint, the S3 error and the
    settings; staged data is kept."""
    seed(work, n=4, big=False)
    front = Front(work.dst, kms=True, require=POLICY, deny_code=code)
    started = time.monotonic()
    with in_front(work, "destination", front) as proxy:
        r = work.run("sync_mvol.py", "--once", timeout=120)
    log = r.stdout + r.stderr
    assert r.returncode == 2, log[-4000:]
    assert time.monotonic() - started < 60
    line = next(x for x in log.splitlines() if "refuses uploads" in x)
    assert proxy.url in line and code in line and fix in line, line
    assert "gave up on" not in log  # a configuration problem, not per-object tries
    assert work.staged_files(), "staged copies are kept"
    assert sum(uploads_of(front).values()) < 20


def test_a_policy_guarded_deep_archive_destination_works_with_the_four_settings(work):
    """The same policy, answered with destination.sse, sse_kms_key_id, acl and storage_class: every
    object goes up once with each header (s5cmd and the early multipart upload alike), lands in
    DEEP_ARCHIVE, and is never read back from the destination (archive classes cannot be)."""
    data = seed(work, n=4)
    work.cfg["destination"].update(WRITES)
    front = Front(work.dst, kms=True, require=POLICY)
    with in_front(work, "destination", front):
        dry = work.run("dest_sync_mvol.py", "--dry-run")
        r = work.run("sync_mvol.py", "--once", timeout=120)
        rep = work.run("repair_ledger.py")
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-4000:]
    assert ("uploads would write: storage class DEEP_ARCHIVE, encryption aws:kms (KMS key " + KEY_ARN +
            "), ACL bucket-owner-full-control") in dry.stdout, dry.stdout + dry.stderr
    assert uploads_of(front) == Counter({k: 1 for k in data})
    assert rep.returncode == 0 and "COMPLETE" in rep.stdout, rep.stdout + rep.stderr
    assert object_requests(front, "GET", "copy/") == Counter()  # nothing read back, not even by repair
    c = work.server.client()
    for k, v in data.items():
        head = c.head_object(Bucket=work.dst, Key="copy/" + k)
        assert head["StorageClass"] == "DEEP_ARCHIVE" and head["ServerSideEncryption"] == "aws:kms", k
        assert head["SSEKMSKeyId"] == KEY_ARN and head["ContentLength"] == len(v), k


def test_the_connect_tests_say_what_evidence_each_side_gives(work):
    c = work.server.client()
    c.put_object(Bucket=work.src, Key="data/sum.bin", Body=b"x" * 100, ChecksumAlgorithm="CRC64NVME")
    work.put("plain.bin", b"y" * 100)
    c.put_bucket_encryption(Bucket=work.dst, ServerSideEncryptionConfiguration={"Rules": [{
        "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": KEY_ARN}}]})
    work.cfg["destination"].update(WRITES)
    work.write_config()
    src = work.run("src_connect_test.py")
    assert src.returncode == 0, src.stderr
    assert "Default encryption: none" in src.stdout
    assert "ETags: can be MD5s of the data" in src.stdout
    assert "Checksums: 1 of 2 objects carry one (CRC64NVME 1)" in src.stdout
    assert "Evidence: checksum for the 1 objects that carry one, else MD5 or multipart ETag" in src.stdout
    dst = work.run("dest_connect_test.py", "--quiet")
    assert dst.returncode == 0, dst.stderr
    assert f"Default encryption: aws:kms (KMS key {KEY_ARN})" in dst.stdout
    assert "ETags: no MD5s of the data (default encryption aws:kms; destination.sse: aws:kms)" in dst.stdout
    assert ("Uploads: storage class DEEP_ARCHIVE, encryption aws:kms (KMS key " + KEY_ARN +
            "), ACL bucket-owner-full-control") in dst.stdout
    assert "content-md5" in dst.stdout


def test_an_archived_source_object_is_set_aside_at_once_naming_the_restore(work):
    """An object in DEEP_ARCHIVE cannot be read until restored: it is set aside after its first
    try (no try can help), named with the fix; the others move."""
    from s5jtransfer.progress import GAVE_UP

    data = seed(work, n=3)  # the large one is fetched in order while a destination side runs
    c = work.server.client()
    c.put_object(Bucket=work.src, Key="data/cold.bin", Body=os.urandom(5000), StorageClass="DEEP_ARCHIVE")
    c.put_object(Bucket=work.src, Key="data/cold-large.bin", Body=os.urandom(9 * MIB), StorageClass="DEEP_ARCHIVE")
    r = work.run("sync_mvol.py", "--once", timeout=120)
    log = r.stdout + r.stderr
    assert r.returncode == GAVE_UP, log[-4000:]
    assert_arrived(work, data)
    for key in ("cold.bin", "cold-large.bin"):
        assert f"gave up on {key!r} at once: it is in an archive storage class" in log, log[-4000:]
    report = json.loads((work.path / "transfer_report.json").read_text())
    assert sorted(report["given_up"]) == ["cold-large.bin", "cold.bin"]
    assert "restore-object" in report["given_up"]["cold.bin"]
