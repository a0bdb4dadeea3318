"""Unit tests for s5jtransfer.config.load: defaults, every validation rule, secrets, file mode."""

from __future__ import annotations

import copy
import os

import pytest
import yaml

from s5jtransfer import config
from s5jtransfer.config import Secret, load
from s5jtransfer.errors import ConfigError

SECRET = "AKIASECRETVALUE123"
SECRET2 = "wJalrSECRETKEYVALUE456"


def base_cfg() -> dict:
    return {
        "source": {"bucket_name": "src-bucket", "bucket_prefix": "data/", "region": "snow",
                   "access_key": "", "secret_access_key": ""},
        "local": {"directory": "/tmp/s5j-staging"},
        "destination": {"bucket_name": "dst-bucket", "bucket_prefix": "", "region": "us-east-1",
                        "access_key": "", "secret_access_key": ""},
        "transfer_settings": {"max_size_to_transfer_src2l": 500000000000, "max_size_to_transfer_l2dest": "",
                              "src_endpoint_url": "http://192.0.2.10:8080", "dest_endpoint_url": "no_endpoint",
                              "src_use_native_s3": False},
    }


def write(tmp_path, cfg, name="config.yaml", mode=0o600) -> str:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(cfg, sort_keys=False) if isinstance(cfg, dict) else cfg)
    p.chmod(mode)
    return str(p)


def load_error(path: str) -> str:
    with pytest.raises(ConfigError) as ei:
        load(path)
    assert ei.value.exit_code == 2
    msg = str(ei.value)
    assert path in msg, msg
    return msg


def assert_names(msg: str, key: str, fix: str) -> None:
    assert key in msg, msg
    assert fix in msg, msg


# --- a valid file -----------------------------------------------------------------------------

def test_valid_config_loads_into_dataclasses_with_defaults(tmp_path):
    path = write(tmp_path, base_cfg())
    cfg = load(path)
    assert isinstance(cfg, config.Config)
    assert cfg.path == os.path.abspath(path)
    assert isinstance(cfg.source, config.Side) and isinstance(cfg.destination, config.Side)
    assert (cfg.source.name, cfg.source.bucket, cfg.source.prefix, cfg.source.region) == \
        ("source", "src-bucket", "data/", "snow")
    assert cfg.source.is_snow and not cfg.destination.is_snow
    assert cfg.source.endpoints == ("http://192.0.2.10:8080",)
    assert cfg.source.endpoint == "http://192.0.2.10:8080"
    assert cfg.destination.endpoints == () and cfg.destination.endpoint is None
    assert cfg.destination.prefix == ""
    assert cfg.directory == "/tmp/s5j-staging"
    assert cfg.volumes == ()
    assert cfg.delete_staging_data is True
    s = cfg.settings
    assert s.max_src2l == 500000000000
    assert s.max_l2dest is None
    assert s.src_use_native_s3 is False
    assert s.s5cmd_path is None
    assert (s.src_workers, s.dest_workers, s.retries) == (64, 64, 10)
    assert s.part_size == 50 * 1024 * 1024
    assert s.volume_reserve == 256 * 1024 * 1024
    assert (s.poll_interval, s.max_poll_interval) == (1.0, 30.0)
    assert cfg.warnings == ()


def test_optional_settings_override_defaults(tmp_path):
    c = base_cfg()
    c["transfer_settings"].update(src_workers=8, dest_workers="16", part_size_mb=8, retries=3,
                                  volume_reserve_bytes=0, poll_interval_seconds=0.5,
                                  max_poll_interval_seconds=2, dest_max_bytes_in_flight=1000,
                                  idle_verify_interval_seconds=0)
    c["local"]["volumes"] = ["/data/v1", " /data/v2 "]
    c["destination"]["delete_staging_data"] = "no"
    cfg = load(write(tmp_path, c))
    s = cfg.settings
    assert (s.src_workers, s.dest_workers, s.retries, s.volume_reserve) == (8, 16, 3, 0)
    assert s.part_size == 8 * 1024 * 1024
    assert (s.poll_interval, s.max_poll_interval, s.max_l2dest) == (0.5, 2.0, 1000)
    assert s.idle_verify_interval == 0
    assert load(write(tmp_path, base_cfg())).settings.idle_verify_interval == 3600
    assert cfg.volumes == ("/data/v1", "/data/v2")
    assert cfg.delete_staging_data is False


