"""Shared fixtures: a real moto S3 server on loopback, an operator's working folder, script runner."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import boto3
import botocore.config
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll predicate until it returns a truthy value; fail the test with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class S3Server:
    def __init__(self, proc: subprocess.Popen, port: int, log_path: Path | None = None) -> None:
        self.proc = proc
        self.log_path = log_path
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def client(self):
        return boto3.client("s3", endpoint_url=self.url, aws_access_key_id="testing",
                            aws_secret_access_key="testing", region_name="us-east-1",
                            config=botocore.config.Config(retries={"max_attempts": 2},
                                                          request_checksum_calculation="when_required"))

    def new_bucket(self, stem: str) -> str:
        name = f"{stem}-{uuid.uuid4().hex[:10]}"
        self.client().create_bucket(Bucket=name)
        return name


def start_moto(port: int, log_path: Path) -> subprocess.Popen:
    logf = open(log_path, "ab")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")})

    def up():
        if proc.poll() is not None:
            raise RuntimeError(f"moto server exited: see {log_path}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return False

    wait_for(up, 30, "the moto S3 server to listen")
    return proc


@pytest.fixture(scope="session")
def s3server(tmp_path_factory):
    port = free_port()
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    proc = start_moto(port, log_path)
    yield S3Server(proc, port, log_path)
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def script_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """A clean environment for the scripts: no AWS variables leak in from the test runner."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"),
           "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1", "AWS_EC2_METADATA_DISABLED": "true"}
    env.update(extra or {})
    return env


class Work:
    """An operator's working folder: config.yaml, ledgers, staging volumes; runs the real scripts."""

    def __init__(self, path: Path, server: S3Server, src: str, dst: str, nvol: int = 2) -> None:
        self.path = path
        self.server = server
        self.src = src
        self.dst = dst
        self.volumes = [path / f"vol{i}" for i in range(1, nvol + 1)]
        for v in self.volumes:
            v.mkdir()
        self.cfg = {
            "source": {"bucket_name": src, "bucket_prefix": "data/", "region": "us-east-1",
                       "access_key": "testing", "secret_access_key": "testing"},
            "local": {"directory": str(path / "staging"), "volumes": [str(v) for v in self.volumes]},
            "destination": {"bucket_name": dst, "bucket_prefix": "copy/", "region": "us-east-1",
                            "access_key": "testing", "secret_access_key": "testing",
                            "delete_staging_data": True},
            "transfer_settings": {"max_size_to_transfer_src2l": 10_000_000_000, "max_size_to_transfer_l2dest": "",
                                  "dest_endpoint_url": server.url, "src_endpoint_url": server.url,
                                  "src_use_native_s3": False, "volume_reserve_bytes": 0,
                                  "poll_interval_seconds": 0.2, "max_poll_interval_seconds": 1},
        }
        self.write_config()

    def write_config(self, cfg: dict | None = None) -> None:
        p = self.path / "config.yaml"
        p.write_text(yaml.safe_dump(cfg or self.cfg, sort_keys=False))
        p.chmod(0o600)

    def argv(self, script: str, *args: str) -> list[str]:
        return [sys.executable, str(ROOT / script), *args]

    def run(self, script: str, *args: str, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(script, *args), cwd=self.path, capture_output=True, text=True,
                              timeout=timeout, env=script_env(env), stdin=subprocess.DEVNULL)

    def start(self, script: str, *args: str, env: dict | None = None, log_name: str | None = None,
              new_session: bool = False) -> subprocess.Popen:
        out = open(self.path / (log_name or f"{script}.log"), "ab")
        return subprocess.Popen(self.argv(script, *args), cwd=self.path, stdout=out, stderr=subprocess.STDOUT,
                                env=script_env(env), stdin=subprocess.DEVNULL, start_new_session=new_session)

    # -- S3 helpers ---------------------------------------------------------------------------
    def put(self, key: str, data: bytes, bucket: str | None = None, prefix: str = "data/") -> None:
        self.server.client().put_object(Bucket=bucket or self.src, Key=prefix + key, Body=data)

    def put_all(self, data: dict[str, bytes]) -> int:
        """Put every object of data (key -> bytes) under the source prefix; their total bytes."""
        for k, v in data.items():
            self.put(k, v)
        return sum(map(len, data.values()))
    def put_multipart(self, key: str, data: bytes, part_size: int = 5 * 1024 * 1024, prefix: str = "data/") -> str:
        """Upload in parts, as the AWS CLI or a Snowball client would: the ETag ends in -N."""
        import io

        from boto3.s3.transfer import TransferConfig

        c = self.server.client()
        c.upload_fileobj(io.BytesIO(data), self.src, prefix + key,
                         Config=TransferConfig(multipart_threshold=part_size, multipart_chunksize=part_size))
        etag = c.head_object(Bucket=self.src, Key=prefix + key)["ETag"].strip('"')
        assert "-" in etag, etag
        return etag

    def listing(self, bucket: str, prefix: str) -> dict[str, int]:
        """key (prefix stripped) -> size"""
        c = self.server.client()
        out = {}
        for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for o in page.get("Contents", []):
                out[o["Key"][len(prefix):]] = o["Size"]
        return out

    def dest_bytes(self, key: str) -> bytes:
        return self.server.client().get_object(Bucket=self.dst, Key="copy/" + key)["Body"].read()

    def ledger_lines(self, name: str = "src_ledger.csv") -> int:
        p = self.path / name
        return p.read_bytes().count(b"\n") if p.exists() else 0

    def staged_files(self) -> list[Path]:
        """Every file the suite keeps on the volumes but each volume's mark (health.MARK)."""
        return [p for v in self.volumes for p in (v / "s5jtransfer").rglob("*") if p.is_file() and p.name != ".volume"]


@pytest.fixture
def work(tmp_path, s3server) -> Work:
    src = s3server.new_bucket("src")
    dst = s3server.new_bucket("dst")
    return Work(tmp_path, s3server, src, dst)
