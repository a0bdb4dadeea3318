"""Credentials per side: a profile's session and s5cmd environment (s3.py), what a connect test
says of them (storeinfo.credentials_line), and the restart of an s5cmd whose credentials expired
(s5cmd.expired, Stream, upload.Uploads)."""

from __future__ import annotations

import datetime
import json
import logging
import sys
import time
from types import SimpleNamespace

import pytest

from s5jtransfer import s3, s5cmd, storeinfo
from s5jtransfer.config import Secret, Side
from s5jtransfer.errors import ConfigError


def side(name="source", access="", secret="", profile=None, region="us-east-1"):
    return Side(name=name, bucket="b", prefix="", region=region, access_key=Secret(access),
                secret_key=Secret(secret), endpoints=("http://127.0.0.1:1",), profile=profile)


# --- s5cmd.expired -----------------------------------------------------------------------------

@pytest.mark.parametrize("error", [
    "ExpiredToken: The provided token has expired. status code: 400, request id: , host id:",  # s5cmd 2.3.0, seen
    "ExpiredTokenException: The security token included in the request is expired",
    "RequestExpired: Request has expired. status code: 400",
    "TokenRefreshRequired: The provided token must be refreshed. status code: 400",
    "MultipartUpload: upload multipart failed\n\tupload id: abc\ncaused by: ExpiredToken: The provided token has "
    "expired.",
    "cp s3://b/k /tmp/x: ExpiredToken: The provided token has expired.",
])
def test_expired_credentials_are_told_by_the_error_code(error):
    assert s5cmd.expired(error)


@pytest.mark.parametrize("error", [
    "",
    "SignatureDoesNotMatch: The request signature we calculated does not match the signature you provided.",
    "InvalidAccessKeyId: The AWS Access Key Id you provided does not exist in our records.",
    "AccessDenied: Access Denied status code: 403",
    "RequestTimeout: Your socket connection to the server was not read from or written to",
    "NoSuchKey: The specified key does not exist. s3://b/ExpiredToken: x",  # a key that names the code
    "cp s3://b/dir/ExpiredToken:x /tmp/y: NoSuchKey: gone",
    "ExpiredTokens: not a code S3 sends",
    "expiredtoken: lower case is no S3 code",
])
def test_other_errors_and_keys_that_name_the_code_are_not_expired_credentials(error):
    assert not s5cmd.expired(error)


@pytest.mark.parametrize("error,quiet", [
    ("ExpiredToken: The provided token has expired. status code: 400", True),  # the object's own answer
    ("copy failed: ExpiredToken: The provided token has expired.", True),  # as a try's why quotes it
    (s5cmd.ENDED_EXPIRED, True),  # held by the s5cmd that was ended for it
    ("upload failed: " + s5cmd.ENDED_EXPIRED, True),
    ("copy failed: the endpoint did not answer for 120 s (s5cmd ended)", True),  # a frozen endpoint's
    ("s5cmd exited 1 without a result for it", False),
    ("copy failed: SlowDown: Please reduce your request rate.", False),
    ("copy failed: NoSuchKey: s3://b/ExpiredToken: x", False),
    ("copy failed: cp s3://b/(s5cmd ended) /stage/x: NoSuchKey: gone", False),  # a key that names the mark
])
def test_failures_with_an_s5cmd_ended_or_its_credentials_expired_are_told_apart(error, quiet):
    assert s5cmd.failed_with_its_s5cmd(error) is quiet


def test_a_quiet_try_counts_as_a_try_logs_at_debug_and_its_giving_up_is_still_an_error(caplog):
    from s5jtransfer import tries

    t = tries.Tries({}, quiet_when=s5cmd.failed_with_its_s5cmd)
    with caplog.at_level(logging.DEBUG, logger="s5jtransfer.tries"):
        assert not t.failed("k", "copy failed: SlowDown: slow")  # not quiet
        for _ in range(tries.MAX_TRIES - 2):
            assert not t.failed("k", "copy failed: ExpiredToken: expired")
        assert t.failed("k", "copy failed: " + s5cmd.ENDED_EXPIRED)  # the 5th try: given up, bounded as any
    levels = [(r.levelname, "ExpiredToken" in r.getMessage() or "ended" in r.getMessage()) for r in caplog.records]
    assert levels == [("WARNING", False)] + [("DEBUG", True)] * (tries.MAX_TRIES - 2) + [("ERROR", True)]
    assert "k" in t.given_up