@pytest.mark.parametrize("value", ["", None])
def test_empty_credentials_mean_no_credentials(tmp_path, value):
    c = base_cfg()
    c["source"].update(access_key=value, secret_access_key=value)
    cfg = load(write(tmp_path, c))
    assert cfg.source.has_credentials is False
    assert cfg.destination.has_credentials is False
    assert cfg.source.access_key.reveal() == ""


def test_credentials_are_loaded_as_secrets(tmp_path):
    c = base_cfg()
    c["source"].update(access_key=SECRET, secret_access_key=SECRET2)
    cfg = load(write(tmp_path, c))
    assert cfg.source.has_credentials is True
    assert isinstance(cfg.source.access_key, Secret)
    assert cfg.source.access_key.reveal() == SECRET
    assert cfg.source.secret_key.reveal() == SECRET2


def test_empty_prefix_is_accepted(tmp_path):
    c = base_cfg()
    c["source"]["bucket_prefix"] = ""
    c["destination"]["bucket_name"] = "other"
    assert load(write(tmp_path, c)).source.prefix == ""


def test_endpoint_list_of_two_urls_becomes_a_tuple(tmp_path):
    c = base_cfg()
    c["transfer_settings"]["src_endpoint_url"] = ["http://192.0.2.10:8080", "https://192.0.2.11/"]
    cfg = load(write(tmp_path, c))
    assert cfg.source.endpoints == ("http://192.0.2.10:8080", "https://192.0.2.11")
    assert isinstance(cfg.source.endpoints, tuple)
    assert cfg.source.endpoint == "http://192.0.2.10:8080"


def test_no_endpoint_gives_an_empty_tuple(tmp_path):
    c = base_cfg()
    c["source"]["region"] = "us-west-2"
    c["transfer_settings"]["src_endpoint_url"] = "no_endpoint"
    cfg = load(write(tmp_path, c))
    assert cfg.source.endpoints == ()
    assert cfg.source.endpoint is None


# --- every rule: ConfigError naming file, dotted key and a fix --------------------------------

@pytest.mark.parametrize("section", ["source", "local", "destination", "transfer_settings"])
def test_missing_section_is_named_with_a_fix(tmp_path, section):
    c = base_cfg()
    del c[section]
    msg = load_error(write(tmp_path, c))
    assert_names(msg, section, f"add a '{section}:' section")


@pytest.mark.parametrize("section,key", [
    ("source", "bucket_name"), ("source", "bucket_prefix"), ("source", "region"),
    ("destination", "region"), ("local", "directory"),
    ("transfer_settings", "max_size_to_transfer_src2l"), ("transfer_settings", "src_endpoint_url"),
    ("transfer_settings", "dest_endpoint_url"),
])
def test_missing_required_key_is_named_with_a_fix(tmp_path, section, key):
    c = base_cfg()
    del c[section][key]
    msg = load_error(write(tmp_path, c))
    assert_names(msg, f"{section}.{key}", f"add '{key}:' under '{section}:'")


def test_mistyped_key_suggests_the_right_one(tmp_path):
    c = base_cfg()
    c["source"]["bucket_prefx"] = c["source"].pop("bucket_prefix")
    msg = load_error(write(tmp_path, c))
    assert_names(msg, "source.bucket_prefx", "did you mean 'bucket_prefix'?")


def test_unknown_section_is_named_with_a_suggestion(tmp_path):
    c = base_cfg()
    c["transfer_setings"] = c.pop("transfer_settings")
    msg = load_error(write(tmp_path, c))
    assert_names(msg, "transfer_setings", "did you mean 'transfer_settings'?")


