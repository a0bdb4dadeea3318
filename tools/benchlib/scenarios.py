"""The datasets: each scenario's objects, seeded into the source bucket, and the buckets' listing and emptying."""

from __future__ import annotations

import io
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from .common import KIB, MIB, SRC_BUCKET, SRC_PREFIX


@dataclass
class Scenario:
    name: str
    doc: str
    rate_mbit: float | None  # None: no shaping
    groups: list[tuple[str, int, int, int]]  # (folder, count, min size, max size)
    tools: list[str]
    rounds: int
    rescan: bool = False
    idle: bool = False
    reference: tuple[str, ...] = ("s5cmd-sync", "aws-sync", "rclone")  # in the first round only (--all-rounds: every)
    volume_bytes: int | None = None  # the suite's two staging volumes: tmpfs mounts of this size (None: folders)
    processes: bool = False  # the peak RSS of each process, ENOSPC lines, full source listings (small.py)
    objects: list[tuple[str, int, int]] = field(default_factory=list)  # (key, size, content seed)

    @property
    def total(self) -> int:
        return sum(o[1] for o in self.objects)


MULTIPART_FROM = 16 * MIB  # seeded as multipart uploads of 8 MiB parts from this size on


def make_scenarios(a) -> list[Scenario]:
    q = a.quick
    out = [
        Scenario("fat", "no shaping, each hop alone: the suite's side against s5cmd cp", None,
                 [("large", 3, 64 * MIB, 64 * MIB)] if q else [("large", 6, 256 * MIB, 256 * MIB)],
                 ["s5cmd-cp", "suite-sides", "suite", "s5cmd-sync", "aws-sync", "rclone"], a.rounds or (1 if q else 2),
                 reference=("suite", "s5cmd-sync", "aws-sync", "rclone")),
        Scenario("thin-large", "25 MB/s per side, large objects", 200.0,
                 [("large", 4, 8 * MIB, 24 * MIB)] if q else [("large", 10, 16 * MIB, 48 * MIB)],
                 ["s5cmd-cp", "suite", "s5cmd-sync", "aws-sync", "rclone"], a.rounds or (1 if q else 3)),
        Scenario("thin-mixed", "25 MB/s per side, many small objects and a few large", 200.0,
                 ([("small", 200, 0, 64 * KIB), ("medium", 4, MIB, 4 * MIB), ("large", 1, 18_000_000, 28_000_000)] if q else
                  [("small", 1500, 0, 64 * KIB), ("medium", 20, MIB, 4 * MIB), ("large", 4, 18_000_000, 28_000_000)]),
                 ["s5cmd-cp", "suite", "s5cmd-sync", "aws-sync", "rclone"], a.rounds or (1 if q else 3),
                 rescan=True, idle=True),
        Scenario("small", "no shaping, 0-2 KiB objects through two 24 MiB tmpfs staging volumes", None,
                 [("tiny", 10_000 if q else 100_000, 0, 2 * KIB)], ["s5cmd-cp", "s5cmd-lines", "suite"], a.rounds or 1,
                 reference=(), volume_bytes=24 * MIB, processes=True),
    ]
    for s in out:
        if a.rate_mbit is not None and s.rate_mbit is not None:
            s.rate_mbit = a.rate_mbit
        rnd = random.Random(f"{a.seed}-{s.name}")
        for folder, n, lo, hi in s.groups:
            for i in range(n):
                sub = (f"d{i % 400:03d}/" if n > 10_000 else f"d{i % 40:02d}/") if n > 100 else ""
                s.objects.append((f"{SRC_PREFIX}{folder}/{sub}obj-{i:05d}.bin", rnd.randint(lo, hi), rnd.getrandbits(32)))
    return out


def seed_source(s3, objects: list[tuple[str, int, int]]) -> None:
    from boto3.s3.transfer import TransferConfig
    tc = TransferConfig(multipart_threshold=MULTIPART_FROM, multipart_chunksize=8 * MIB, max_concurrency=4)

    def put(obj):
        key, size, cseed = obj
        rnd = random.Random(cseed)
        data = b"".join(rnd.randbytes(min(16 * MIB, size - i)) for i in range(0, size, 16 * MIB))  # < 2**31 bits each
        if size >= MULTIPART_FROM:
            s3.upload_fileobj(io.BytesIO(data), SRC_BUCKET, key, Config=tc)
        else:
            s3.put_object(Bucket=SRC_BUCKET, Key=key, Body=data)

    big = [o for o in objects if o[1] >= MULTIPART_FROM]
    with ThreadPoolExecutor(2) as ex:  # a few at once: each is hundreds of MB in memory
        list(ex.map(put, big))
    with ThreadPoolExecutor(16) as ex:
        list(ex.map(put, [o for o in objects if o[1] < MULTIPART_FROM]))


def list_side(s3, bucket: str, prefix: str) -> tuple[int, int]:
    n = total = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            n += 1
            total += o["Size"]
    return n, total


def empty_bucket(s3, bucket: str, prefix: str = "") -> None:
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [{"Key": o["Key"]} for o in page.get("Contents", [])]
    for i in range(0, len(keys), 1000):
        s3.delete_objects(Bucket=bucket, Delete={"Objects": keys[i:i + 1000], "Quiet": True})
    try:  # the multipart uploads a killed tool may have left
        for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
            for u in page.get("Uploads", []):
                s3.abort_multipart_upload(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"])
    except Exception:  # noqa: BLE001 - best effort
        pass
