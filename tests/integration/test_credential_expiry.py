"""Short-lived keys that another tool rewrites into the credentials file (with an
aws_session_token), end to end with the real s5cmd: aws-sdk-go reads such keys once, so an s5cmd
started before the renewal goes on signing with the old ones until the store answers
ExpiredToken. The side must end that s5cmd, start another that reads the file again, and move
every object, none set aside, with one warning for them all.

A proxy in front of moto (which checks no signature) plays the store: it answers ExpiredToken to
every request an s5cmd (aws-sdk-go) signs with the old key, and at its first such answer writes
the new keys into the file, as the renewing tool would have done by then. The scripts' own boto3
requests pass: boto3 reads a profile's static keys once per script, and operations.md tells the
operator to restart the scripts after a renewal; this test is about the s5cmd the side restarts.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import urllib.parse
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from faultproxy import FaultProxy  # noqa: E402

OLD = ("ASIAOLDSESSIONKEY001", "old-secret", "old-session-token")
NEW = ("ASIANEWSESSIONKEY002", "new-secret", "new-session-token")
_KEY_ID = re.compile(r"Credential=([A-Z0-9]+)/")


class RenewedStore:
    """The proxy's `refuse`: ExpiredToken to s5cmd's requests signed with OLD; renews the file once."""

    def __init__(self, credentials: Path, bucket: str) -> None:
        self.credentials = credentials
        self.bucket = bucket
        self.signed: Counter = Counter()  # key id -> s5cmd's requests to the bucket signed with it
        self.lock = threading.Lock()
        self.write(OLD)

    def write(self, keys: tuple[str, str, str]) -> None:
        tmp = self.credentials.with_suffix(".tmp")  # renewed whole, as a tool that renames its file
        tmp.write_text(f"[rotating]\naws_access_key_id = {keys[0]}\naws_secret_access_key = {keys[1]}\n"
                       f"aws_session_token = {keys[2]}\n")
        os.replace(tmp, self.credentials)

    def refuse(self, method: str, target: str, headers) -> tuple[int, str, str] | None:
        path = urllib.parse.urlsplit(target).path
        if not path.startswith(f"/{self.bucket}/") or "aws-sdk-go" not in headers.get("User-Agent", ""):
            return None
        found = _KEY_ID.search(headers.get("Authorization", ""))
        key_id = found.group(1) if found else "-"
        with self.lock:
            self.signed[key_id] += 1
            if key_id != OLD[0]:
                return None
            if self.signed[key_id] == 1:
                self.write(NEW)
        return 400, "ExpiredToken", "The provided token has expired."


@pytest.mark.parametrize("side", ["source", "destination"])
def test_an_s5cmd_whose_session_keys_expired_is_restarted_with_the_renewed_ones_and_all_arrives(work, side):
    data = {f"d{i % 3}/obj{i}.bin": os.urandom(500 + 997 * i) for i in range(40)}
    work.put_all(data)
    (work.path / "aws").mkdir()
    store = RenewedStore(work.path / "aws" / "credentials", work.src if side == "source" else work.dst)
    (work.path / "aws" / "config").write_text("")
    work.cfg[side].update({"access_key": "", "secret_access_key": "", "profile": "rotating"})
    env = {"AWS_CONFIG_FILE": str(work.path / "aws" / "config"),
           "AWS_SHARED_CREDENTIALS_FILE": str(store.credentials)}

    with FaultProxy(work.server.url, refuse=store.refuse) as proxy:
        work.cfg["transfer_settings"][f"{'src' if side == 'source' else 'dest'}_endpoint_url"] = proxy.url
        work.write_config()
        r = work.run("sync_mvol.py", "--once", env=env, timeout=120)

    log = r.stdout + r.stderr
    assert r.returncode == 0, log
    assert proxy.stats["refused"] >= 1 and store.signed[OLD[0]] >= 1, store.signed
    assert f"{side} credentials expired; s5cmd restarted to read them again (the " in log, log
    # that one warning speaks for the objects that failed for it: no warning per object
    assert [line for line in log.splitlines() if " WARNING " in line and "(try " in line] == [], log
    assert store.signed[NEW[0]] >= 1, store.signed  # the new s5cmd read the renewed file
    for k, v in data.items():
        assert work.dest_bytes(k) == v, k
    assert work.staged_files() == []
    report = json.loads((work.path / "transfer_report.json").read_text())
    assert report["given_up"] == {}, report["given_up"]
    for secret in (OLD[1], NEW[1], OLD[2], NEW[2]):
        assert secret not in log