def test_unknown_section_without_close_match_lists_valid_sections(tmp_path):
    c = base_cfg()
    c["zzz"] = {"a": 1}
    msg = load_error(write(tmp_path, c))
    assert_names(msg, "zzz", "valid sections: source, local, destination, transfer_settings")


def test_prefix_with_leading_slash_is_rejected(tmp_path):
    c = base_cfg()
    c["source"]["bucket_prefix"] = "/data/"
    msg = load_error(write(tmp_path, c))
    assert_names(msg, "source.bucket_prefix", "without the leading slash, e.g. 'data/'")


def test_prefix_without_trailing_slash_is_rejected(tmp_path):
    c = base_cfg()
    c["destination"]["bucket_prefix"] = "copy"
    msg = load_error(write(tmp_path, c))
    assert_names(msg, "destination.bucket_prefix", "add the trailing slash: 'copy/'")


def test_snow_destination_is_rejected(tmp_path):
    c = base_cfg()
    c["destination"]["region"] = "snow"
    c["transfer_settings"]["dest_endpoint_url"] = "http://192.0.2.20:8080"
    msg = load_error(write(tmp_path, c))
    assert_names(msg, "destination.region", "set the destination bucket's AWS region")


def test_snow_destination_without_endpoint_names_the_region_not_the_endpoint(tmp_path):
    c = base_cfg()
    c["destination"]["region"] = "snow"
    msg = load_error(write(tmp_path, c))
    assert_names(msg, "destination.region", "set the destination bucket's AWS region")


def test_snow_source_without_endpoint_is_rejected(tmp_path):
    c = base_cfg()
    c["transfer_settings"]["src_endpoint_url"] = "no_endpoint"
    msg = load_error(write(tmp_path, c))
    assert_names(msg, "transfer_settings.src_endpoint_url", "write its URL")


@pytest.mark.parametrize("value", [
    "lots", "1e3x", True, [1, 2], "",
    "nan",
    "inf",
])
def test_size_that_is_not_a_number_is_rejected(tmp_path, value):
    c = base_cfg()
    c["transfer_settings"]["max_size_to_transfer_src2l"] = value
    msg = load_error(write(tmp_path, c))
    assert_names(msg, "transfer_settings.max_size_to_transfer_src2l", "write a number of bytes")


@pytest.mark.parametrize("value", [-1, "-5", 1.5])
def test_negative_or_fractional_size_is_rejected(tmp_path, value):
    c = base_cfg()
    c["transfer_settings"]["volume_reserve_bytes"] = value
    msg = load_error(write(tmp_path, c))
    assert_names(msg, "transfer_settings.volume_reserve_bytes", "write a number of bytes")


@pytest.mark.parametrize("key", ["idle_verify_interval_seconds"])
@pytest.mark.parametrize("value", [-1, 2.5, "many", True])
def test_counts_must_be_a_whole_number_of_zero_or_more(tmp_path, value, key):
    c = base_cfg()
    c["transfer_settings"][key] = value
    msg = load_error(write(tmp_path, c))
    assert_names(msg, f"transfer_settings.{key}", "write a whole number, 0 or more")


@pytest.mark.parametrize("key", ["src_direct_get_max_bytes", "src_range_workers", "dest_direct_put_max_bytes"])
def test_tuning_keys_of_the_removed_in_process_paths_are_accepted_and_have_no_effect(tmp_path, key):
    c = base_cfg()
    c["transfer_settings"][key] = 0
    assert load(write(tmp_path, c)).settings == load(write(tmp_path, base_cfg(), name="plain.yaml")).settings


def test_size_written_with_underscores_or_exponent_is_accepted(tmp_path):
    c = base_cfg()
    c["transfer_settings"]["max_size_to_transfer_src2l"] = "1_000_000"
    c["transfer_settings"]["volume_reserve_bytes"] = "1e3"
    cfg = load(write(tmp_path, c))
    assert cfg.settings.max_src2l == 1_000_000
    assert cfg.settings.volume_reserve == 1000


