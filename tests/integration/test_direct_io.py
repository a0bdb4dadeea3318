"""direct.py against a real S3 server (moto) and against servers that misbehave on purpose."""

from __future__ import annotations

import hashlib
import os
import socket
import threading

import boto3
import pytest
import botocore.config

from conftest import wait_for
from s5jtransfer import direct

HOSTILE = ["plain.bin", "sp ace/ü+&=?#%25.bin", "a//b/./../c.bin", "dir/trailing/", "-dash;semi,comma'quote\"",
           "日本/語.bin", "$(echo x)`y`.bin", "x" * 900]


def client(server):
    return boto3.client("s3", endpoint_url=server.url, aws_access_key_id="testing", aws_secret_access_key="testing",
                        region_name="us-east-1",
                        config=botocore.config.Config(s3={"addressing_style": "path"}, signature_version="s3v4"))


def test_get_many_fetches_hostile_keys_byte_identical_and_reports_a_missing_one(s3server, tmp_path):
    bucket = s3server.new_bucket("dget")
    c = client(s3server)
    data = {k: os.urandom(n) for k, n in zip(HOSTILE, (0, 1, 1000, 70000, 5, 300000, 7, 11))}
    for k, v in data.items():
        c.put_object(Bucket=bucket, Key=k, Body=v)
    target = direct.Target.from_client(c, bucket, verify=False)
    jobs = [("missing/key.bin", str(tmp_path / "missing"))] + \
        [(k, str(tmp_path / f"f{i}")) for i, k in enumerate(data)]
    results: dict[str, bool] = {}
    # 2 connections for 9 objects: each connection carries several requests, one after the 404
    direct.get_many([target], jobs, 2, lambda p, ok: results.__setitem__(p, ok), lambda: False)
    assert results.pop(str(tmp_path / "missing")) is False
    assert results == {str(tmp_path / f"f{i}"): True for i in range(len(data))}
    for i, v in enumerate(data.values()):
        assert (tmp_path / f"f{i}").read_bytes() == v


def test_uploader_puts_with_content_md5_and_reports_the_servers_etag(s3server, tmp_path):
    bucket = s3server.new_bucket("dput")
    c = client(s3server)
    target = direct.Target.from_client(c, bucket, verify=False)
    got: dict[str, tuple] = {}
    done = threading.Event()
    files = {}
    for i, k in enumerate(HOSTILE):
        p = tmp_path / f"u{i}"
        p.write_bytes(os.urandom(i * 1000))
        files[k] = p

    def report(tag, ok, etag, error):
        got[tag] = (ok, etag, error)
        if len(got) == len(files):
            done.set()

    up = direct.Uploader(target, 3, report)
    try:
        for k, p in files.items():
            up.add(k, str(p), p.stat().st_size, hashlib.md5(p.read_bytes()).hexdigest(), k)
        assert done.wait(30)
    finally:
        up.close()
    assert len(up) == 0 and up.bytes_in_flight == 0
    for k, p in files.items():
        ok, etag, error = got[k]
        assert ok and not error, (k, error)
        assert etag == hashlib.md5(p.read_bytes()).hexdigest()
        assert c.get_object(Bucket=bucket, Key=k)["Body"].read() == p.read_bytes()


