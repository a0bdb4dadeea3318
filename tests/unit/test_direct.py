"""direct.py signs requests exactly as botocore does (SigV4, S3 rules), for any key."""

from __future__ import annotations

import base64
import datetime
import hashlib

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from s5jtransfer import direct

KEYS = ["a/b.txt", "sp ace/ü+&=?#%25/..//x~y!*'()", "trailing/", "日本/語.bin", "new\nline", "semi;colon,comma"]


def botocore_auth(method: str, url: str, token: str | None, headers: dict[str, str], body: bytes) -> AWSRequest:
    req = AWSRequest(method=method, url=url, headers=headers, data=body)
    S3SigV4Auth(Credentials("AKIDEXAMPLE", "SECRET/KEY+x", token), "s3", "eu-west-1").add_auth(req)
    return req


def stamp_of(req: AWSRequest) -> datetime.datetime:
    return datetime.datetime.strptime(req.headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)


@pytest.mark.parametrize("token", [None, "SESSION/token+="])
@pytest.mark.parametrize("key", KEYS)
def test_get_signature_matches_botocore(key, token):
    t = direct.Target("http://127.0.0.1:9000/bkt/", "AKIDEXAMPLE", "SECRET/KEY+x", token, "eu-west-1", verify=False)
    path = t.path(key)
    ref = botocore_auth("GET", "http://127.0.0.1:9000" + path, token, {}, b"")
    mine = dict(t.headers("GET", path, now=stamp_of(ref), payload=direct.EMPTY_SHA256))
    assert mine["host"] == "127.0.0.1:9000"
    assert mine["Authorization"] == ref.headers["Authorization"]


@pytest.mark.parametrize("key", KEYS[:3])
def test_put_signature_with_content_md5_matches_botocore(key):
    body = b"some bytes\x00\xff" * 100
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    t = direct.Target("http://s3.example.test/bkt/", "AKIDEXAMPLE", "SECRET/KEY+x", None, "eu-west-1", verify=True)
    path = t.path(key)
    ref = botocore_auth("PUT", "http://s3.example.test" + path, None, {"Content-MD5": md5}, body)
    mine = dict(t.headers("PUT", path, now=stamp_of(ref), payload=hashlib.sha256(body).hexdigest(),
                          extra={"content-md5": md5}))
    assert mine["Authorization"] == ref.headers["Authorization"]
    assert "content-md5" in mine["Authorization"]


def test_keys_are_quoted_as_botocore_quotes_them():
    t = direct.Target("https://bkt.s3.eu-west-1.amazonaws.com/", "A", "S", None, "eu-west-1", verify=True)
    assert t.path("a b/c+d%e~f/") == "/a%20b/c%2Bd%25e~f/"
    assert t.path("../x") == "/../x"  # sent as is: S3 does not normalize, and neither does the signature
    assert (t.host, t.port, t.scheme) == ("bkt.s3.eu-west-1.amazonaws.com", 443, "https")


def test_signing_key_is_derived_once_per_day():
    t = direct.Target("http://h/b/", "A", "S", None, "us-east-1", verify=False)
    d1 = datetime.datetime(2026, 11, 25, 23, 59, 59, tzinfo=datetime.timezone.utc)
    t.headers("GET", "/b/k", now=d1)
    first = t._key_day
    t.headers("GET", "/b/k", now=d1 + datetime.timedelta(seconds=0.5))
    assert t._key_day is first  # same day, same secret: not derived again
    t.headers("GET", "/b/k", now=d1 + datetime.timedelta(seconds=2))  # the next day
    assert t._key_day[0] == "20261126"


def test_refreshed_credentials_are_picked_up():
    """A long-lived uploader follows credentials botocore refreshes (instance or assumed roles)."""
    class Creds:
        def __init__(self):
            self.n = 0

        def get_frozen_credentials(self):
            self.n += 1
            return Credentials(f"AKID{self.n}", f"SECRET{self.n}", f"TOKEN{self.n}").get_frozen_credentials()

    t = direct.Target("http://h/b/", "AKID0", "SECRET0", None, "us-east-1", verify=False)
    t._source, t._read_at = Creds(), 0.0  # read long ago: due now
    hdrs = dict(t.headers("GET", "/b/k"))
    assert "Credential=AKID1/" in hdrs["Authorization"] and hdrs["x-amz-security-token"] == "TOKEN1"
    assert t._key_day[1] == "SECRET1"  # the signing key follows the new secret
    hdrs = dict(t.headers("GET", "/b/k"))
    assert "Credential=AKID1/" in hdrs["Authorization"] and t._source.n == 1  # not re-read within the TTL


@pytest.mark.parametrize("name", ["HTTPS_PROXY", "http_proxy", "ALL_PROXY"])
def test_not_used_behind_a_proxy(monkeypatch, name):
    for n in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(n, raising=False)
    assert direct.usable("http://127.0.0.1:9000")
    assert direct.usable(None)
    monkeypatch.setenv(name, "http://proxy:3128")
    assert not direct.usable("http://127.0.0.1:9000")


def test_not_used_for_transfer_acceleration_or_odd_schemes(monkeypatch):
    for n in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(n, raising=False)
    assert not direct.usable("https://bkt.s3-accelerate.amazonaws.com")
    assert not direct.usable("ftp://example.test")


def test_the_written_prefix_grows_only_over_contiguous_ranges():
    o = direct._Ranged("k", "/p", 10, "e", 4)
    assert not o.written(3, 3) and o.ready == 0  # a later range first: no prefix yet
    assert o.written(0, 3) and o.ready == 6  # [0, 3) joins [3, 6)
    assert not o.written(9, 1) and o.ready == 6
    assert o.written(6, 3) and o.ready == 10
    assert o.landed == {}