def test_zero_batch_size_is_rejected(tmp_path):
    c = base_cfg()
    c["transfer_settings"]["max_size_to_transfer_src2l"] = 0
    msg = load_error(write(tmp_path, c))
    assert_names(msg, "transfer_settings.max_size_to_transfer_src2l", "write a number of bytes")


def test_tab_indentation_error_names_the_line(tmp_path):
    text = "source:\n  bucket_name: b\n\tbucket_prefix: ''\n"
    msg = load_error(write(tmp_path, text))
    assert "line 3" in msg, msg
    assert "not valid YAML" in msg and "fix the indentation" in msg, msg


def test_bad_indentation_error_names_the_line(tmp_path):
    text = "source:\n  bucket_name: b\n    region: x\n  bad: [\n"
    msg = load_error(write(tmp_path, text))
    assert "line 3" in msg, msg
    assert "fix the indentation" in msg


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "just a string\n", "- a\n- b\n"])
def test_empty_or_non_mapping_file_is_rejected(tmp_path, text):
    msg = load_error(write(tmp_path, text))
    assert "is empty or not a mapping" in msg and "start from the shipped config.yaml" in msg


def test_missing_file_is_named_with_a_fix(tmp_path):
    path = str(tmp_path / "nope" / "config.yaml")
    msg = load_error(path)
    assert "not found" in msg and "run the scripts from the folder that holds" in msg


@pytest.mark.parametrize("value", ["192.0.2.10:8080", "ftp://host", "http://", "", 8080, [], ["http://a", "x"]])
def test_endpoint_that_is_not_a_url_is_rejected(tmp_path, value):
    c = base_cfg()
    c["transfer_settings"]["src_endpoint_url"] = value
    msg = load_error(write(tmp_path, c))
    assert_names(msg, "transfer_settings.src_endpoint_url", "no_endpoint")


def test_no_endpoint_inside_a_list_is_rejected(tmp_path):
    c = base_cfg()
    c["transfer_settings"]["dest_endpoint_url"] = ["no_endpoint", "http://192.0.2.1"]
    msg = load_error(write(tmp_path, c))
    assert_names(msg, "transfer_settings.dest_endpoint_url", "list only URLs")


@pytest.mark.parametrize("side", ["source", "destination"])
@pytest.mark.parametrize("which", ["access_key", "secret_access_key"])
def test_only_one_of_access_key_and_secret_is_rejected(tmp_path, side, which):
    c = base_cfg()
    c[side][which] = SECRET
    msg = load_error(write(tmp_path, c))
    assert_names(msg, f"{side}.access_key", "set both, or leave both empty")
    assert SECRET not in msg


@pytest.mark.parametrize("key,section", [("src_use_native_s3", "transfer_settings"),
                                         ("delete_staging_data", "destination")])
def test_bool_given_as_maybe_is_rejected(tmp_path, key, section):
    c = base_cfg()
    c[section][key] = "maybe"
    msg = load_error(write(tmp_path, c))
    assert_names(msg, f"{section}.{key}", "write true or false")
    assert "'maybe'" in msg


@pytest.mark.parametrize("value,expected", [(True, True), ("yes", True), ("False", False), ("no", False)])
def test_bool_accepts_true_false_yes_no(tmp_path, value, expected):
    c = base_cfg()
    c["transfer_settings"]["src_use_native_s3"] = value
    assert load(write(tmp_path, c)).settings.src_use_native_s3 is expected


def test_overlapping_prefixes_in_one_bucket_are_rejected(tmp_path):
    c = base_cfg()
    c["source"]["region"] = "us-east-1"
    c["transfer_settings"]["src_endpoint_url"] = "no_endpoint"
    c["destination"]["bucket_name"] = "src-bucket"
    c["destination"]["bucket_prefix"] = "data/copy/"
    msg = load_error(write(tmp_path, c))
    assert_names(msg, "destination.bucket_prefix", "non-overlapping prefixes")