def test_the_objects_an_expired_s5cmd_held_are_reported_failed_for_the_expiry(fake_s5cmd, tmp_path):
    got = []
    stream = s5cmd.Stream(fake_s5cmd, [], {"PATH": "/usr/bin"}, "run.txt", lambda *r: got.append(r))
    stream.add(s5cmd.cp_line("/stage/held", "s3://b/held"), "/stage/held", 1)  # taken, never answered
    stream.add(s5cmd.cp_line("/stage/a", "s3://b/a"), "/stage/a", 1)
    _wait(lambda: got, "the ExpiredToken answer")
    assert stream.expired and len(stream) == 1
    stream.close(timeout=10)
    assert got[1] == ("/stage/held", False, s5cmd.ENDED_EXPIRED)


# --- child_env with a profile -------------------------------------------------------------------

BASE = {
    "PATH": "/usr/bin", "HOME": "/home/op",
    "AWS_ACCESS_KEY_ID": "ENV-ACCESS", "AWS_SECRET_ACCESS_KEY": "ENV-SECRET", "AWS_SESSION_TOKEN": "ENV-TOKEN",
    "AWS_PROFILE": "operator", "AWS_ROLE_ARN": "arn:aws:iam::1:role/r", "AWS_WEB_IDENTITY_TOKEN_FILE": "/t",
    "AWS_CONFIG_FILE": "/etc/aws/config", "AWS_SHARED_CREDENTIALS_FILE": "/etc/aws/credentials",
    "AWS_EC2_METADATA_DISABLED": "true", "UNRELATED": "leak-me-not",
}


def test_child_env_of_a_profile_names_it_for_the_sdks_whole_chain():
    env = s3.child_env(side(profile="snow", region="snow"), base=dict(BASE))
    assert env["AWS_PROFILE"] == "snow" and env["AWS_SDK_LOAD_CONFIG"] == "1"
    assert env["AWS_CONFIG_FILE"] == "/etc/aws/config"
    assert env["AWS_SHARED_CREDENTIALS_FILE"] == "/etc/aws/credentials"
    assert env["AWS_REGION"] == "snow" and env["PATH"] == "/usr/bin" and env["HOME"] == "/home/op"
    # the environment's own keys, role and web identity would win over the profile in aws-sdk-go
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ROLE_ARN",
              "AWS_WEB_IDENTITY_TOKEN_FILE", "UNRELATED"):
        assert k not in env, k


def test_child_env_of_a_profile_without_the_files_set_leaves_the_sdk_its_defaults():
    env = s3.child_env(side(profile="snow"), base={"PATH": "/usr/bin", "HOME": "/home/op"})
    assert env == {"PATH": "/usr/bin", "HOME": "/home/op", "AWS_PROFILE": "snow", "AWS_SDK_LOAD_CONFIG": "1",
                   "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1"}


def test_each_side_gets_its_own_profile_and_the_chain_stays_as_it_was():
    src = s3.child_env(side("source", profile="snow"), base=dict(BASE))
    dst = s3.child_env(side("destination", profile="archive"), base=dict(BASE))
    assert (src["AWS_PROFILE"], dst["AWS_PROFILE"]) == ("snow", "archive")
    chain = s3.child_env(side("destination"), base=dict(BASE))  # neither keys nor profile: as before
    assert chain["AWS_PROFILE"] == "operator" and chain["AWS_ACCESS_KEY_ID"] == "ENV-ACCESS"
    assert "AWS_SDK_LOAD_CONFIG" not in chain


# --- the profile's session -------------------------------------------------------------------

def _aws_files(tmp_path, monkeypatch, config: str) -> tuple:
    cfg, creds = tmp_path / "aws-config", tmp_path / "aws-credentials"
    cfg.write_text(config)
    creds.write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(cfg))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    return cfg, creds


def test_a_profile_in_neither_file_is_a_config_error_naming_key_profile_and_files(tmp_path, monkeypatch):
    cfg, creds = _aws_files(tmp_path, monkeypatch, "[profile other]\nregion = us-east-1\n")
    with pytest.raises(ConfigError) as got:
        s3.client(side("destination", profile="nope"))
    msg = str(got.value)
    assert "\n" not in msg and got.value.exit_code == 2
    assert "destination.profile" in msg and "'nope'" in msg and str(cfg) in msg and str(creds) in msg