def test_get_ordered_assembles_ranges_byte_identical_and_pins_each_object_to_its_listed_version(
        s3server, tmp_path):
    bucket = s3server.new_bucket("dranged")
    c = client(s3server)
    data = {"big/nine.bin": os.urandom(9 * 1024 * 1024 + 17), HOSTILE[1]: os.urandom(3 * 1024 * 1024),
            HOSTILE[6]: os.urandom(100), "exact.bin": os.urandom(2 * 1024 * 1024)}
    etags = {}
    for k, v in data.items():
        etags[k] = c.put_object(Bucket=bucket, Key=k, Body=v)["ETag"].strip('"')
    # listed, then replaced before its ranges are fetched: the old ETag must not mix two versions
    c.put_object(Bucket=bucket, Key="changed.bin", Body=b"old" * 1000000)
    old_etag = c.head_object(Bucket=bucket, Key="changed.bin")["ETag"].strip('"')
    c.put_object(Bucket=bucket, Key="changed.bin", Body=b"new" * 1000000)
    target = direct.Target.from_client(c, bucket, verify=False)
    jobs = [(k, str(tmp_path / f"f{i}"), len(data[k]), etags[k]) for i, k in enumerate(data)]
    jobs.insert(1, ("changed.bin", str(tmp_path / "changed"), 3000000, old_etag))
    jobs.append(("missing.bin", str(tmp_path / "missing"), 5000, "0" * 32))
    results: dict[str, list] = {}
    order: list[str] = []

    def done(p, ok):
        results.setdefault(p, []).append(ok)
        order.append(p)

    # 1 MiB ranges over 3 connections: the 9 MiB object is 10 ranges spread over all three
    direct.get_ordered([target], jobs, 3, 1024 * 1024, done, lambda: False)
    assert results.pop(str(tmp_path / "changed")) == [False]
    assert results.pop(str(tmp_path / "missing")) == [False]
    assert results == {str(tmp_path / f"f{i}"): [True] for i in range(len(data))}  # each reported once
    for i, v in enumerate(data.values()):
        assert (tmp_path / f"f{i}").read_bytes() == v
    # one connection: objects complete strictly in the order given
    order.clear()
    direct.get_ordered([target], jobs[2:4] + jobs[:1], 1, 1024 * 1024, done, lambda: False)
    assert order == [j[1] for j in jobs[2:4] + jobs[:1]]


def test_get_ordered_stops_taking_ranges_when_stopped(s3server, tmp_path):
    bucket = s3server.new_bucket("drstop")
    c = client(s3server)
    etag = c.put_object(Bucket=bucket, Key="k", Body=os.urandom(3 * 1024 * 1024))["ETag"].strip('"')
    target = direct.Target.from_client(c, bucket, verify=False)
    results = {}
    direct.get_ordered([target], [("k", str(tmp_path / "k"), 3 * 1024 * 1024, etag)], 1, 1024 * 1024,
                       lambda p, ok: results.__setitem__(p, ok), lambda: True)
    assert results == {str(tmp_path / "k"): False}


