"""Unit tests for s5cmd run-file lines, global arguments, and the child environment of s5cmd."""

from __future__ import annotations

import shlex

import pytest

from s5jtransfer import s3
from s5jtransfer.config import Secret, Side
from s5jtransfer.s5cmd import cp_line, global_args, run_file_safe

HOSTILE_KEYS = [
    "plain/key.txt",
    "with space/and more spaces.txt",
    "single'quote",
    'double"quote',
    "both'\"quotes",
    "back`tick`",
    "$(rm -rf ~)",
    "${HOME}/$USER",
    "semi;colon|pipe&amp<in>out",
    "glob*star?mark[set]{a,b}",
    "[abc]",
    "100%",
    "%2F%0A",
    "plus+sign",
    "#hash",
    "a #comment",
    "unicode/äöü/日本語",
    "emoji/😀🚀.bin",
    "tab\tinside",
    "-leading-dash",
    "--raw",
    " leading space",
    "trailing space ",
    "back\\slash\\",
    "!bang!",
    "~tilde",
    "=equals=",
    "'",
    '"',
]


def side(name="source", region="snow", endpoints=("http://127.0.0.1:1",), access="a", secret="b", prefix=""):
    return Side(name=name, bucket="b", prefix=prefix, region=region, access_key=Secret(access),
                secret_key=Secret(secret), endpoints=tuple(endpoints))


# --- cp_line -----------------------------------------------------------------------------------

@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_cp_line_download_round_trips_through_shlex(key):
    src = "s3://bucket/prefix/" + key
    dst = "/tmp/volume-01/s5jtransfer/partial/0123456789abcdef"
    line = cp_line(src, dst)
    assert "\n" not in line
    assert shlex.split(line) == ["cp", "--raw", src, dst]


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_cp_line_upload_round_trips_through_shlex(key):
    src = "/tmp/volume-01/s5jtransfer/staged/01/0123456789abcdef"
    dst = "s3://bucket/copy/" + key
    line = cp_line(src, dst)
    assert shlex.split(line) == ["cp", "--raw", src, dst]


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_cp_line_bare_key_arguments_round_trip(key):
    line = cp_line(key, key + "x")
    assert shlex.split(line) == ["cp", "--raw", key, key + "x"]


@pytest.mark.parametrize("key", ["$(rm -rf ~)", "`id`", "a;rm -rf /", "x|y", "a&b", "a>b"])
def test_cp_line_never_leaves_shell_metacharacters_unquoted(key):
    line = cp_line("s3://b/" + key, "/tmp/x")
    tokens = list(shlex.shlex(line, posix=True, punctuation_chars=True))
    # with punctuation_chars an unquoted ; | & > would become its own token
    assert tokens == ["cp", "--raw", "s3://b/" + key, "/tmp/x"]


def test_cp_line_places_flags_before_the_arguments():
    line = cp_line("/tmp/a b", "s3://b/k'ey", flags=("--storage-class", "STANDARD"))
    assert shlex.split(line) == ["cp", "--raw", "--storage-class", "STANDARD", "/tmp/a b", "s3://b/k'ey"]


# --- run_file_safe -----------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["line\nfeed", "\n", "carriage\rreturn", "crlf\r\n", "nul\x00byte", "folder/",
                                 "a/b/", "/", "", "bad-\udcff-surrogate"])
def test_run_file_safe_is_false_for_keys_a_run_file_cannot_carry(key):
    assert run_file_safe(key) is False


@pytest.mark.parametrize("key", HOSTILE_KEYS + ["/leading/slash", "a//b", "dots/../../x", "a/.", "x" * 1024])
def test_run_file_safe_is_true_for_other_keys(key):
    assert run_file_safe(key) is True


# --- global_args -------------------------------------------------------------------------------

def test_global_args_with_endpoint_and_snow():
    args = global_args(side(), workers=64, retries=10)
    assert args[:6] == ["--json", "--numworkers", "64", "--retry-count", "10", "--endpoint-url"]
    assert args == ["--json", "--numworkers", "64", "--retry-count", "10",
                    "--endpoint-url", "http://127.0.0.1:1", "--use-list-objects-v1"]  # http: no TLS flag


def test_global_args_without_endpoint_has_no_endpoint_or_tls_flags():
    args = global_args(side(region="us-east-1", endpoints=()), workers=8, retries=3)
    assert args == ["--json", "--numworkers", "8", "--retry-count", "3"]
    assert "--no-verify-ssl" not in args and "--use-list-objects-v1" not in args


