"""`make demo`: one complete, verified transfer on your own machine, the way an operator runs it.

Starts moto's standalone S3 server on loopback, seeds a source bucket with sample data (odd
key names, an empty file, multipart objects), writes demo/config.yaml, then runs the real
scripts from demo/ as the working folder:

    python src_connect_test.py --quiet
    python dest_connect_test.py --quiet
    python sync_mvol.py --once
    python repair_ledger.py

and finally checks every destination object byte for byte against the source. Everything it
makes lives in demo/ (git-ignored; removed and recreated on each run). Exit 0 means PASS.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
import botocore.config
from boto3.s3.transfer import TransferConfig

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "demo"
MIB = 1024 * 1024
SRC_BUCKET, DST_BUCKET = "demo-source", "demo-destination"
SRC_PREFIX, DST_PREFIX = "data/", "copy/"
STEP_TIMEOUT = 300
STEPS = [("src_connect_test.py", "--quiet"), ("dest_connect_test.py", "--quiet"),
         ("sync_mvol.py", "--once"), ("repair_ledger.py",)]
ODD_NAMES = ["odd/with space.txt", "odd/it's quoted.txt", 'odd/"double".txt', "odd/$(echo hi).txt",
             "odd/`uname`;ls.txt", "odd/star*.txt", "odd/bracket[1].txt", "odd/question?.txt",
             "odd/100% & more.txt", "odd/café-ünïcødé.txt", "odd/日本語/ファイル.txt", "odd/emoji-🚚.txt"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, log: Path, timeout: float = 30) -> subprocess.Popen:
    with log.open("wb") as out:  # the server keeps its own copy of the file descriptor
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=script_env())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the moto S3 server exited with code {proc.returncode}; see {log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"the moto S3 server did not listen within {timeout:.0f}s; see {log}")


def script_env() -> dict[str, str]:
    """What a subprocess sees: no AWS variables from this shell, so only config.yaml counts."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"),
            "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1", "AWS_EC2_METADATA_DISABLED": "true"}


def sample_data() -> dict[str, bytes]:
    """~60 small objects (key below the prefix -> bytes), deterministic so runs are comparable."""
    rnd = random.Random(5)
    files: dict[str, bytes] = {"README.txt": b"Sample data for the s5jtransfer demo.\n", "empty.dat": b""}
    for i in range(1, 13):
        rows = "\n".join(f"{d},{rnd.randint(0, 9999)},{rnd.random():.6f}" for d in range(rnd.randint(5, 300)))
        files[f"reports/2024/{i:02d}/summary.csv"] = f"day,count,ratio\n{rows}\n".encode()
    for i in range(1, 16):
        lines = "".join(f"2024-05-{i:02d}T12:00:{s:02d}Z event={rnd.choice('ABCDEF')}\n" for s in range(60))
        files[f"logs/day-{i:02d}.log"] = lines.encode()
    for i in range(1, 16):
        files[f"sensors/site-{i % 3}/raw-{i:03d}.bin"] = rnd.randbytes(rnd.randint(1, 200_000))
    for name in ODD_NAMES:
        files[name] = f"key: {name}\n".encode()
    for name in ("pkg.deb", "notes.cafe", "image.1234"):  # hex / digit extensions are real files
        files[f"misc/{name}"] = rnd.randbytes(4096)
    return files


def big_data() -> dict[str, tuple[bytes, TransferConfig | None]]:
    """Objects large enough for multipart; None = a single PUT (a plain MD5 ETag)."""
    rnd = random.Random(7)
    eight = TransferConfig(multipart_threshold=8 * MIB, multipart_chunksize=8 * MIB)
    five = TransferConfig(multipart_threshold=8 * MIB, multipart_chunksize=5 * MIB)
    return {"video/survey-20MiB.bin": (rnd.randbytes(20 * MIB + 12345), eight),
            "archive/backup 13MiB.tar": (rnd.randbytes(13 * MIB + 1), five),
            "archive/single-put-9MiB.bin": (rnd.randbytes(9 * MIB), None)}


def seed(s3, small: dict[str, bytes], big: dict[str, tuple[bytes, TransferConfig | None]]) -> None:
    for key, data in small.items():
        s3.put_object(Bucket=SRC_BUCKET, Key=SRC_PREFIX + key, Body=data)
    for key, (data, tc) in big.items():
        if tc is None:
            s3.put_object(Bucket=SRC_BUCKET, Key=SRC_PREFIX + key, Body=data)
            continue
        s3.upload_fileobj(io.BytesIO(data), SRC_BUCKET, SRC_PREFIX + key, Config=tc)
        etag = s3.head_object(Bucket=SRC_BUCKET, Key=SRC_PREFIX + key)["ETag"].strip('"')
        if "-" not in etag:
            raise RuntimeError(f"{key}: expected a multipart ETag (with -N), got {etag}")
        print(f"  {key}: {len(data)} bytes, multipart ETag {etag}")


