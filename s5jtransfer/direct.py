"""GETs and small PUTs on an asyncio event loop, signed here with SigV4.

get_many: small objects, one GET each. get_ordered: larger ones in ranges, all connections on
the first unfinished object, so objects are staged one after another at the speed of the link.
Uploader: small PUTs with Content-MD5, fed from other threads. list_objects and Heads:
listings and HeadObjects on blocking keep-alive connections, so that boto3 need not be loaded.

For objects of a few KiB the cost of a transfer is all per request, and in a threaded client
most of it is the interpreter handing its lock from thread to thread (hundreds of futex calls
per object) on top of botocore's per-call machinery. Here one thread drives many keep-alive
connections, each request is signed with a cached SigV4 key (one SHA-256 and one HMAC), and
only the happy path is handled: a complete `200` answer with a Content-Length (a `206` with exactly
the range asked for, for get_ordered). Anything else
(an error status, a redirect, a broken connection, a timeout, a key that cannot be encoded) is
reported as not done and the caller repeats it the regular way (boto3, with its retries and its
error names). The bytes are checked afterwards like any other copy (size and MD5 against the
listing), so this path can be slow to succeed but never wrong.

Where it is not used: a proxy configured in the environment (HTTP(S)_PROXY, ALL_PROXY), or an
endpoint scheme other than http/https; see `usable`.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import hmac
import logging
import os
import re
import ssl
import threading
import time
import urllib.parse
from typing import Callable, Iterable, Iterator

log = logging.getLogger("s5jtransfer.direct")
UNSIGNED = "UNSIGNED-PAYLOAD"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()  # the payload hash of a request without a body
MAX_HEADER = 64 * 1024
CHUNK = 1024 * 1024
PROBE_KEY = "s5jtransfer-probe"
CREDS_TTL = 60.0  # seconds between re-reads of the client's credentials


class Target:
    """Where and how to send requests for one bucket: scheme, host, path prefix, credentials."""

    def __init__(self, url: str, access_key: str, secret_key: str, token: str | None, region: str,
                 verify: bool) -> None:
        parts = urllib.parse.urlsplit(url)
        self.scheme = parts.scheme
        self.host_header = parts.netloc
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.base = parts.path  # ends with "/": the key is appended, quoted
        self.access_key, self.secret_key, self.token = access_key, secret_key, token
        self.region = region
        self.verify = verify
        self._key_day: tuple[str, str, bytes] | None = None  # (day, secret, signing key)
        self._source = None  # botocore credentials to re-read (temporary ones are refreshed)
        self._read_at = 0.0

    @classmethod
    def from_client(cls, client, bucket: str, verify: bool) -> "Target | None":
        """The scheme, host and path layout botocore would use (path or virtual-hosted style,
        regional or custom endpoint), read off a presigned URL; None when it cannot tell."""
        url = client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": PROBE_KEY}, ExpiresIn=60)
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.path.endswith("/" + PROBE_KEY):
            return None
        creds = client._request_signer._credentials
        if creds is None:
            return None
        frozen = creds.get_frozen_credentials()
        base = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path[:-len(PROBE_KEY)], "", ""))
        region = client.meta.region_name or "us-east-1"
        target = cls(base, frozen.access_key, frozen.secret_key, frozen.token, region, verify)
        target._source, target._read_at = creds, time.monotonic()
        return target

    @classmethod
    def from_side(cls, side, index: int = 0) -> "Target | None":
        """The Target of a side's custom endpoint (a Snowball, or any S3-compatible store) with
        the credentials of config.yaml, built without boto3: path-style addressing, as the
        side's boto3 client uses for such an endpoint (s3.client). None when boto3 is needed to
        tell: the AWS endpoints (virtual-hosted style, regional rules), the credential chain, an
        endpoint URL with a path, a proxy. tests/unit/test_direct.py checks that it matches the
        Target read off a boto3 client (from_client)."""
        from .s3 import api_endpoint

        endpoint = api_endpoint(side, index)
        if not endpoint or not side.has_credentials or not usable(endpoint):
            return None
        parts = urllib.parse.urlsplit(endpoint)
        if parts.path not in ("", "/") or parts.query or parts.fragment or not parts.hostname:
            return None
        base = urllib.parse.urlunsplit((parts.scheme, parts.netloc, f"/{side.bucket}/", "", ""))
        # custom endpoints (Snowballs) are self-signed: not verified, as for boto3 and s5cmd here
        return cls(base, side.access_key.reveal(), side.secret_key.reveal(), None, side.region or "us-east-1",
                   verify=False)

    def _fresh_credentials(self) -> None:
        """Re-read the client's credentials every CREDS_TTL seconds: an instance role's or an
        assumed role's expire and botocore refreshes them; a long-lived uploader must follow."""
        if self._source is not None and time.monotonic() - self._read_at >= CREDS_TTL:
            frozen = self._source.get_frozen_credentials()
            self.access_key, self.secret_key, self.token = frozen.access_key, frozen.secret_key, frozen.token
            self._read_at = time.monotonic()

    def path(self, key: str) -> str:
        # as botocore quotes an S3 key: every byte but unreserved characters, '/' and '~'
        return self.base + urllib.parse.quote(key, safe="/~")

    def _signing_key(self, day: str) -> bytes:
        if self._key_day is None or self._key_day[:2] != (day, self.secret_key):
            k = ("AWS4" + self.secret_key).encode()
            for part in (day, self.region, "s3", "aws4_request"):
                k = hmac.new(k, part.encode(), hashlib.sha256).digest()
            self._key_day = (day, self.secret_key, k)
        return self._key_day[2]

    def headers(self, method: str, path: str, now: datetime.datetime | None = None,
                payload: str = UNSIGNED, extra: dict[str, str] | None = None,
                query: str = "") -> list[tuple[str, str]]:
        """The request's headers, Authorization included (SigV4, header form, S3 rules: the path
        is signed as sent, never normalized). `extra` headers are signed too; `query` is the
        canonical query string (see canonical_query), sent as it is signed."""
        self._fresh_credentials()
        now = now or datetime.datetime.now(datetime.timezone.utc)
        stamp = now.strftime("%Y%m%dT%H%M%SZ")
        day = stamp[:8]
        hdrs = {"host": self.host_header, "x-amz-content-sha256": payload, "x-amz-date": stamp}
        if self.token:
            hdrs["x-amz-security-token"] = self.token
        for k, v in (extra or {}).items():
            hdrs[k.lower()] = v
        names = sorted(hdrs)
        signed = ";".join(names)
        canonical = "\n".join([method, path, query, *(f"{n}:{' '.join(str(hdrs[n]).split())}" for n in names), "",
                               signed, payload])
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        sig = hmac.new(self._signing_key(day), to_sign.encode(), hashlib.sha256).hexdigest()
        out = [(n, hdrs[n]) for n in names]
        out.append(("Authorization", f"AWS4-HMAC-SHA256 Credential={self.access_key}/{scope}, "
                                     f"SignedHeaders={signed}, Signature={sig}"))
        return out