def test_global_args_endpoint_without_snow_skips_list_v1():
    args = global_args(side(region="eu-west-1", endpoints=("https://s3.example.test",)), workers=1, retries=0)
    assert args[args.index("--endpoint-url") + 1] == "https://s3.example.test"
    assert "--no-verify-ssl" not in args  # a host name that is not a Snowball's: verified
    assert "--use-list-objects-v1" not in args


def test_global_args_use_the_first_of_several_endpoints():
    args = global_args(side(endpoints=("http://10.0.0.1:8080", "http://10.0.0.2:8080")), workers=1, retries=1)
    assert args[args.index("--endpoint-url") + 1] == "http://10.0.0.1:8080"
    assert args.count("--endpoint-url") == 1


# --- child_env ---------------------------------------------------------------------------------

BASE = {
    "PATH": "/usr/local/bin:/usr/bin",
    "HOME": "/home/op",
    "HTTPS_PROXY": "http://proxy:3128",
    "https_proxy": "http://proxy:3128",
    "HTTP_PROXY": "http://proxy:3128",
    "NO_PROXY": "169.254.169.254",
    "no_proxy": "localhost",
    "AWS_CA_BUNDLE": "/etc/ca.pem",
    "AWS_ACCESS_KEY_ID": "ENV-ACCESS",
    "AWS_SECRET_ACCESS_KEY": "ENV-SECRET",
    "AWS_SESSION_TOKEN": "ENV-TOKEN",
    "AWS_PROFILE": "operator",
    "AWS_REGION": "ap-south-1",
    "UNRELATED": "leak-me-not",
    "DATABASE_PASSWORD": "hunter2",
    "PYTHONPATH": "/nope",
    "LD_PRELOAD": "/evil.so",
}


def test_child_env_holds_the_sides_keys_region_path_and_proxies():
    src = side(access="SRC-ACCESS-KEY", secret="SRC-SECRET-KEY", region="snow")
    env = s3.child_env(src, base=dict(BASE))
    assert env["AWS_ACCESS_KEY_ID"] == "SRC-ACCESS-KEY"
    assert env["AWS_SECRET_ACCESS_KEY"] == "SRC-SECRET-KEY"
    assert env["AWS_REGION"] == "snow" and env["AWS_DEFAULT_REGION"] == "snow"
    assert env["PATH"] == BASE["PATH"] and env["HOME"] == BASE["HOME"]
    for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "NO_PROXY", "no_proxy", "AWS_CA_BUNDLE"):
        assert env[k] == BASE[k]