def write_config(url: str) -> Path:
    vols = [DEMO / "volume-01", DEMO / "volume-02"]
    for v in vols:
        v.mkdir()
    text = f"""# Written by tools/demo.py: a local moto S3 server stands in for the Snowball and for AWS.
source:
  bucket_name: {SRC_BUCKET}
  bucket_prefix: {SRC_PREFIX}
  region: us-east-1
  access_key: demo
  secret_access_key: demo
local:
  directory: {json.dumps(str(DEMO / "staging"))}
  volumes: [{json.dumps(str(vols[0]))}, {json.dumps(str(vols[1]))}]
destination:
  bucket_name: {DST_BUCKET}
  bucket_prefix: {DST_PREFIX}
  region: us-east-1
  access_key: demo
  secret_access_key: demo
  delete_staging_data: true
transfer_settings:
  max_size_to_transfer_src2l: 500000000000
  max_size_to_transfer_l2dest: ''
  src_endpoint_url: {url}
  dest_endpoint_url: {url}
  src_use_native_s3: false
  volume_reserve_bytes: 0          # the demo's data is small; leave no space aside
  poll_interval_seconds: 0.5
"""
    path = DEMO / "config.yaml"
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


def run_step(script: str, *args: str) -> bool:
    print(f"\n==> python {' '.join((script,) + args)}", flush=True)
    try:
        rc = subprocess.run([sys.executable, str(ROOT / script), *args], cwd=DEMO, env=script_env(),
                            stdin=subprocess.DEVNULL, stderr=subprocess.STDOUT, timeout=STEP_TIMEOUT).returncode
    except subprocess.TimeoutExpired:
        print(f"<== {script}: timed out after {STEP_TIMEOUT}s", flush=True)
        return False
    print(f"<== {script}: exit code {rc}", flush=True)
    return rc == 0


def listing(s3, bucket: str, prefix: str) -> dict[str, int]:
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            out[o["Key"][len(prefix):]] = o["Size"]
    return out


def compare(s3, src: dict[str, int], dst: dict[str, int]) -> tuple[int, list[str]]:
    """GET both copies of every source object: (how many are equal, one line per problem)."""
    equal, bad = 0, [f"extra at destination: {k!r}" for k in sorted(dst.keys() - src.keys())]
    for key in sorted(src):
        if key not in dst:
            bad.append(f"missing at destination: {key!r}")
            continue
        a = s3.get_object(Bucket=SRC_BUCKET, Key=SRC_PREFIX + key)["Body"].read()
        b = s3.get_object(Bucket=DST_BUCKET, Key=DST_PREFIX + key)["Body"].read()
        if a == b:
            equal += 1
        else:
            bad.append(f"content differs: {key!r} ({len(a)} vs {len(b)} bytes)")
    return equal, bad


def main() -> int:
    started = time.monotonic()
    if DEMO.exists():
        shutil.rmtree(DEMO)
    DEMO.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(port, DEMO / "moto.log")
    try:
        print(f"moto S3 server on {url} (log: demo/moto.log)")
        s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="demo",
                          aws_secret_access_key="demo",
                          config=botocore.config.Config(request_checksum_calculation="when_required"))
        s3.create_bucket(Bucket=SRC_BUCKET)
        s3.create_bucket(Bucket=DST_BUCKET)
        small, big = sample_data(), big_data()
        print(f"seeding s3://{SRC_BUCKET}/{SRC_PREFIX} with {len(small) + len(big)} objects")
        seed(s3, small, big)
        print(f"wrote {write_config(url).relative_to(ROOT)} (chmod 600)")

        failed = [s for s in STEPS if not run_step(*s)]

        src = listing(s3, SRC_BUCKET, SRC_PREFIX)
        dst = listing(s3, DST_BUCKET, DST_PREFIX)
        ledger = DEMO / "src_ledger.csv"
        lines = ledger.read_bytes().count(b"\n") if ledger.exists() else 0
        equal, bad = compare(s3, src, dst)
        print("\n==> result")
        print(f"source      s3://{SRC_BUCKET}/{SRC_PREFIX}: {len(src)} objects, {sum(src.values())} bytes")
        print(f"destination s3://{DST_BUCKET}/{DST_PREFIX}: {len(dst)} objects, {sum(dst.values())} bytes")
        print(f"wc -l src_ledger.csv: {lines} (want {len(src) + 1} = source objects + header)")
        for line in bad:
            print(f"  {line}")
        print(f"byte-for-byte equal at the destination: {equal}/{len(src)}")
        ok = not failed and not bad and lines == len(src) + 1
        if failed:
            print("failed steps: " + ", ".join(s[0] for s in failed))
        print(f"{'PASS' if ok else 'FAIL'} ({time.monotonic() - started:.1f}s)")
        return 0 if ok else 1
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


if __name__ == "__main__":
    sys.exit(main())