def target_for(client, side) -> Target | None:
    """The event loop's Target for a side's boto3 client, or None (logged at debug level) when
    this path cannot serve the side: a proxy, an odd endpoint, no credentials. Custom endpoints
    (Snowballs) are self-signed: not verified, as for boto3 and s5cmd here."""
    if not usable(side.endpoint):
        return None
    try:
        target = Target.from_client(client, side.bucket, verify=not side.endpoint)
    except Exception as exc:  # noqa: BLE001 - the regular path takes over
        log.debug("the event loop is not used for %s: %s", side.url(), exc)
        return None
    if target is None:
        log.debug("the event loop is not used for %s: no usable presigned URL or credentials", side.url())
    return target


def usable(endpoint_url: str | None) -> bool:
    """Whether this path may be used: no proxy in the environment (botocore and s5cmd honour one;
    this path does not), and an http(s) endpoint that is not Transfer Acceleration."""
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        if os.environ.get(name):
            return False
    if endpoint_url is None:
        return True
    # Transfer Acceleration: s5cmd uploads through it; this path would use the regional endpoint
    return urllib.parse.urlsplit(endpoint_url).scheme in ("http", "https") and "s3-accelerate" not in endpoint_url


class _Conn:
    """One keep-alive connection; `used` counts the answers read on it."""

    def __init__(self) -> None:
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.used = 0

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None
        self.used = 0


