"""The original scripts' config.yaml files (tests/fixtures/original_v11_config.yaml and
original_v12_config.yaml) run a real transfer unchanged, but for the bucket names, keys and
endpoint URLs that point them at the test server."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import pytest
import yaml

from tlsproxy import TLSFront

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
KEYS = ("YOUR_SOURCE_ACCESS_KEY", "YOUR_SOURCE_SECRET_KEY", "YOUR_DESTINATION_ACCESS_KEY",
        "YOUR_DESTINATION_SECRET_KEY")


def original(work, name: str, endpoints: dict[str, str]) -> str:
    """The fixture's text with only its placeholders replaced; written as the working folder's config.yaml."""
    text = (FIXTURES / name).read_text()
    text = text.replace("your-snowball-bucket", work.src).replace("your-destination-bucket", work.dst)
    for k in KEYS:
        text = text.replace(k, "testing")
    for old, new in endpoints.items():
        assert old in text, old
        text = text.replace(old, new)
    path = work.path / "config.yaml"
    path.write_text(text)
    path.chmod(0o600)
    return text


def seed(work) -> dict[str, bytes]:
    data = {f"dir/{i:03d}.bin": os.urandom(200 + 37 * i) for i in range(40)}
    data["large.bin"] = os.urandom(3 * 1024 * 1024)
    work.put_all(data)
    return data


def check_moved(work, data, r):
    assert r.returncode == 0, r.stderr[-3000:]
    for k, v in data.items():
        assert work.dest_bytes(k) == v
    assert "unknown key" not in r.stderr
    staging = work.path / "temp_files_for_transfer"
    assert staging.is_dir()  # local.directory, its note dropped
    assert not [p for p in work.path.iterdir() if "#" in p.name or "depricated" in p.name]
    assert not [p for p in staging.rglob("*") if p.is_file() and p.name != ".volume"]  # freed once confirmed


def test_original_v11_config_runs_unchanged(work):
    """v11: a legacy Snowball (region snow, http://IP:8080), no_endpoint destination,
    max_size_to_transfer_l2dest: 200 (ignored: no limit, nothing slowed)."""
    data = seed(work)
    text = original(work, "original_v11_config.yaml", {"http://192.0.2.10:8080": work.server.url,
                                                       '"no_endpoint"': f'"{work.server.url}"'})
    assert "max_size_to_transfer_l2dest: 200 # NOT IMPLEMENTED" in text
    r = work.run("sync_mvol.py", "--once", timeout=240)
    check_moved(work, data, r)
    assert "WARNING" not in r.stderr, r.stderr[-3000:]  # http: nothing about TLS, nothing about the old key
    assert work.ledger_lines() == len(data) + 1


@pytest.mark.skipif(bool(glob.glob("/tmp/volume-[0-9][0-9]")),
                    reason="staging_volumes ['default'] would stage on this machine's /tmp/volume-NN")
def test_original_v12_config_runs_unchanged(work):
    """v12: endpoint lists (a two-node Snowball cluster over https with its self-signed
    certificate, no ca_bundle), staging_volumes ['default'] (no /tmp/volume-NN here: local.directory),
    delete_staging_data True, a deprecated local.directory with a note inside its quotes."""
    data = seed(work)
    fronts = [TLSFront(work.server.port).start() for _ in range(2)]
    try:
        text = original(work, "original_v12_config.yaml", {
            "'https://192.0.2.10', 'https://192.0.2.11'": f"'{fronts[0].url}', '{fronts[1].url}'",
            "['no_endpoint']": f"['{work.server.url}']"})
        doc = yaml.safe_load(text)
        assert doc["destination"]["staging_volumes"] == ["default"]
        assert doc["local"]["directory"] == "temp_files_for_transfer/ # this is depricated"
        r = work.run("sync_mvol.py", "--once", timeout=240)
        check_moved(work, data, r)
        assert sum(f.connections for f in fronts) > 0
        # the Snowball's certificate is not verified: said once, with the fix
        warned = [l for l in r.stderr.splitlines() if "NOT verified" in l]
        assert len(warned) == 1 and "snowballEdge get-certificate" in warned[0], r.stderr[-3000:]
        assert fronts[0].url in warned[0] and fronts[1].url in warned[0]
    finally:
        for f in fronts:
            f.stop()