class OneAnswerServer:
    """An HTTP server that answers one request per connection, then closes it without saying so
    (as a server does with a keep-alive connection that sat idle too long)."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.requests = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            if self.hold(conn):
                continue
            with conn:
                buf = b""
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    buf += chunk
                if not buf:
                    continue
                self.requests += 1
                conn.sendall(self.answer(buf))

    def hold(self, conn: socket.socket) -> bool:
        """True: keep this connection open, unread and unanswered."""
        return False

    def answer(self, request: bytes) -> bytes:
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nETag: \"x\"\r\n\r\n" % len(self.body) + self.body

    def close(self) -> None:
        self.sock.close()


def test_a_connection_the_server_closed_is_replaced_and_the_request_sent_again(tmp_path):
    server = OneAnswerServer(b"hello")
    try:
        target = direct.Target(f"http://127.0.0.1:{server.port}/b/", "A", "S", None, "us-east-1", verify=False)
        results = {}
        jobs = [(f"k{i}", str(tmp_path / f"k{i}")) for i in range(4)]
        direct.get_many([target], jobs, 1, lambda p, ok: results.__setitem__(p, ok), lambda: False)
        assert all(results.values()) and len(results) == 4
        assert all((tmp_path / f"k{i}").read_bytes() == b"hello" for i in range(4))
        assert server.connections == 4  # one connection per answer: each closed one was replaced
    finally:
        server.close()


def test_get_ordered_takes_only_the_exact_range_it_asked_for(tmp_path):
    """A server that ignores Range (answers 200 with the whole body) gives a ranged request no
    valid answer: the object is reported not done (the regular path repeats it); a request for
    the whole object takes the 200."""
    server = OneAnswerServer(b"hello")
    try:
        target = direct.Target(f"http://127.0.0.1:{server.port}/b/", "A", "S", None, "us-east-1", verify=False)
        results = {}
        jobs = [("ranged", str(tmp_path / "ranged"), 10, "x"), ("whole", str(tmp_path / "whole"), 5, "x")]
        direct.get_ordered([target], jobs, 1, 4, lambda p, ok: results.__setitem__(p, ok), lambda: False)
        assert results == {str(tmp_path / "ranged"): False, str(tmp_path / "whole"): False}  # 5 > 4: ranged too
        results.clear()
        direct.get_ordered([target], jobs[1:], 1, 8, lambda p, ok: results.__setitem__(p, ok), lambda: False)
        assert results == {str(tmp_path / "whole"): True}
        assert (tmp_path / "whole").read_bytes() == b"hello"
        # a 1 TiB object (262,144 ranges): once its first ranges fail,
        # the others are not requested
        results.clear()
        before = server.requests
        direct.get_ordered([target], [("huge", str(tmp_path / "huge"), 1 << 40, "x")], 4, 4 << 20,
                           lambda p, ok: results.__setitem__(p, ok), lambda: False)
        assert results == {str(tmp_path / "huge"): False}
        assert server.requests - before <= 4  # at most one first request per connection
    finally:
        server.close()


def test_an_unreachable_endpoint_reports_every_object_not_done(tmp_path):
    port = socket.create_server(("127.0.0.1", 0))
    dead = port.getsockname()[1]
    port.close()  # nothing listens there now
    target = direct.Target(f"http://127.0.0.1:{dead}/b/", "A", "S", None, "us-east-1", verify=False)
    results = {}
    direct.get_many([target], [(f"k{i}", str(tmp_path / f"k{i}")) for i in range(5)], 2,
                    lambda p, ok: results.__setitem__(p, ok), lambda: False, connect_timeout=2)
    assert results == {str(tmp_path / f"k{i}"): False for i in range(5)}
    got = {}
    up = direct.Uploader(target, 2, lambda tag, ok, etag, error: got.__setitem__(tag, (ok, error)))
    try:
        (tmp_path / "f").write_bytes(b"data")
        up.add("k", str(tmp_path / "f"), 4, hashlib.md5(b"data").hexdigest(), "t")
        wait_for(lambda: "t" in got, 20, "the failed upload to be reported")
    finally:
        up.close()
    ok, error = got["t"]
    assert not ok and "direct PUT" in error and "Connection" in error


def test_closing_an_uploader_reports_what_it_never_sent(tmp_path):
    server_sock = socket.create_server(("127.0.0.1", 0))  # accepts, never answers
    try:
        port = server_sock.getsockname()[1]
        target = direct.Target(f"http://127.0.0.1:{port}/b/", "A", "S", None, "us-east-1", verify=False)
        got: dict[str, list] = {}
        up = direct.Uploader(target, 1, lambda tag, ok, etag, error: got.setdefault(tag, []).append(ok),
                             timeout=60)
        (tmp_path / "f").write_bytes(b"data")
        for i in range(3):
            up.add(f"k{i}", str(tmp_path / "f"), 4, hashlib.md5(b"data").hexdigest(), f"t{i}")
        up.close(timeout=0.5)
        assert got == {"t0": [False], "t1": [False], "t2": [False]}  # each reported once, as failed
        assert len(up) == 0
    finally:
        server_sock.close()


def test_both_sides_over_https_with_a_self_signed_certificate(work):
    """A newer Snowball (https://IP, self-signed certificate) on both sides: the event loop's
    GETs and PUTs, s5cmd and boto3 all go through TLS, and every object arrives."""
    from tlsproxy import TLSFront

    front = TLSFront(work.server.port).start()
    try:
        data = {f"small/{i}.bin": os.urandom(500 + i * 300) for i in range(30)}
        data["medium.bin"] = os.urandom(2 * 1024 * 1024)  # s5cmd both ways
        work.put_all(data)
        # src_range_workers 0: the medium object goes through s5cmd on the source side too
        work.cfg["transfer_settings"].update(src_endpoint_url=front.url, dest_endpoint_url=front.url,
                                             src_direct_get_max_bytes=1024 * 1024, src_range_workers=0)
        work.write_config()
        log_start = work.server.log_path.stat().st_size
        r = work.run("sync_mvol.py", "--once", "--debug", timeout=180)
        assert r.returncode == 0, r.stderr[-3000:]
        for k, v in data.items():
            assert work.dest_bytes(k) == v
        assert "fetched again by regular GetObject" not in r.stderr  # the event loop's TLS GETs worked
        with open(work.server.log_path, "rb") as fh:
            fh.seek(log_start)
            log = fh.read().decode("utf-8", "replace")
        # each small object: one GET and one PUT, and nothing reached moto except through TLS
        assert log.count(f"GET /{work.src}/data/small/3.bin ") == 1
        assert log.count(f"PUT /{work.dst}/copy/small/3.bin ") == 1
        assert front.connections > 0
        for name in ("src_commands.txt", "dest_commands.txt"):  # only the medium one went through s5cmd
            lines = (work.path / name).read_text().splitlines()
            assert len(lines) == 1 and "medium.bin" in lines[0], (name, lines)
    finally:
        front.stop()


def test_larger_objects_are_staged_in_ranges_on_the_event_loop(work):
    """Defaults of the event loop: objects above src_direct_get_max_bytes are fetched in 4 MiB
    ranges, largest first, a multipart one included (verified against its multipart ETag);
    nothing goes through s5cmd on the source side, and every byte arrives."""
    big = os.urandom(11 * 1024 * 1024)
    work.put_multipart("big/multi.bin", big)  # 5 MiB parts: ETag "...-3"
    data = {"mid.bin": os.urandom(3 * 1024 * 1024), "sp ace/ü+&=?#%25.bin": os.urandom(1024 * 1024 + 1),
            **{f"small/{i}.bin": os.urandom(100 + i) for i in range(20)}}
    work.put_all(data)
    work.cfg["transfer_settings"].update(src_direct_get_max_bytes=1024 * 1024, src_range_workers=3)
    work.write_config()
    log_start = work.server.log_path.stat().st_size
    r = work.run("sync_mvol.py", "--once", timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    assert work.dest_bytes("big/multi.bin") == big
    for k, v in data.items():
        assert work.dest_bytes(k) == v
    assert not (work.path / "src_commands.txt").exists()  # no s5cmd run on the source side
    with open(work.server.log_path, "rb") as fh:
        fh.seek(log_start)
        log = fh.read().decode("utf-8", "replace")
    assert log.count(f"GET /{work.src}/data/big/multi.bin ") == 3  # 4 + 4 + 3 MiB
    assert log.count(f"GET /{work.src}/data/mid.bin ") == 1  # below one range: one GET
    assert "multipart" in (work.path / "src_ledger.csv").read_text()  # verified as multipart, not by size


# (a newline in a key: moto cannot store it, its router does not match the path)
LISTING_KEYS = HOSTILE + ["ctl\x01\x1f.bin", "tab\tkey", "plus+plus", "pct%2Fslash", "folder/",
                          "sub/folder/", "zz/last.bin", "data"]


def side_for(server, bucket, prefix, snow=False):
    from s5jtransfer.config import Secret, Side
    return Side("source", bucket, prefix, "snow" if snow else "us-east-1", Secret("testing"), Secret("testing"),
                (server.url,))


@pytest.mark.parametrize("snow", [False, True], ids=["ListObjectsV2", "ListObjects-v1-snowball"])
def test_listing_without_boto3_equals_boto3s_for_hostile_keys_over_many_pages(s3server, monkeypatch, snow):
    from s5jtransfer import s3
    bucket = s3server.new_bucket("dlist")
    c = client(s3server)
    for i, k in enumerate(LISTING_KEYS):
        body = b"" if k.endswith("/") and k != "dir/trailing/" else os.urandom(i)  # folder markers are empty
        c.put_object(Bucket=bucket, Key="data/" + k, Body=body)
    c.put_object(Bucket=bucket, Key="other/outside.bin", Body=b"x")
    c.put_object(Bucket=bucket, Key="data/", Body=b"")  # the prefix itself
    c.put_object(Bucket=bucket, Key="data/zz/", Body=b"holds data")  # a prefix below, itself an object
    side = side_for(s3server, bucket, "data/", snow)
    monkeypatch.setattr(direct, "LIST_PAGE", 3)  # many pages: continuation tokens / markers carry hostile keys
    target = direct.Target.from_side(side)
    assert target is not None
    mine = list(direct.list_objects(target, side))
    ref = list(s3.iter_objects(side, s3.client(side)))
    assert mine == ref
    keys = {o.key for o in mine}
    assert "ctl\x01\x1f.bin" in keys and "sp ace/ü+&=?#%25.bin" in keys
    assert "folder/" not in keys and "other/outside.bin" not in keys and "dir/trailing/" in keys
    assert len(mine) == len(LISTING_KEYS) - 2 + 1  # the two folder markers are skipped; zz/ is kept
    # listed from the prefix that is itself an object: it comes as the relative key ''
    below = side_for(s3server, bucket, "data/zz/", snow)
    mine = list(direct.list_objects(direct.Target.from_side(below), below))
    assert mine == list(s3.iter_objects(below, s3.client(below)))
    assert sorted(o.key for o in mine) == ["", "last.bin"]


def test_a_listing_this_path_cannot_take_raises_and_the_source_side_lists_through_boto3(s3server, monkeypatch):
    from s5jtransfer import s3
    side = side_for(s3server, "no-such-bucket-here", "data/")
    with pytest.raises(direct.ListingError, match="404 NoSuchBucket"):
        list(direct.list_objects(direct.Target.from_side(side), side))
    bad = side_for(s3server, "no-such-bucket-here", "data/")
    with pytest.raises(Exception) as exc:  # the regular listing names it
        list(s3.iter_objects(bad, s3.client(bad)))
    assert "does not exist" in s3.describe_error(exc.value, bad)


class PagesServer(OneAnswerServer):
    """Answers each request with the next of `pages` (status, body), then closes the connection
    without saying so; keeps each request line."""

    def __init__(self, pages: list[tuple[int, bytes]]) -> None:
        self.pages = list(pages)
        self.lines: list[str] = []
        super().__init__(b"")

    def answer(self, request: bytes) -> bytes:
        self.lines.append(request.split(b"\r\n", 1)[0].decode())
        status, body = self.pages.pop(0) if self.pages else (500, b"")
        return b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n" % (status, len(body)) + body


def page(keys: list[str], token: str | None, encoded: bool = True, ns: bool = True) -> bytes:
    x = "".join(f"<Contents><Key>{k}</Key><Size>{0 if k.endswith('/') else len(k)}</Size>"
                f"<ETag>&quot;e{n}&quot;</ETag></Contents>" for n, k in enumerate(keys))
    return (f"<?xml version='1.0' encoding='UTF-8'?><ListBucketResult"
            f"{' xmlns=' + chr(34) + 'http://s3.amazonaws.com/doc/2006-03-01/' + chr(34) if ns else ''}>"
            f"<Name>b</Name>{'<EncodingType>url</EncodingType>' if encoded else ''}"
            f"<IsTruncated>{'true' if token else 'false'}</IsTruncated>"
            f"{f'<NextContinuationToken>{token}</NextContinuationToken>' if token else ''}{x}"
            f"</ListBucketResult>").encode()


def test_listing_decodes_keys_as_s3_encodes_them_and_follows_tokens_over_dropped_connections():
    """S3 writes a space as '+' and a '+' as %2B; a page's token is sent back as it came. The
    server closes each connection after one answer without saying so: the next page is asked
    again on a new connection."""
    server = PagesServer([(200, page(["data/sp+ace%2Bplus", "data/%E6%97%A5%01"], "tok/+=")),
                          (200, page(["data/last", "data/folder/"], None))])
    try:
        side = side_for(type("S", (), {"url": f"http://127.0.0.1:{server.port}"}), "b", "data/")
        got = list(direct.list_objects(direct.Target.from_side(side), side))
        assert [(o.key, o.etag) for o in got] == [("sp ace+plus", "e0"), ("日\x01", "e1"), ("last", "e0")]
        assert [o.size for o in got] == [18, 17, 9]  # the sizes given (the encoded keys' lengths)
        assert "continuation-token=tok%2F%2B%3D" in server.lines[1] and "encoding-type=url" in server.lines[0]
    finally:
        server.close()


@pytest.mark.parametrize("pages, why", [
    ([(200, page(["data/a"], None, encoded=False, ns=False)), ], None),  # a store without namespace or encoding
    ([(403, b"<Error><Code>AccessDenied</Code></Error>")], "HTTP 403 AccessDenied"),
    ([(301, b"")], "HTTP 301"),
    ([(200, b"<Error><Code>Busy</Code></Error>")], "not a listing"),
    ([(200, b"<ListBucketResult><Contents><Key>data/a</Key></Contents></ListBucketResult>")], "without Key or Size"),
    ([(200, page(["data/a"], "t")), (200, page(["data/b"], "t"))], "without a way to the next one"),
    ([(200, b"<ListBucketResult")], "ParseError"),
])
def test_a_listing_answer_this_path_does_not_take_raises(pages, why):
    server = PagesServer(pages)
    try:
        side = side_for(type("S", (), {"url": f"http://127.0.0.1:{server.port}"}), "b", "data/")
        target = direct.Target.from_side(side)
        if why is None:
            assert [o.key for o in direct.list_objects(target, side)] == ["a"]
            return
        with pytest.raises(Exception) as exc:
            list(direct.list_objects(target, side))
        assert why in f"{type(exc.value).__name__}: {exc.value}"
    finally:
        server.close()


def test_heads_without_boto3_equal_boto3s_for_hostile_keys_and_a_missing_one(s3server):
    """s3.Heads answers as s3.head does (size, ETag; None for a missing key), from many threads,
    and never needs boto3 for it: client_of is never called."""
    from concurrent.futures import ThreadPoolExecutor

    from s5jtransfer import s3
    bucket = s3server.new_bucket("dhead")
    c = client(s3server)
    for i, k in enumerate(LISTING_KEYS):
        c.put_object(Bucket=bucket, Key="data/" + k, Body=os.urandom(i * 7))
    side = side_for(s3server, bucket, "data/")
    keys = LISTING_KEYS + ["not/there.bin", "sp ace/ü+&=?#%25.bin.missing"]

    def no_boto3():
        raise AssertionError("boto3 was asked")

    heads = s3.Heads(side, no_boto3)
    try:
        for _ in range(3):  # pools of threads come and go, as the destination side's do
            with ThreadPoolExecutor(max_workers=4) as pool:
                mine = list(pool.map(heads.head, keys))
        assert 1 <= heads._direct.idle() <= 4  # connections reused, never more than HEADs at once
    finally:
        heads.close()
    ref = [s3.head(side, s3.client(side), k) for k in keys]
    assert mine == ref
    assert mine[-1] is None and mine[-2] is None and all(o is not None for o in mine[:-2])


class HeadServer(OneAnswerServer):
    """Answers each HEAD with the next of `answers` (a status line and headers), one per
    connection; keeps each request line."""

    def __init__(self, answers: list[bytes]) -> None:
        self.answers = list(answers)
        self.lines: list[str] = []
        super().__init__(b"")

    def answer(self, request: bytes) -> bytes:
        self.lines.append(request.split(b"\r\n", 1)[0].decode())
        return (self.answers.pop(0) if self.answers else b"HTTP/1.1 500 X\r\nContent-Length: 0") + b"\r\n\r\n"


def test_heads_follow_dropped_connections_and_leave_what_they_do_not_take_to_boto3():
    from s5jtransfer import s3
    server = HeadServer([b'HTTP/1.1 200 OK\r\nContent-Length: 12\r\nETag: "e1"',
                         b"HTTP/1.1 404 Not Found\r\nContent-Length: 0",
                         b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0",
                         b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked"])
    asked = []

    class Boto3Stub:
        def head_object(self, Bucket, Key):
            asked.append(Key)
            return {"ContentLength": 5, "ETag": '"from-boto3"'}

    try:
        side = side_for(type("S", (), {"url": f"http://127.0.0.1:{server.port}"}), "b", "data/")
        heads = s3.Heads(side, Boto3Stub)
        # the server closes each connection after one answer: every HEAD after the first is
        # sent again on a new connection
        assert heads.head("sp ace/x") == s3.Obj("sp ace/x", 12, "e1")
        assert heads.head("gone") is None
        assert heads.head("denied") == s3.Obj("denied", 5, "from-boto3")  # 403: boto3 asks again
        assert heads.head("odd") == s3.Obj("odd", 5, "from-boto3")  # no Content-Length
        assert asked == ["data/denied", "data/odd"]
        assert server.lines[0] == "HEAD /b/data/sp%20ace/x HTTP/1.1"
        with pytest.raises(direct.HeadError, match="HTTP 500"):
            direct.Heads(direct.Target.from_side(side)).head("data/more")
        heads.close()
    finally:
        server.close()


class SilentFirstServer(OneAnswerServer):
    """Holds its first connection without ever answering; answers each later one once."""

    def __init__(self) -> None:
        self.held: socket.socket | None = None
        super().__init__(b"abc")

    def hold(self, conn: socket.socket) -> bool:
        if self.held is None:
            self.held = conn
            return True
        return False


def test_a_head_that_timed_out_leaves_its_connection_usable_for_the_next():
    """A HEAD with no answer in time raises (the caller asks boto3); the thread's connection is
    not left waiting for that answer: the next HEAD goes out on a new one."""
    server = SilentFirstServer()
    try:
        target = direct.Target(f"http://127.0.0.1:{server.port}/b/", "A", "S", None, "us-east-1", verify=False)
        heads = direct.Heads(target, timeout=0.3)
        with pytest.raises(OSError):
            heads.head("k")
        assert heads.head("k") == (3, "x")
        heads.close()
    finally:
        if server.held is not None:
            server.held.close()
        server.close()