_CODE = re.compile(r"<Code>([^<]{1,100})</Code>")  # an S3 error document's code, for the log


class _Stale(Exception):
    """A connection broke before any answer (a server that closed it while idle, or refused it
    when it opened): the request is sent once more on a new one."""


def _ssl_context(target: Target) -> ssl.SSLContext | None:
    if target.scheme != "https":
        return None
    ctx = ssl.create_default_context()
    if not target.verify:  # custom endpoints (Snowballs): self-signed, as for boto3 and s5cmd here
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class _Answer:
    def __init__(self, status: int, headers: dict[str, str], length: int | None, keep: bool) -> None:
        self.status, self.headers, self.length, self.keep = status, headers, length, keep


async def _exchange(target: Target, conn: _Conn, ctx, method: str, key: str, timeouts: tuple[float, float],
                    body: bytes = b"", extra: dict[str, str] | None = None) -> _Answer:
    """Send one request and read the status line and headers of its answer (not the body)."""
    if conn.writer is None:
        async with asyncio.timeout(timeouts[0]):
            conn.reader, conn.writer = await asyncio.open_connection(
                target.host, target.port, ssl=ctx, limit=MAX_HEADER,
                server_hostname=target.host if ctx is not None else None)
    req_path = target.path(key)
    payload = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
    lines = [f"{method} {req_path} HTTP/1.1", *(f"{k}: {v}" for k, v in target.headers(method, req_path,
                                                                                       payload=payload, extra=extra))]
    lines.append("User-Agent: s5jtransfer")
    if method == "PUT":
        lines.append(f"Content-Length: {len(body)}")
    try:
        conn.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        async with asyncio.timeout(timeouts[1]):
            await conn.writer.drain()
            head = await conn.reader.readuntil(b"\r\n\r\n")
    except (OSError, asyncio.IncompleteReadError) as exc:
        if not getattr(exc, "partial", b""):
            # nothing came back: safe to send again (GET and PUT are idempotent)
            raise _Stale(f"connection broke before any answer: {type(exc).__name__}: {exc}") from exc
        raise
    conn.used += 1
    status_line, _, rest = head.decode("latin-1").partition("\r\n")
    parts = status_line.split(" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    headers: dict[str, str] = {}
    for line in rest.split("\r\n"):
        name, _, value = line.partition(":")
        if name:
            headers[name.strip().lower()] = value.strip()
    keep = parts[0] == "HTTP/1.1"
    conn_hdr = headers.get("connection", "").lower()
    keep = conn_hdr != "close" if keep else conn_hdr == "keep-alive"
    length = None
    if "transfer-encoding" not in headers and headers.get("content-length", "").isdigit():
        length = int(headers["content-length"])
    if length is None:
        keep = False  # a body this path does not read: the connection cannot be reused
    return _Answer(status, headers, length, keep)


async def _with_retry(fn, conn: _Conn):
    """fn(), once more on a new connection when the first broke before any answer."""
    try:
        return await fn()
    except _Stale:
        conn.close()
        return await fn()


async def _get_one(target: Target, conn: _Conn, ctx, key: str, path: str, timeouts: tuple[float, float]) -> bool:
    """One GET into `path`; True only for a complete 200 with a Content-Length."""
    ans = await _with_retry(lambda: _exchange(target, conn, ctx, "GET", key, timeouts), conn)
    if ans.length is None:
        conn.close()
        return False
    left = ans.length
    if ans.status != 200:
        async with asyncio.timeout(timeouts[1]):
            await conn.reader.readexactly(left)  # a short error document
        if not ans.keep:
            conn.close()
        return False
    with open(path, "wb") as fh:
        while left:
            async with asyncio.timeout(timeouts[1]):
                data = await conn.reader.read(min(left, CHUNK))
            if not data:
                raise ConnectionError("connection closed mid-body")
            fh.write(data)
            left -= len(data)
    if not ans.keep:
        conn.close()
    return True


async def _put_one(target: Target, conn: _Conn, ctx, key: str, body: bytes, md5_hex: str,
                   timeouts: tuple[float, float]) -> tuple[bool, str, str]:
    """One PUT with Content-MD5 (the server refuses bytes that do not match it; none when md5_hex
    is empty, which only the benchmark's no-checksum variant does): (ok, the ETag the server
    answered, an error for the log)."""
    extra = {"content-md5": base64.b64encode(bytes.fromhex(md5_hex)).decode()} if md5_hex else {}
    ans = await _with_retry(lambda: _exchange(target, conn, ctx, "PUT", key, timeouts, body, extra), conn)
    doc = b""
    if ans.length:
        async with asyncio.timeout(timeouts[1]):
            doc = await conn.reader.readexactly(ans.length)
    if not ans.keep:
        conn.close()
    if ans.status == 200 and ans.headers.get("etag"):
        return True, ans.headers["etag"].strip('"'), ""
    m = _CODE.search(doc.decode("utf-8", "replace"))
    return False, "", f"HTTP {ans.status}{' ' + m.group(1) if m else ''} (direct PUT)"


class ListingError(Exception):
    """A listing answer this path does not take; the caller lists the regular way (boto3)."""


LIST_PAGE = 1000  # keys per page asked (S3's most, and what s3.iter_objects asks of a Snowball)


def canonical_query(params: dict[str, str]) -> str:
    """SigV4's canonical query string, which is also sent as it is: names and values
    percent-encoded except unreserved characters, sorted by name."""
    def q(v: str) -> str:
        return urllib.parse.quote(v, safe="-_.~")
    return "&".join(f"{q(k)}={q(v)}" for k, v in sorted(params.items()))


class HeadError(Exception):
    """A HeadObject answer this path does not take; the caller asks boto3."""


def _http_connection(target: Target, timeout: float):
    """A blocking keep-alive connection (http.client) for one sequential request at a time."""
    import http.client

    if target.scheme == "https":
        return http.client.HTTPSConnection(target.host, target.port, timeout=timeout, context=_ssl_context(target))
    return http.client.HTTPConnection(target.host, target.port, timeout=timeout)


def _request(target: Target, conn, method: str, path: str, query: str = ""):
    """Send one signed request without a body and read its whole answer: (response, body). A
    keep-alive connection the server closed while idle is replaced and the request sent once more."""
    import http.client

    for attempt in (1, 2):
        headers = dict(target.headers(method, path, payload=EMPTY_SHA256, query=query))
        headers["User-Agent"] = "s5jtransfer"
        try:
            conn.request(method, f"{path}?{query}" if query else path, headers=headers)
            resp = conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionError):
            conn.close()
            if attempt == 2:
                raise
            continue
        return resp, resp.read()
    raise AssertionError("unreachable")