def test_a_profile_s_credential_process_gives_the_session_its_keys(tmp_path, monkeypatch):
    until = datetime.datetime(2031, 5, 6, 7, 8, 9, tzinfo=datetime.timezone.utc)
    out = {"Version": 1, "AccessKeyId": "AKIAPROFILEKEY0WXYZ", "SecretAccessKey": "s3cr3t-never-printed",
           "Expiration": until.strftime("%Y-%m-%dT%H:%M:%SZ")}
    script = tmp_path / "creds.py"
    script.write_text(f"print({json.dumps(json.dumps(out))})\n")
    _aws_files(tmp_path, monkeypatch, f"[profile vault]\ncredential_process = {sys.executable} {script}\n")
    s = side(profile="vault")
    creds = s3.credentials(s)
    assert creds.method == "custom-process" and creds.access_key == "AKIAPROFILEKEY0WXYZ"
    line = storeinfo.credentials(s)
    assert line == "credentials: profile 'vault' (custom-process), key id ****WXYZ, expires 2031-05-06 07:08:09 UTC"
    assert "s3cr3t" not in line and "AKIAPROFILEKEY0WXYZ" not in line


# --- what the connect test says -----------------------------------------------------------------

def test_credentials_line_says_where_and_never_the_whole_key_id():
    key = "AKIAIOSFODNN7EXAMPLE"
    assert storeinfo.credentials_line(side(access=key, secret="x"), "explicit", None, key) == \
        "credentials: static keys from config.yaml, key id ****MPLE"
    assert storeinfo.credentials_line(side(profile="snow"), "shared-credentials-file", None, "short") == \
        "credentials: profile 'snow' (shared-credentials-file)"
    later = datetime.datetime(2026, 12, 7, 6, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=1)))
    assert storeinfo.credentials_line(side(), "iam-role", later, key) == \
        "credentials: AWS credential chain (iam-role), key id ****MPLE, expires 2026-12-07 05:00:00 UTC"
    none = storeinfo.credentials_line(side("destination"), None, None, "")
    assert none.startswith("credentials: none found") and "destination.profile" in none


def test_errors_name_the_profile_as_the_fix():
    import botocore.exceptions

    rejected = botocore.exceptions.ClientError({"Error": {"Code": "InvalidAccessKeyId"}}, "ListObjectsV2")
    msg = s3.describe_error(rejected, side(profile="snow"))
    assert "credentials rejected" in msg and "profile 'snow' (source.profile)" in msg
    assert "access_key" not in msg
    failed = botocore.exceptions.CredentialRetrievalError(provider="custom-process", error_msg="exit 1")
    msg = s3.describe_error(failed, side("destination", profile="vault"))
    assert "could not be obtained" in msg and "profile 'vault' (destination.profile)" in msg
    msg = s3.describe_error(botocore.exceptions.NoCredentialsError(), side(profile="empty"))
    assert "profile 'empty' (source.profile) gives no credentials" in msg


# --- an s5cmd whose credentials expired is restarted -----------------------------------------

# A stand-in for s5cmd run: answers every cp line of its standard input in --json; its first
# start fails each with ExpiredToken (as s5cmd 2.3.0 writes it), any later start copies.
FAKE = '''#!{python}
import json, os, shlex, sys
count = {count!r}
n = int(open(count).read()) if os.path.exists(count) else 0
open(count, "w").write(str(n + 1))
for line in sys.stdin:
    words = shlex.split(line)
    src, dst = words[-2], words[-1]
    cmd = "cp " + src + " " + dst
    if "held" in src:  # taken, never answered
        continue
    if n == 0:
        print(json.dumps({{"operation": "cp", "command": cmd, "error": "ExpiredToken: The provided token has "
                          "expired. status code: 400, request id: , host id:"}}), file=sys.stderr, flush=True)
    else:
        print(json.dumps({{"operation": "cp", "success": True, "source": src, "destination": dst}}), flush=True)
'''


@pytest.fixture
def fake_s5cmd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the run files
    path = tmp_path / "s5cmd"
    path.write_text(FAKE.format(python=sys.executable, count=str(tmp_path / "starts")))
    path.chmod(0o755)
    return str(path)