@pytest.mark.parametrize("src_ep, dst_ep", [
    ("http://127.0.0.1:9000", "http://localhost:9000"),  # one server, spelled two ways
    ("http://127.0.0.1:9000", ["http://192.0.2.1:9000", "http://LOCALHOST:9000/"]),  # one in common
    ("no_endpoint", "https://s3.us-east-1.amazonaws.com"),  # AWS either way
])
def test_one_bucket_on_one_server_however_spelled_with_overlapping_prefixes_is_rejected(tmp_path, src_ep, dst_ep):
    """Else the transfer copies its own output into itself without end (copy/copy/copy/...)."""
    c = base_cfg()
    c["source"].update(region="us-east-1", bucket_prefix="")
    c["transfer_settings"].update(src_endpoint_url=src_ep, dest_endpoint_url=dst_ep)
    c["destination"].update(bucket_name="src-bucket", bucket_prefix="copy/")
    msg = load_error(write(tmp_path, c))
    assert_names(msg, "destination.bucket_prefix", "non-overlapping prefixes")


def test_one_bucket_name_on_two_servers_is_a_transfer(tmp_path):
    """A Snowball's bucket imported into the S3 bucket of the same name: the usual case."""
    c = base_cfg()
    c["source"].update(bucket_prefix="")
    c["destination"].update(bucket_name="src-bucket", bucket_prefix="")
    assert load(write(tmp_path, c)).destination.bucket == "src-bucket"
    c["source"]["region"] = "us-east-1"
    c["transfer_settings"].update(src_endpoint_url="http://127.0.0.1:9000", dest_endpoint_url="http://127.0.0.1:9001")
    assert load(write(tmp_path, c)).destination.bucket == "src-bucket"


@pytest.mark.parametrize("name", ["s3://srcb", "srcb/data", "my bucket", "b", "x" * 300, "bad:name"])
def test_a_bucket_name_that_is_not_one_is_refused_with_the_fix(tmp_path, name):
    c = base_cfg()
    c["destination"]["bucket_name"] = name
    msg = load_error(write(tmp_path, c))
    assert_names(msg, "destination.bucket_name", "a folder goes in bucket_prefix")


@pytest.mark.parametrize("url", ["http://192.0.2.1:9000/bucket", "http://192.0.2.1:9000/?x=1", "http://192.0.2.1 :9000",
                                 "http://192.0.2.1:port", "http://:9000"])
def test_an_endpoint_with_a_path_space_or_bad_port_is_refused_with_the_fix(tmp_path, url):
    c = base_cfg()
    c["transfer_settings"]["src_endpoint_url"] = url
    msg = load_error(write(tmp_path, c))
    assert "transfer_settings.src_endpoint_url" in msg and "http://192.0.2.10:8080" in msg, msg


@pytest.mark.parametrize("key, value, most", [("src_workers", 1_000_000_000, 4096), ("dest_workers", 5000, 4096),
                                               ("part_size_mb", 1_000_000, 5120)])
def test_values_far_beyond_any_use_are_refused(tmp_path, key, value, most):
    c = base_cfg()
    c["transfer_settings"][key] = value
    msg = load_error(write(tmp_path, c))
    assert_names(msg, f"transfer_settings.{key}", f"write at most {most}")


def test_a_part_size_below_s3s_smallest_is_refused_not_raised_silently(tmp_path):
    c = base_cfg()
    c["transfer_settings"]["part_size_mb"] = 1
    msg = load_error(write(tmp_path, c))
    assert_names(msg, "transfer_settings.part_size_mb", "write 5 or more")


@pytest.mark.parametrize("vols", [["/data/v1", "/data/v1/"], ["/data/v1", "/data/v1/inner"], ["/data/a/../v1", "/data/v1"]])
def test_a_volume_listed_twice_or_inside_another_is_refused(tmp_path, vols):
    c = base_cfg()
    c["local"]["volumes"] = vols
    msg = load_error(write(tmp_path, c))
    assert_names(msg, "local.volumes", "list each staging volume once")