class Heads:
    """HeadObject without boto3 (see list_objects for why), from any number of threads: each
    HEAD takes an idle keep-alive connection (or opens one) and gives it back, so there are never
    more connections than HEADs at once, however many threads come and go. head(full key) is
    (size, ETag), or None for a 404; any other answer raises (HeadError), and the caller asks
    boto3, which retries and names it."""

    def __init__(self, target: Target, timeout: float = 60.0) -> None:
        self.target = target
        self.timeout = timeout
        self._idle: list = []
        self._lock = threading.Lock()

    def head(self, key: str) -> tuple[int, str] | None:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = _http_connection(self.target, self.timeout)
        try:
            resp, _ = _request(self.target, conn, "HEAD", self.target.path(key))
        except Exception:
            conn.close()  # whatever state it was left in: not reused
            raise
        with self._lock:
            self._idle.append(conn)
        if resp.status == 404:
            return None
        length = resp.getheader("Content-Length") or ""
        if resp.status != 200 or not length.isdigit():
            raise HeadError(f"HTTP {resp.status}" + (" without a Content-Length" if resp.status == 200 else ""))
        return int(length), (resp.getheader("ETag") or "").strip('"')

    def idle(self) -> int:
        """Connections kept open for the next HEADs."""
        with self._lock:
            return len(self._idle)

    def close(self) -> None:
        with self._lock:
            conns, self._idle = self._idle, []
        for c in conns:
            c.close()