def _wait(predicate, what: str) -> None:
    deadline = time.monotonic() + 20
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_a_stream_told_its_credentials_expired_is_no_longer_usable_and_closes_at_once(fake_s5cmd, tmp_path):
    got = []
    stream = s5cmd.Stream(fake_s5cmd, [], {"PATH": "/usr/bin"}, "run.txt", lambda *r: got.append(r))
    assert stream.usable()
    stream.add(s5cmd.cp_line("/stage/a", "s3://b/a"), "/stage/a", 1)
    _wait(lambda: got, "the result")
    assert got[0][:2] == ("/stage/a", False) and "ExpiredToken" in got[0][2]
    assert stream.expired and not stream.usable()
    stream.close(timeout=10)


def test_uploads_restart_the_s5cmd_whose_credentials_expired_once_and_say_so(fake_s5cmd, tmp_path, caplog):
    from s5jtransfer import upload

    settings = SimpleNamespace(dest_workers=2, retries=1, part_size=8 << 20, request_timeout=120.0)
    eps = SimpleNamespace(urls=["http://127.0.0.1:1"], live=lambda: [0])
    stopper = SimpleNamespace(track=lambda proc: None)
    ups = upload.Uploads(side("destination", profile="archive"), settings, eps, fake_s5cmd, stopper, None)

    def cand(n: int) -> upload.Candidate:
        return upload.Candidate(key=f"k{n}", pending=upload.Pending((1, "", "", ""), f"h{n}"),
                                path=str(tmp_path / f"staged-{n}"), ident=None)

    def results(want: int) -> list:
        out: list = []
        _wait(lambda: out.extend(ups.take_results()) or len(out) >= want, "the uploads' results")
        return out

    with caplog.at_level(logging.WARNING):
        ups.feed([cand(1), cand(2)])
        first = results(2)
        assert [r.ok for r in first] == [False, False] and all("ExpiredToken" in r.error for r in first)
        old = ups._streams[0].proc
        ups.feed([cand(1)])  # the object's next try: a new s5cmd, which reads its credentials again
        assert ups._streams[0].proc is not old and old.poll() is not None
        assert [r.ok for r in results(1)] == [True]
        ups.feed([cand(3)])  # the new one is kept
        assert [r.ok for r in results(1)] == [True]
    said = [r.getMessage() for r in caplog.records if "credentials expired" in r.getMessage()]
    assert said == ["destination credentials expired; s5cmd restarted to read them again (the 2 objects that "
                    "failed in it are tried again)"]
    ups.close()


def test_the_fetcher_restarts_the_s5cmd_whose_credentials_expired_once_and_says_so(fake_s5cmd, tmp_path, caplog):
    from s5jtransfer import fetch

    settings = SimpleNamespace(src_workers=2, retries=1, part_size=8 << 20, request_timeout=120.0)
    eps = SimpleNamespace(urls=["http://127.0.0.1:1"])
    stopper = SimpleNamespace(stopped=False, track=lambda proc: None, untrack=lambda proc: None)
    got: list = []
    fetcher = fetch.Fetcher(side("source", profile="snow"), settings, eps, fake_s5cmd, stopper,
                            lambda *r: got.append(r))

    def job(n: int) -> fetch.Job:
        return fetch.Job(f"k{n}", 10, str(tmp_path / f"partial-{n}"))

    def results(want: int) -> list:
        _wait(lambda: len(got) >= want, "the fetches' results")
        out = got[:want]
        del got[:want]
        return out

    with caplog.at_level(logging.WARNING):
        fetcher.submit([job(1), job(2)], [0])
        assert [ok for _, ok, _ in results(2)] == [False, False]
        old = fetcher._streams[(fetch.plan.SMALL, 0)].proc
        fetcher.close_idle()  # ended at once, not after STREAM_IDLE: it would fail whatever it gets
        assert (fetch.plan.SMALL, 0) not in fetcher._streams and old.poll() is not None
        fetcher.submit([job(1)], [0])  # a new s5cmd, which reads its credentials again
        assert results(1) == [(str(tmp_path / "partial-1"), True, "")]
    said = [r.getMessage() for r in caplog.records if "credentials expired" in r.getMessage()]
    assert said == ["source credentials expired; s5cmd restarted to read them again (the 2 objects that failed in "
                    "it are tried again)"]
    fetcher.close()