def test_child_env_leaves_out_unrelated_variables_and_chain_credentials():
    src = side(access="SRC-ACCESS-KEY", secret="SRC-SECRET-KEY")
    env = s3.child_env(src, base=dict(BASE))
    for k in ("UNRELATED", "DATABASE_PASSWORD", "PYTHONPATH", "LD_PRELOAD", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        assert k not in env, k
    assert "ENV-SECRET" not in env.values() and "ENV-ACCESS" not in env.values()


def test_child_env_of_one_side_never_holds_the_other_sides_credentials():
    src = side(name="source", access="SRC-ACCESS-KEY", secret="SRC-SECRET-KEY")
    dst = side(name="destination", region="us-east-1", endpoints=(), access="DST-ACCESS-KEY",
               secret="DST-SECRET-KEY")
    base = dict(BASE)
    src_env = s3.child_env(src, base=base)
    dst_env = s3.child_env(dst, base=base)
    assert not {"DST-ACCESS-KEY", "DST-SECRET-KEY"} & set(src_env.values())
    assert not {"SRC-ACCESS-KEY", "SRC-SECRET-KEY"} & set(dst_env.values())
    assert dst_env["AWS_ACCESS_KEY_ID"] == "DST-ACCESS-KEY"
    assert dst_env["AWS_REGION"] == "us-east-1"
    assert base == BASE  # the caller's environment is not modified


def test_child_env_without_credentials_passes_the_aws_chain_through():
    dst = side(name="destination", region="us-east-1", endpoints=(), access="", secret="")
    env = s3.child_env(dst, base=dict(BASE))
    assert env["AWS_PROFILE"] == "operator"
    assert env["AWS_ACCESS_KEY_ID"] == "ENV-ACCESS"
    assert env["AWS_SECRET_ACCESS_KEY"] == "ENV-SECRET"
    assert env["AWS_SESSION_TOKEN"] == "ENV-TOKEN"
    assert env["AWS_REGION"] == "us-east-1"  # the side's region wins over the inherited one
    assert "UNRELATED" not in env


def test_child_env_with_minimal_base_has_only_region_and_credentials():
    env = s3.child_env(side(access="K", secret="S", region="snow"), base={})
    assert env == {"AWS_ACCESS_KEY_ID": "K", "AWS_SECRET_ACCESS_KEY": "S", "AWS_REGION": "snow",
                   "AWS_DEFAULT_REGION": "snow"}


def test_child_env_defaults_to_os_environ(monkeypatch):
    monkeypatch.setenv("PATH", "/only/this")
    monkeypatch.setenv("S5J_UNRELATED_TEST_VAR", "x")
    env = s3.child_env(side(access="K", secret="S"))
    assert env["PATH"] == "/only/this"
    assert "S5J_UNRELATED_TEST_VAR" not in env


def test_transfer_acceleration_lists_regionally_but_uploads_accelerated():
    from s5jtransfer import config as cfgmod
    from s5jtransfer import s3 as s3mod
    from s5jtransfer import s5cmd as s5mod

    side = cfgmod.Side(name="destination", bucket="b", prefix="", region="us-east-1",
                       access_key=cfgmod.Secret("a"), secret_key=cfgmod.Secret("b"),
                       endpoints=("https://s3-accelerate.amazonaws.com",))
    assert s3mod.api_endpoint(side) is None  # boto3 lists and confirms through the regional endpoint
    args = s5mod.global_args(side, 8, 3)
    assert args[args.index("--endpoint-url") + 1] == "https://s3-accelerate.amazonaws.com"
    plain = cfgmod.Side(name="source", bucket="b", prefix="", region="snow", access_key=cfgmod.Secret(""),
                        secret_key=cfgmod.Secret(""), endpoints=("http://192.0.2.1:8080",))
    assert s3mod.api_endpoint(plain) == "http://192.0.2.1:8080"


def test_the_destinations_write_settings_reach_s5cmd_and_boto3_alike():
    from s5jtransfer import config as cfgmod
    from s5jtransfer import s3 as s3mod
    from s5jtransfer import s5cmd as s5mod

    key = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    side = cfgmod.Side(name="destination", bucket="b", prefix="p/", region="us-east-1", access_key=cfgmod.Secret(""),
                       secret_key=cfgmod.Secret(""), endpoints=(),
                       writes=cfgmod.Writes("DEEP_ARCHIVE", "aws:kms", key, "bucket-owner-full-control"))
    flags = s5mod.upload_flags(side)
    assert flags == ("--storage-class", "DEEP_ARCHIVE", "--sse", "aws:kms", "--sse-kms-key-id", key,
                     "--acl", "bucket-owner-full-control")
    assert s3mod.upload_args(side) == {"StorageClass": "DEEP_ARCHIVE", "ServerSideEncryption": "aws:kms",
                                       "SSEKMSKeyId": key, "ACL": "bucket-owner-full-control"}
    line = s5mod.cp_line("/v/staged/ab/cd", "s3://b/p/k", ["-p", "50", *flags])
    assert shlex.split(line) == ["cp", "--raw", "-p", "50", *flags, "/v/staged/ab/cd", "s3://b/p/k"]
    plain = cfgmod.Side(name="destination", bucket="b", prefix="", region="us-east-1", access_key=cfgmod.Secret(""),
                        secret_key=cfgmod.Secret(""), endpoints=())
    assert s5mod.upload_flags(plain) == () and s3mod.upload_args(plain) == {}
    # a flag value is quoted like any argument: s5cmd reads back exactly what was meant
    odd = s5mod.cp_line("a", "b", ["--acl", "x y'z"])
    assert shlex.split(odd)[2:4] == ["--acl", "x y'z"]


def test_clients_sign_with_botocores_own_sigv4_also_with_awscrt_installed():
    """awscrt is installed for CRC64NVME; botocore would then sign with its CRT signers, which cost
    more CPU per uploaded MB. The clients of a side sign with botocore's S3SigV4Auth."""
    from botocore import auth

    client = s3.client(side(), None)
    signer = client._request_signer  # noqa: SLF001
    assert auth.AUTH_TYPE_MAPS["s3v4"] is auth.S3SigV4Auth
    assert signer.get_auth_instance(signer._signing_name, "us-east-1", "s3v4").__class__ is auth.S3SigV4Auth  # noqa: SLF001


def test_a_long_lived_streams_run_file_starts_again_when_it_grows_too_large_and_never_stops_the_copies(
        tmp_path, monkeypatch):
    """A stream fed for days keeps its run file under RECORD_MAX (it holds the latest lines); a
    run file that cannot be written (a full working folder) costs the record, not the copies."""
    import sys

    from s5jtransfer import s5cmd

    monkeypatch.setattr(s5cmd, "RECORD_MAX", 200)
    record = tmp_path / "src_commands.txt"
    reported = []
    reader = "import sys\nfor line in sys.stdin: pass\n"  # stands in for `s5cmd run`: takes every line
    stream = s5cmd.Stream(sys.executable, ["-c", reader], {}, str(record), lambda *a: reported.append(a))
    for i in range(50):
        assert stream.add(f"cp s3://b/key-{i:03d} /v/p/{i}", f"/v/p/{i}", 1)
        assert record.stat().st_size <= 200 + 40
    assert record.read_text().splitlines()[-1] == "cp s3://b/key-049 /v/p/49"
    stream._record.close()  # the next write fails, as on a full disk
    assert stream.add("cp s3://b/key-050 /v/p/50", "/v/p/50", 1)
    assert stream._record is None and stream.add("cp s3://b/key-051 /v/p/51", "/v/p/51", 1)
    stream.close(timeout=30)
    assert len(reported) == 52  # every line fed reaches an end (here: never reported by the stand-in)


def test_a_long_lived_s5cmd_collects_garbage_less_often_unless_the_environment_says(tmp_path):
    from s5jtransfer import s5cmd

    sleeper = tmp_path / "fake-s5cmd"
    sleeper.write_text("#!/bin/sh\nexec cat >/dev/null\n")  # alive until its input ends
    sleeper.chmod(0o755)
    for env, want in (({}, s5cmd.STREAM_GOGC), ({"GOGC": "150"}, "150")):
        stream = s5cmd.Stream(str(sleeper), [], env, str(tmp_path / "run.txt"), lambda *a: None)
        try:
            with open(f"/proc/{stream.proc.pid}/environ", "rb") as fh:
                got = dict(v.split(b"=", 1) for v in fh.read().split(b"\0") if v)
            assert got[b"GOGC"].decode() == want
        finally:
            stream.close(timeout=5)


def test_a_streams_bytes_in_flight_follow_what_is_fed_and_reported(tmp_path):
    from s5jtransfer import s5cmd

    sleeper = tmp_path / "fake-s5cmd"
    sleeper.write_text("#!/bin/sh\nexec cat >/dev/null\n")
    sleeper.chmod(0o755)
    reported = []
    stream = s5cmd.Stream(str(sleeper), [], {}, str(tmp_path / "run.txt"), lambda *a: reported.append(a))
    try:
        stream.add("cp a /x/a", "/x/a", 10)
        stream.add("cp b /x/b", "/x/b", 32)
        assert stream.bytes_in_flight == 42
        stream._on_result(s5cmd.Result(True, "/x/a", ""))
        stream._on_result(s5cmd.Result(True, "/x/a", ""))  # a second message about it
        assert stream.bytes_in_flight == 32 and len(stream) == 1
    finally:
        stream.close(timeout=5)
    assert stream.bytes_in_flight == 0  # what s5cmd never reported on: failed
    assert [(p, ok) for p, ok, _e in reported] == [("/x/a", True), ("/x/b", False)]


def test_lines_held_reach_s5cmd_and_the_run_file_at_the_flush_and_fail_together_when_it_is_gone(tmp_path):
    from s5jtransfer import s5cmd

    got = tmp_path / "stdin.txt"
    fake = tmp_path / "fake-s5cmd"
    fake.write_text(f"#!/bin/sh\nexec cat > {got}\n")
    fake.chmod(0o755)
    record = tmp_path / "run.txt"
    stream = s5cmd.Stream(str(fake), [], {}, str(record), lambda *a: None)
    stream.add("cp s3://b/a /x/a", "/x/a", 1, hold=True)
    stream.add("cp s3://b/b /x/b", "/x/b", 1, hold=True)
    assert record.read_text() == ""  # held: not yet written
    assert stream.flush()
    assert record.read_text() == "cp s3://b/a /x/a\ncp s3://b/b /x/b\n"
    stream.close(timeout=5)
    assert got.read_text() == "cp s3://b/a /x/a\ncp s3://b/b /x/b\n"

    reported = []
    gone = s5cmd.Stream("/bin/true", [], {}, str(tmp_path / "run2.txt"), lambda *a: reported.append(a))
    gone.proc.wait(timeout=10)
    gone.add("cp s3://b/c /x/c", "/x/c", 1, hold=True)
    gone.add("cp s3://b/d /x/d", "/x/d", 1, hold=True)
    for _ in range(3):  # a pipe to a process that exited breaks at the first write or the next
        if not gone.flush() or not gone.in_flight:
            break
        gone.add("cp s3://b/e /x/e", "/x/e", 1, hold=True)
    gone.close(timeout=5)
    assert {p for p, ok, _e in reported if not ok} >= {"/x/c", "/x/d"} and not any(ok for _p, ok, _e in reported)
    assert gone.bytes_in_flight == 0