def list_objects(target: Target, side, timeout: float = 60.0) -> Iterator:
    """Every object under the side's prefix, as s3.iter_objects yields them (s3.Obj: prefix
    stripped, folder markers skipped), page by page over one keep-alive connection, without
    boto3: ListObjectsV2, or ListObjects (v1) on a Snowball, with encoding-type=url (keys come
    percent-encoded, so control characters pass the XML) and decoded as botocore decodes them.

    boto3's import and client cost about 0.25 s of CPU (the source side's start does without
    them), and botocore reads a 1,000-key page in about 19 ms of CPU, this in about 5 ms.

    Only complete 200 answers are taken. Anything else (an error status, a redirect, a body that
    is not a listing, a page that would not advance, a broken connection) raises; the caller then
    lists from the start the regular way, which retries and names the error."""
    import xml.etree.ElementTree as ET

    from .s3 import Obj

    conn = _http_connection(target, timeout)
    path = target.base.rstrip("/") or "/"
    plen = len(side.prefix)
    token: str | None = None  # the continuation token (v2) or marker (v1) of the next page
    try:
        while True:
            params = {"prefix": side.prefix, "encoding-type": "url", "max-keys": str(LIST_PAGE)}
            if side.is_snow:
                if token is not None:
                    params["marker"] = token
            else:
                params["list-type"] = "2"
                if token is not None:
                    params["continuation-token"] = token
            resp, body = _request(target, conn, "GET", path, canonical_query(params))
            if resp.status != 200:
                m = _CODE.search(body.decode("utf-8", "replace"))
                raise ListingError(f"HTTP {resp.status}{' ' + m.group(1) if m else ''}")
            root = ET.fromstring(body)
            ns = root.tag[:root.tag.index("}") + 1] if root.tag.startswith("{") else ""
            if root.tag != ns + "ListBucketResult":
                raise ListingError(f"not a listing: <{root.tag}>")
            decode = urllib.parse.unquote_plus if root.findtext(ns + "EncodingType") == "url" else str
            last = None
            for node in root.iterfind(ns + "Contents"):
                raw, size = node.findtext(ns + "Key"), node.findtext(ns + "Size")
                if raw is None or size is None:
                    raise ListingError("an entry without Key or Size")
                key = last = decode(raw)
                n = int(size)
                if key.endswith("/") and n == 0:
                    continue  # a folder marker
                yield Obj(key[plen:], n, (node.findtext(ns + "ETag") or "").strip('"'))
            if (root.findtext(ns + "IsTruncated") or "").strip().lower() != "true":
                return
            if side.is_snow:
                marker = root.findtext(ns + "NextMarker")
                following = decode(marker) if marker else last
            else:
                following = root.findtext(ns + "NextContinuationToken")
            if not following or following == token:
                raise ListingError("a truncated page without a way to the next one")
            token = following
    finally:
        conn.close()


def get_many(targets: list[Target], jobs: Iterable[tuple[str, str]], workers: int,
             done: Callable[[str, bool], None], stopped: Callable[[], bool], timeout: float = 120.0,
             connect_timeout: float = 10.0) -> None:
    """GET each (key, local path) over `workers` keep-alive connections, spread over the targets
    (one per endpoint); done(path, ok) for each, in this thread (ok=False: not fetched, repeat it
    the regular way). Returns when every job is reported."""
    it = iter(jobs)
    timeouts = (connect_timeout, timeout)

    async def worker(target: Target, ctx, conn: _Conn) -> None:
        for key, path in it:
            if stopped():
                done(path, False)
                continue
            ok = False
            try:
                ok = await _get_one(target, conn, ctx, key, path, timeouts)
            except Exception:  # noqa: BLE001 - anything unexpected: not done, the regular call repeats it
                conn.close()
            done(path, ok)

    _run_workers(targets, workers, worker)