def test_bytes_that_are_not_utf8_are_named_by_line(tmp_path):
    p = tmp_path / "config.yaml"
    p.write_bytes(yaml.safe_dump(base_cfg(), sort_keys=False).encode().replace(b"src-bucket", b"src-caf\xe9"))
    p.chmod(0o600)
    msg = load_error(str(p))
    assert "not UTF-8" in msg and "line 2" in msg and "save the file as UTF-8" in msg, msg


@pytest.mark.parametrize("extra, key", [("\nsource:\n  bucket_name: other\n", "source"),
                                        ("", "bucket_name")])
def test_a_key_given_twice_is_refused_not_silently_replaced(tmp_path, extra, key):
    text = yaml.safe_dump(base_cfg(), sort_keys=False) + extra
    if not extra:  # the same key twice inside one section
        text = text.replace("  bucket_name: src-bucket\n", "  bucket_name: src-bucket\n  bucket_name: typo\n", 1)
    msg = load_error(write(tmp_path, text))
    assert f"{key!r} is given twice" in msg and "line" in msg, msg


# --- secrets never print -----------------------------------------------------------------------

def secret_cfg(tmp_path):
    c = base_cfg()
    c["source"].update(access_key=SECRET, secret_access_key=SECRET2)
    c["destination"].update(access_key=SECRET, secret_access_key=SECRET2)
    return load(write(tmp_path, c))


@pytest.mark.parametrize("render", [repr, str, lambda o: f"{o}", lambda o: f"{o!r}", lambda o: f"{o!s}",
                                    lambda o: "%s" % (o,), lambda o: "%r" % (o,), lambda o: "{}".format(o)])
def test_config_side_and_secret_never_render_the_secret(tmp_path, render):
    cfg = secret_cfg(tmp_path)
    for obj in (cfg, cfg.source, cfg.destination, cfg.source.access_key, cfg.source.secret_key):
        text = render(obj)
        assert SECRET not in text and SECRET2 not in text, text
    assert "****" in render(cfg.source.access_key)


def test_secret_reveal_returns_the_value(tmp_path):
    cfg = secret_cfg(tmp_path)
    assert cfg.source.access_key.reveal() == SECRET
    assert cfg.destination.secret_key.reveal() == SECRET2
    assert Secret(SECRET).reveal() == SECRET


def test_secret_survives_deepcopy_without_printing(tmp_path):
    cfg = secret_cfg(tmp_path)
    side = copy.deepcopy(cfg.source)
    assert side.access_key.reveal() == SECRET
    assert SECRET not in repr(side)


def test_handmade_side_does_not_render_its_secret():
    side = config.Side(name="source", bucket="b", prefix="", region="snow", access_key=Secret(SECRET),
                       secret_key=Secret(SECRET2), endpoints=("http://127.0.0.1:1",))
    for text in (repr(side), str(side), f"{side}", "%s" % (side,)):
        assert SECRET not in text and SECRET2 not in text


# --- file mode warning -------------------------------------------------------------------------

def test_world_readable_config_with_credentials_warns_chmod_600(tmp_path):
    c = base_cfg()
    c["source"].update(access_key=SECRET, secret_access_key=SECRET2)
    path = write(tmp_path, c, mode=0o644)
    cfg = load(path)
    assert len(cfg.warnings) == 1
    assert "chmod 600" in cfg.warnings[0]
    assert SECRET not in cfg.warnings[0]


def test_private_config_with_credentials_has_no_warning(tmp_path):
    c = base_cfg()
    c["source"].update(access_key=SECRET, secret_access_key=SECRET2)
    cfg = load(write(tmp_path, c, mode=0o600))
    assert cfg.warnings == ()


def test_world_readable_config_without_credentials_has_no_warning(tmp_path):
    cfg = load(write(tmp_path, base_cfg(), mode=0o644))
    assert cfg.warnings == ()