def test_streamed_part_size_is_the_configured_one_unless_s3s_10000_parts_need_more():
    from s5jtransfer.streaming import part_size_for

    mib = 1024 * 1024
    assert part_size_for(60 * mib, 50 * mib) == 50 * mib
    assert part_size_for(10_000 * 50 * mib, 50 * mib) == 50 * mib
    big = 10_000 * 50 * mib + 1
    assert part_size_for(big, 50 * mib) == 51 * mib and -(-big // (51 * mib)) <= 10_000


def side_of(endpoints=("http://127.0.0.1:9000",), key="AKIDEXAMPLE", region="eu-west-1", bucket="bkt"):
    from s5jtransfer.config import Secret, Side
    return Side("source", bucket, "data/", region, Secret(key), Secret("SECRET/KEY+x" if key else ""), tuple(endpoints))


@pytest.mark.parametrize("params", [
    {"list-type": "2", "prefix": "data/", "encoding-type": "url", "max-keys": "1000"},
    {"list-type": "2", "prefix": "sp ace/ü+&=?#%25/~x", "encoding-type": "url", "max-keys": "7",
     "continuation-token": "abc/+=="},
    {"prefix": "", "encoding-type": "url", "max-keys": "1000", "marker": "日本/語 +&.bin"},
])
def test_listing_query_is_canonical_and_signed_as_botocore_signs_it(params):
    t = direct.Target("http://127.0.0.1:9000/bkt/", "AKIDEXAMPLE", "SECRET/KEY+x", None, "eu-west-1", verify=False)
    query = direct.canonical_query(params)
    ref = botocore_auth("GET", "http://127.0.0.1:9000/bkt?" + query, None, {}, b"")
    mine = dict(t.headers("GET", "/bkt", now=stamp_of(ref), payload=direct.EMPTY_SHA256, query=query))
    assert mine["Authorization"] == ref.headers["Authorization"]
    import urllib.parse
    assert dict(urllib.parse.parse_qsl(query, keep_blank_values=True)) == params  # sent as signed, nothing lost


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:9000", "http://127.0.0.1:9000/", "https://snow.local:8443",
                                      "https://192.168.1.20"])
def test_target_from_config_matches_the_one_read_off_a_boto3_client(monkeypatch, endpoint):
    for n in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(n, raising=False)
    from s5jtransfer import s3
    side = side_of((endpoint,))
    mine = direct.Target.from_side(side)
    ref = direct.target_for(s3.client(side), side)
    assert mine is not None and ref is not None
    for attr in ("scheme", "host_header", "host", "port", "base", "access_key", "secret_key", "token", "region",
                 "verify"):
        assert getattr(mine, attr) == getattr(ref, attr), attr
    assert mine.path("sp ace/ü+.bin") == ref.path("sp ace/ü+.bin")


def test_target_from_config_is_left_to_boto3_where_boto3_must_tell(monkeypatch):
    for n in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(n, raising=False)
    assert direct.Target.from_side(side_of(())) is None  # AWS: regional, virtual-hosted rules
    assert direct.Target.from_side(side_of(key="")) is None  # the credential chain
    assert direct.Target.from_side(side_of(("http://gw.local:9000/s3",))) is None  # a path under the endpoint
    assert direct.Target.from_side(side_of(("https://b.s3-accelerate.amazonaws.com",))) is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    assert direct.Target.from_side(side_of()) is None


@pytest.mark.parametrize("module", ["src_sync", "dest_sync", "supervisor"])
def test_the_sides_start_without_importing_boto3(module):
    """Listings, GETs, small PUTs and HeadObjects go through direct.py; boto3 (about 0.25 s of
    CPU) is loaded only when a fallback or another feature needs it."""
    import subprocess
    import sys
    code = (f"import sys, s5jtransfer.{module}, s5jtransfer.commands; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore', 's3transfer')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_connection_error_names_the_endpoint_that_failed_not_the_sides_first():
    """A Snowball cluster: the third endpoint is down; the line must name it."""
    import botocore.exceptions

    from s5jtransfer import s3
    from s5jtransfer.config import Secret, Side

    side = Side("source", "b", "", "snow", Secret("k"), Secret("s"),
                ("http://192.0.2.1:8080", "http://192.0.2.2:8080", "http://192.0.2.3:8080"))
    exc = botocore.exceptions.EndpointConnectionError(endpoint_url="http://192.0.2.3:8080/b?list-type=2")
    line = s3.describe_error(exc, side)
    assert "http://192.0.2.3:8080" in line and "192.0.2.1" not in line, line


def test_a_listing_endpoint_that_never_answers_is_named_at_once(monkeypatch, caplog):
    """An endpoint that takes the connection and never answers (a stuck S3 service): a warning
    names it after the listing timeout, before boto3 starts its own waits and retries."""
    import logging
    import socket

    from s5jtransfer import s3
    from s5jtransfer.config import Secret, Side

    listener = socket.create_server(("127.0.0.1", 0))  # accepts (the backlog), never answers
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    side = Side(name="source", bucket="b", prefix="", region="snow", access_key=Secret("a"),
                secret_key=Secret("b"), endpoints=(url,))
    monkeypatch.setattr(s3, "LIST_TIMEOUT", 0.3)

    class Stop(Exception):
        pass

    def client_of():
        raise Stop

    try:
        with caplog.at_level(logging.WARNING, logger="s5jtransfer"), pytest.raises(Stop):
            s3.listing(side, client_of, list)
    finally:
        listener.close()
    assert f"source endpoint {url} did not answer a listing request within 0.3s" in caplog.text