def _run_workers(targets: list[Target], workers: int, worker) -> None:
    """Run `workers` coroutines worker(target, ssl context, connection) on a new event loop until
    all return, spread over the targets (one per endpoint), each with a keep-alive connection of
    its own, closed at the end. They share their work through an iterator (one thread: safe)."""
    ctxs = [_ssl_context(t) for t in targets]

    async def one(n: int) -> None:
        conn = _Conn()
        try:
            await worker(targets[n % len(targets)], ctxs[n % len(targets)], conn)
        finally:
            conn.close()

    async def main() -> None:
        await asyncio.gather(*(one(n) for n in range(max(1, workers))))

    asyncio.run(main())


class _Ranged:
    """One object of get_ordered: its local file, the ranges still out, whether one failed."""

    __slots__ = ("key", "path", "size", "etag", "left", "failed", "fd", "ready", "landed")

    def __init__(self, key: str, path: str, size: int, etag: str, ranges: int) -> None:
        self.key, self.path, self.size, self.etag = key, path, size, etag
        self.left, self.failed, self.fd = ranges, False, None
        self.ready = 0  # bytes [0, ready) are written
        self.landed: dict[int, int] = {}  # start -> length of ranges written beyond `ready`

    def written(self, start: int, length: int) -> bool:
        """Note a range as written; True when the written prefix grew."""
        self.landed[start] = length
        grew = False
        while self.ready in self.landed:
            self.ready += self.landed.pop(self.ready)
            grew = True
        return grew


async def _get_range(target: Target, conn: _Conn, ctx, obj: _Ranged, start: int, length: int,
                     timeouts: tuple[float, float]) -> bool:
    """GET bytes [start, start+length) of obj into its file at that offset. If-Match pins every
    range to the listed version: an object replaced meanwhile answers 412, never a mix of two
    versions. True only for a complete 206 for exactly that range (200 when it is the whole object)."""
    whole = start == 0 and length == obj.size
    extra = {"if-match": f'"{obj.etag}"'} if obj.etag else {}
    if not whole:
        extra["range"] = f"bytes={start}-{start + length - 1}"
    ans = await _with_retry(lambda: _exchange(target, conn, ctx, "GET", obj.key, timeouts, extra=extra), conn)
    if ans.length is None:
        conn.close()
        return False
    want = 200 if whole else 206
    ok = ans.status == want and ans.length == length and (
        whole or ans.headers.get("content-range", "") == f"bytes {start}-{start + length - 1}/{obj.size}")
    if not ok:
        if ans.length <= MAX_HEADER:
            async with asyncio.timeout(timeouts[1]):
                await conn.reader.readexactly(ans.length)  # a short error document
            if not ans.keep:
                conn.close()
        else:
            conn.close()  # a body we do not want: not read, the connection is not reused
        return False
    left, pos = length, start
    while left:
        async with asyncio.timeout(timeouts[1]):
            data = await conn.reader.read(min(left, CHUNK))
        if not data:
            raise ConnectionError("connection closed mid-body")
        os.pwrite(obj.fd, data, pos)
        pos += len(data)
        left -= len(data)
    if not ans.keep:
        conn.close()
    return True