def test_the_shipped_config_yaml_is_valid_and_documented():
    """The config.yaml in the repository loads, and every key it names is in README.md."""
    import re
    from pathlib import Path

    from s5jtransfer import config as cfgmod

    root = Path(__file__).resolve().parents[2]
    cfg = cfgmod.load(str(root / "config.yaml"))
    assert cfg.source.is_snow and cfg.destination.region == "us-east-1"
    readme = (root / "README.md").read_text()
    for section, keys in cfgmod._SCHEMA.items():
        for key in keys:
            assert f"`{section}.{key}`" in readme or f"`{key}`" in readme, f"{section}.{key} is not documented"
    text = (root / "config.yaml").read_text()
    for key in re.findall(r"^\s*#?\s*([a-z_0-9]+):", text, re.M):
        assert any(key in keys or key == sec for sec, keys in cfgmod._SCHEMA.items()), key


# --- how the destination writes (encryption, storage class, ACL) and what its ETags are -------------

def test_destination_write_settings_are_read_as_s3_spells_them(tmp_path):
    cfg = base_cfg()
    cfg["destination"].update(storage_class="deep_archive", sse="AWS:KMS", acl="Bucket-Owner-Full-Control",
                              sse_kms_key_id="arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
                              etag_is_md5="no")
    cfg["source"]["etag_is_md5"] = False
    c = load(write(tmp_path, cfg))
    w = c.destination.writes
    assert (w.storage_class, w.sse, w.acl) == ("DEEP_ARCHIVE", "aws:kms", "bucket-owner-full-control")
    assert w.sse_kms_key_id.endswith("1234567890ab")
    assert not c.source.etag_is_md5 and not c.destination.etag_is_md5
    assert "storage class DEEP_ARCHIVE, encryption aws:kms (KMS key arn:" in w.describe()


def test_write_settings_default_to_the_buckets_own(tmp_path):
    c = load(write(tmp_path, base_cfg()))
    assert c.destination.writes == config.Writes() and c.source.etag_is_md5 and c.destination.etag_is_md5
    assert c.destination.writes.describe() == ("storage class the bucket default (STANDARD), encryption the "
                                               "bucket's default, ACL none (the bucket default)")


@pytest.mark.parametrize("key,value,listed", [
    ("storage_class", "GLACIER_FLEXIBLE", "STANDARD, INTELLIGENT_TIERING, STANDARD_IA, ONEZONE_IA, GLACIER_IR, "
                                          "GLACIER, DEEP_ARCHIVE"),
    ("sse", "kms", "AES256, aws:kms, aws:kms:dsse"),
    ("acl", "owner-full-control", "private, public-read"),
])
def test_a_write_setting_s3_does_not_take_lists_the_values_it_does(tmp_path, key, value, listed):
    cfg = base_cfg()
    cfg["destination"][key] = value
    msg = load_error(write(tmp_path, cfg))
    assert_names(msg, f"destination.{key}", listed)


def test_a_kms_key_needs_kms_encryption_and_a_keys_form(tmp_path):
    cfg = base_cfg()
    cfg["destination"]["sse_kms_key_id"] = "alias/archive"
    assert_names(load_error(write(tmp_path, cfg)), "destination.sse_kms_key_id", "add sse: aws:kms")
    cfg["destination"].update(sse="AES256")
    assert_names(load_error(write(tmp_path, cfg)), "destination.sse_kms_key_id", "add sse: aws:kms")
    cfg["destination"].update(sse="aws:kms:dsse", sse_kms_key_id="alias/my key; rm -rf ~")
    assert_names(load_error(write(tmp_path, cfg)), "destination.sse_kms_key_id", "alias/my-key")
    cfg["destination"].update(sse_kms_key_id="alias/archive")
    assert load(write(tmp_path, cfg)).destination.writes.sse_kms_key_id == "alias/archive"


@pytest.mark.parametrize("key", ["storage_class", "sse", "sse_kms_key_id", "acl"])
def test_write_settings_belong_to_the_destination_only(tmp_path, key):
    cfg = base_cfg()
    cfg["source"][key] = "AES256"
    assert_names(load_error(write(tmp_path, cfg)), f"source.{key}", "unknown key")
