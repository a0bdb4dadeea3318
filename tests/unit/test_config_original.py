"""The original scripts' config.yaml files (v11 and v12 layouts) load unchanged; their names map
onto the suite's; max_size_to_transfer_l2dest is accepted and ignored; dest_max_bytes_in_flight."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from s5jtransfer.config import load, parse_bytes
from s5jtransfer.errors import ConfigError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def copy_fixture(tmp_path, name: str) -> str:
    dst = tmp_path / "config.yaml"
    shutil.copy(FIXTURES / name, dst)
    dst.chmod(0o600)
    return str(dst)


def test_original_v11_config_loads_unchanged(tmp_path):
    cfg = load(copy_fixture(tmp_path, "original_v11_config.yaml"))
    assert (cfg.source.bucket, cfg.source.prefix, cfg.source.region) == ("your-snowball-bucket", "data/", "snow")
    assert cfg.source.endpoints == ("http://192.0.2.10:8080",)
    assert cfg.destination.endpoints == ()  # no_endpoint: AWS
    assert cfg.source.access_key.reveal() == "YOUR_SOURCE_ACCESS_KEY"
    assert cfg.directory == "temp_files_for_transfer/"
    assert cfg.volumes == ()
    assert cfg.settings.max_src2l == 500000000000
    assert cfg.settings.src_use_native_s3 is False
    # 200 (gigabytes, "NOT IMPLEMENTED" in the original) sets no limit at all: no slowdown
    assert cfg.settings.max_l2dest is None
    assert cfg.warnings == ()


def test_original_v12_config_loads_unchanged(tmp_path):
    cfg = load(copy_fixture(tmp_path, "original_v12_config.yaml"))
    assert cfg.source.endpoints == ("https://192.0.2.10", "https://192.0.2.11")
    assert cfg.destination.endpoints == ()  # ['no_endpoint']
    # the note inside the quotes is a note, not part of the folder's name
    assert cfg.directory == "temp_files_for_transfer/"
    assert cfg.volumes == ()  # ['default']: every /tmp/volume-NN, as local.volumes: []
    assert cfg.delete_staging_data is True
    assert cfg.settings.max_l2dest is None
    assert cfg.warnings == ()


def _v12(tmp_path) -> dict:
    return yaml.safe_load((FIXTURES / "original_v12_config.yaml").read_text())


def _write(tmp_path, doc: dict) -> str:
    p = tmp_path / "config.yaml"
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    p.chmod(0o600)
    return str(p)


def test_staging_volumes_list_of_folders_is_local_volumes(tmp_path):
    doc = _v12(tmp_path)
    doc["destination"]["staging_volumes"] = ["/data/v1", "/data/v2"]
    cfg = load(_write(tmp_path, doc))
    assert cfg.volumes == ("/data/v1", "/data/v2")
    # the suite's own name is an alias: the same list under local.volumes is accepted
    doc["local"]["volumes"] = ["/data/v1", "/data/v2"]
    assert load(_write(tmp_path, doc)).volumes == ("/data/v1", "/data/v2")
    doc["local"]["volumes"] = ["/data/v3"]
    with pytest.raises(ConfigError, match="staging_volumes.*differs from local.volumes"):
        load(_write(tmp_path, doc))


def test_staging_volumes_default_alone_or_a_plain_string(tmp_path):
    doc = _v12(tmp_path)
    doc["destination"]["staging_volumes"] = "default"
    assert load(_write(tmp_path, doc)).volumes == ()
    doc["destination"]["staging_volumes"] = ["default", "/data/v1"]
    with pytest.raises(ConfigError, match="'default' cannot be part of a list"):
        load(_write(tmp_path, doc))
    doc["destination"]["staging_volumes"] = [1, 2]
    with pytest.raises(ConfigError, match="destination.staging_volumes"):
        load(_write(tmp_path, doc))


@pytest.mark.parametrize("value", [200, "200", "200 # NOT IMPLEMENTED (in gigabytes)", "", None, 0, "junk"])
def test_max_size_to_transfer_l2dest_is_accepted_and_ignored(tmp_path, value):
    doc = _v12(tmp_path)
    doc["transfer_settings"]["max_size_to_transfer_l2dest"] = value
    cfg = load(_write(tmp_path, doc))
    assert cfg.settings.max_l2dest is None and cfg.warnings == ()


@pytest.mark.parametrize("value,expected", [
    (1000, 1000), ("1000", 1000), ("200GB", 200 * 10 ** 9), ("512MiB", 512 * 2 ** 20), ("1.5 TB", 15 * 10 ** 11),
    ("2gib", 2 * 2 ** 30), ("", None), (None, None), (0, None), ("64 KiB # a note", 64 * 1024),
])
def test_dest_max_bytes_in_flight_takes_a_unit(tmp_path, value, expected):
    doc = _v12(tmp_path)
    doc["transfer_settings"]["dest_max_bytes_in_flight"] = value
    assert load(_write(tmp_path, doc)).settings.max_l2dest == expected


@pytest.mark.parametrize("value", ["200 parsecs", "GB", -5, "1e400GB", True, [1]])
def test_dest_max_bytes_in_flight_rejects_what_is_not_a_size(tmp_path, value):
    doc = _v12(tmp_path)
    doc["transfer_settings"]["dest_max_bytes_in_flight"] = value
    with pytest.raises(ConfigError, match="dest_max_bytes_in_flight.*200GB"):
        load(_write(tmp_path, doc))


def test_parse_bytes():
    assert parse_bytes("200GB") == 200_000_000_000
    assert parse_bytes("1_000") == 1000
    assert parse_bytes("3 b") == 3
    assert parse_bytes("1.2.3GB") is None and parse_bytes(-1) is None


def test_notes_inside_quotes_are_dropped_but_not_from_prefixes_or_keys(tmp_path):
    doc = _v12(tmp_path)
    doc["source"]["region"] = "snow # the Snowball"
    doc["transfer_settings"]["src_use_native_s3"] = "True # safest for Snowballs"
    doc["transfer_settings"]["src_endpoint_url"] = ["https://192.0.2.10 # node 1"]
    doc["source"]["secret_access_key"] = "abc #def"
    cfg = load(_write(tmp_path, doc))
    assert cfg.source.is_snow and cfg.settings.src_use_native_s3 is True
    assert cfg.source.endpoints == ("https://192.0.2.10",)
    assert cfg.source.secret_key.reveal() == "abc #def"  # a credential is taken as written
    doc["source"]["bucket_prefix"] = "a #b/"
    assert load(_write(tmp_path, doc)).source.prefix == "a #b/"  # a key prefix is taken as written


def test_ca_bundle_and_verify_tls_per_side(tmp_path):
    pem = tmp_path / "snowball.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\n")
    doc = _v12(tmp_path)
    doc["source"]["ca_bundle"] = "snowball.pem"  # relative to the folder of config.yaml
    cfg = load(_write(tmp_path, doc))
    assert cfg.source.ca_bundle == str(pem) and cfg.source.verify_tls is True
    assert cfg.destination.ca_bundle is None
    doc["source"]["ca_bundle"] = str(tmp_path / "missing.pem")
    with pytest.raises(ConfigError, match="source.ca_bundle.*not a readable file.*get-certificate"):
        load(_write(tmp_path, doc))
    doc["source"]["ca_bundle"] = None
    doc["source"]["verify_tls"] = False
    assert load(_write(tmp_path, doc)).source.verify_tls is False
    # AWS endpoints are always verified: verify_tls false there is refused
    doc["destination"]["verify_tls"] = False
    with pytest.raises(ConfigError, match="destination.verify_tls.*AWS endpoints are always verified"):
        load(_write(tmp_path, doc))
    doc["destination"]["verify_tls"] = True
    doc["transfer_settings"]["dest_endpoint_url"] = "https://s3-accelerate.amazonaws.com"
    doc["destination"]["verify_tls"] = "false"
    with pytest.raises(ConfigError, match="AWS endpoints are always verified"):
        load(_write(tmp_path, doc))