def get_ordered(targets: list[Target], jobs: Iterable[tuple[str, str, int, str]], workers: int, range_size: int,
                done: Callable[[str, bool], None], stopped: Callable[[], bool], timeout: float = 120.0,
                connect_timeout: float = 10.0, advanced: Callable[[str, int, int], None] | None = None) -> None:
    """GET each (key, local path, size, etag) in ranges of range_size bytes over `workers`
    keep-alive connections that all take the next range in line, so objects complete one after
    another in the given order (each at the speed of the whole link) instead of all together at
    the end. done(path, ok) once per object, in this thread (ok=False: not fetched, repeat it the
    regular way). advanced(path, size, ready), when given, in this thread whenever the object's
    written prefix [0, ready) grows, before done (see streaming.py)."""
    timeouts = (connect_timeout, timeout)
    # ranges are made as they are taken: a batch of terabytes is millions of ranges
    queue = ((o, start, min(range_size, o.size - start))
             for o in (_Ranged(k, p, size, etag, max(1, -(-size // range_size))) for k, p, size, etag in jobs)
             for start in range(0, max(o.size, 1), range_size))

    def finish(o: _Ranged) -> None:
        o.left -= 1
        if o.left:
            return
        if o.fd is not None:
            os.close(o.fd)
            o.fd = None
        done(o.path, not o.failed)

    async def worker(target: Target, ctx, conn: _Conn) -> None:
        for o, start, length in queue:
            if not o.failed and stopped():
                o.failed = True
            if not o.failed:
                try:
                    if o.fd is None:
                        o.fd = os.open(o.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                    if o.size == 0 or await _get_range(target, conn, ctx, o, start, length, timeouts):
                        if advanced is not None and o.written(start, length) and not o.failed:
                            advanced(o.path, o.size, o.ready)
                        finish(o)
                        continue
                except Exception:  # noqa: BLE001 - anything unexpected: not done, the regular call repeats it
                    conn.close()
                o.failed = True
            finish(o)

    _run_workers(targets, workers, worker)


class Uploader:
    """PUTs of small files on an event loop in a thread of its own, fed from other threads.
    report(tag, ok, etag, error) runs in that thread for each file added, once."""

    def __init__(self, target: Target, workers: int, report: Callable[[str, bool, str, str], None],
                 timeout: float = 120.0, connect_timeout: float = 10.0) -> None:
        self.target = target
        self.workers = max(1, workers)
        self.report = report
        self.timeouts = (connect_timeout, timeout)
        self._ctx = _ssl_context(target)
        self._lock = threading.Lock()
        self._outstanding: dict[str, int] = {}  # tag -> size, added and not yet reported
        self._bytes = 0
        self._loop = asyncio.new_event_loop()
        self._queue: asyncio.Queue | None = None
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="direct-put", daemon=True)
        self._thread.start()
        ready.wait()

    def __len__(self) -> int:
        return len(self._outstanding)

    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def bytes_in_flight(self) -> int:
        return self._bytes

    def add(self, key: str, path: str, size: int, md5_hex: str, tag: str) -> None:
        with self._lock:
            self._outstanding[tag] = size
            self._bytes += size
        self._loop.call_soon_threadsafe(self._queue.put_nowait, (key, path, size, md5_hex, tag))

    def close(self, timeout: float = 10.0) -> None:
        """Finish what was added (waiting up to `timeout`), then stop the thread; whatever is
        still unreported then is reported failed (and never reported again)."""
        if self._thread.is_alive():
            for _ in range(self.workers):
                self._loop.call_soon_threadsafe(self._queue.put_nowait, None)
            self._thread.join(timeout)
        for tag in list(self._outstanding):
            self._done(tag, False, "", "not uploaded: stopped before its turn (direct PUT)")

    def _done(self, tag: str, ok: bool, etag: str, error: str) -> None:
        with self._lock:
            size = self._outstanding.pop(tag, None)
            if size is None:
                return  # already reported
            self._bytes -= size
        self.report(tag, ok, etag, error)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._queue = asyncio.Queue()
        ready.set()
        try:
            self._loop.run_until_complete(asyncio.gather(*(self._worker() for _ in range(self.workers))))
        finally:
            self._loop.close()

    async def _worker(self) -> None:
        conn = _Conn()
        try:
            while True:
                job = await self._queue.get()
                if job is None:
                    return
                key, path, size, md5_hex, tag = job
                ok, etag, error = False, "", ""
                try:
                    with open(path, "rb") as fh:
                        body = fh.read()
                    ok, etag, error = await _put_one(self.target, conn, self._ctx, key, body, md5_hex, self.timeouts)
                except Exception as exc:  # noqa: BLE001 - anything unexpected is a failed upload, retried
                    conn.close()
                    error = f"{type(exc).__name__}: {exc} (direct PUT)" if str(exc) else f"{type(exc).__name__} (direct PUT)"
                self._done(tag, ok, etag, error)
        finally:
            conn.close()
