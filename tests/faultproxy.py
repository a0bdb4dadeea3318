#!/usr/bin/env python3
"""A small fault-injecting HTTP reverse proxy for an S3 endpoint (standard library only).

It sits on loopback in front of an S3 server (moto in the tests) and forwards every request
(path, query and headers unchanged, Host as sent) over HTTP/1.1 keep-alive, streaming request
and response bodies in chunks. On *object* requests (a key after the bucket) it can inject, each
with its own probability drawn from a seeded `random.Random`:

- `fail_rate`:     reply `503 SlowDown` with an S3 XML error body, without forwarding;
- `drop_rate`:     forward nothing and reset the client connection;
- `truncate_rate`: (GET only) forward, send the status line, headers and part of the body,
                   then reset the connection (a mid-transfer drop);
- `short_rate`:    (GET only) a well-formed 2xx response whose Content-Length and body are cut
                   short (a lying server or middlebox: the client's HTTP layer cannot notice);
- `corrupt_rate`:  (GET only) one byte of a 2xx body changed, length unchanged (bit rot in
                   transit: only an end-to-end checksum notices).

Callbacks make it a store of another kind (tests/storefront.py): `lie` rewrites answers, `refuse`
answers an S3 error instead of forwarding, `rewrite_request` rewrites a request's body.

`max_faults` caps the total number of injected faults. `bandwidth` (bytes/s, one token bucket
shared by every connection, both directions) and `latency` (seconds, once per request before
forwarding) emulate a slower link for benchmarks. `stats` holds thread-safe counters;
`traffic` breaks requests and body bytes down by method and target (see FaultProxy.traffic).

From a test::

    with FaultProxy(upstream, fail_rate=0.2, seed=1) as proxy:
        ... point the client at proxy.url ...
        assert proxy.stats["fail"] > 0

From a shell (runs until Ctrl-C / SIGTERM, prints `listening on URL` first and stats at the end)::

    python tests/faultproxy.py --upstream http://127.0.0.1:5000 --port 5001 --fail-rate 0.2
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import select
import signal
import socket
import struct
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHUNK = 64 * 1024
# Hop-by-hop headers (RFC 9110 7.6.1) are not forwarded; framing is redone by the proxy.
HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
       "te", "trailer", "transfer-encoding", "upgrade", "expect"}
SLOWDOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n'
            b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message>"
            b"<RequestId>FAULTPROXY</RequestId><HostId>faultproxy</HostId></Error>")
FAULT_KINDS = ("fail", "drop", "truncate", "short", "corrupt")


class TokenBucket:
    """A shared byte-rate limiter. Callers may go into debt; they then sleep it off, so several
    connections share the rate fairly and a single large consume is still paced correctly."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(CHUNK, self.rate / 20))
        self.tokens = self.burst
        self.last = time.monotonic()
        self.lock = threading.Lock()

    def consume(self, n: int) -> None:
        if n <= 0:
            return
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
            self.last = now
            self.tokens -= n
            wait = -self.tokens / self.rate if self.tokens < 0 else 0.0
        if wait > 0:
            time.sleep(wait)


def is_object_path(target: str) -> bool:
    """True for /bucket/key... (an object request); False for /, /bucket, /bucket/ (+ query)."""
    path = urllib.parse.urlsplit(target).path if "://" in target else target.split("?", 1)[0]
    parts = path.lstrip("/").split("/", 1)
    return len(parts) == 2 and parts[1] != ""


def target_kind(target: str) -> str:
    """"object" (/bucket/key), "bucket" (/bucket, /bucket/: listings, bucket calls) or "service" (/)."""
    if is_object_path(target):
        return "object"
    path = urllib.parse.urlsplit(target).path if "://" in target else target.split("?", 1)[0]
    return "bucket" if path.strip("/") else "service"


class _Abort(Exception):
    """The client connection is to be reset (an injected fault or a broken upstream)."""


class _ClientGone(Exception):
    """The client closed its connection in the middle of a request body."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    # socketserver's default listen backlog is 5: a client opening dozens of connections at once
    # (as s5cmd and the suite do) would see connections reset or delayed by SYN retransmits,
    # which no real endpoint does
    request_queue_size = 1024

    def __init__(self, addr, handler, proxy: "FaultProxy") -> None:
        self.proxy = proxy
        super().__init__(addr, handler)

    def handle_error(self, request, client_address) -> None:  # noqa: D401 - quiet by default
        if self.proxy.verbose:
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "faultproxy"
    timeout = 300  # idle keep-alive connections end after this
    server: _Server

    # -- connection lifecycle -------------------------------------------------------------
    def setup(self) -> None:
        super().setup()
        self.proxy = self.server.proxy
        self.upstream: http.client.HTTPConnection | None = None
        self._expect100 = False
        self.trailers: list[bytes] = []
        self._tkey = "? other"
        self.proxy._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self._close_upstream()
            self.proxy._track(self.connection, False)

    def log_message(self, fmt, *args) -> None:
        if self.proxy.verbose:
            sys.stderr.write("faultproxy: %s - %s\n" % (self.address_string(), fmt % args))

    def handle_expect_100(self) -> bool:
        # Decide about faults first: a failed request gets its 503 instead of 100 Continue.
        self._expect100 = True
        return True

    def handle_one_request(self) -> None:
        self._expect100 = False
        try:
            super().handle_one_request()
        except _Abort:
            self._reset()
        except (_ClientGone, ConnectionError, socket.timeout, TimeoutError):
            self.close_connection = True

    def _reset(self) -> None:
        """Close the client socket abruptly (RST), as a crashed server or a cut link would."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        for f in (self.rfile, self.wfile):
            try:
                f.close()
            except OSError:
                pass
        try:
            self.connection.close()
        except OSError:
            pass

    # -- upstream ----------------------------------------------------------------------------
    def _close_upstream(self) -> None:
        if self.upstream is not None:
            try:
                self.upstream.close()
            except OSError:
                pass
            self.upstream = None

    def _upstream_conn(self) -> http.client.HTTPConnection:
        conn = self.upstream
        if conn is not None and conn.sock is not None:
            # An idle keep-alive connection that is readable was closed by the upstream.
            try:
                readable, _, _ = select.select([conn.sock], [], [], 0)
            except (OSError, ValueError):
                readable = [conn.sock]
            if readable:
                self._close_upstream()
                conn = None
        if conn is None:
            p = self.proxy
            conn = http.client.HTTPConnection(p.upstream_host, p.upstream_port, timeout=p.upstream_timeout)
            self.upstream = conn
        return conn

    # -- request body --------------------------------------------------------------------------
    def _body_reader(self):
        """Yield the request body in chunks, de-chunking `Transfer-Encoding: chunked`."""
        te = self.headers.get("Transfer-Encoding", "").lower()
        if "chunked" in te:
            return self._read_chunked()
        return self._read_length(int(self.headers.get("Content-Length") or 0))

    def _read_length(self, remaining: int):
        while remaining > 0:
            data = self.rfile.read(min(CHUNK, remaining))
            if not data:
                raise _ClientGone()
            remaining -= len(data)
            self.proxy._throttle(len(data))
            self.proxy._account(self._tkey, 1, len(data))
            yield data

    def _read_chunked(self):
        self.trailers = []
        while True:
            line = self.rfile.readline(65537)
            if not line:
                raise _ClientGone()
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailer section, ends with an empty line
                    t = self.rfile.readline(65537)
                    if not t or t in (b"\r\n", b"\n"):
                        break
                    self.trailers.append(t)
                return
            yield from self._read_length(size)
            self.rfile.readline(65537)  # CRLF after the chunk data

    def _drain_body(self) -> None:
        for _ in self._body_reader():
            pass

    # -- responses -----------------------------------------------------------------------------
    def _send_slowdown(self, close: bool) -> None:
        self._send_s3_error(503, SLOWDOWN, close, retry_after=True)

    def _send_s3_error(self, status: int, body: bytes, close: bool, retry_after: bool = False) -> None:
        self.send_response_only(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amz-request-id", "FAULTPROXY")
        if retry_after:
            self.send_header("Retry-After", "1")
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _refuse(self, status: int, code: str, message: str, has_body: bool) -> None:
        """An S3 error answer instead of forwarding (a store whose policy refuses the request)."""
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
                f"<RequestId>FAULTPROXY</RequestId><HostId>faultproxy</HostId></Error>").encode()
        if self._expect100:  # the client waits for 100 before sending: it sends nothing
            self._send_s3_error(status, body, close=has_body)
        else:
            self._drain_body()
            self._send_s3_error(status, body, close=False)

    def _send_error(self, code: int, message: str) -> None:
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>ProxyError</Code>'
                f"<Message>{message}</Message></Error>").encode()
        self.send_response_only(code)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _write(self, data: bytes) -> None:
        self.proxy._throttle(len(data))
        self.wfile.write(data)

    # -- the proxy -----------------------------------------------------------------------------
    def _proxy(self) -> None:
        p = self.proxy
        while p.frozen.is_set() and self.command in p.frozen_methods:  # held open, never answered, until thawed
            time.sleep(0.05)
        obj = is_object_path(self.path)
        self._tkey = f"{self.command} {target_kind(self.path)}"
        p._account(self._tkey, 0, 1)
        with p._lock:  # which client sent it: the first word of its User-Agent
            agent = (self.headers.get("User-Agent") or "-").split(" ", 1)[0].split("/", 1)[0]
            p.agents[agent] = p.agents.get(agent, 0) + 1
        fault = p._decide(self.command, obj)
        if fault == "drop":
            raise _Abort()
        has_body = "chunked" in self.headers.get("Transfer-Encoding", "").lower() or \
            int(self.headers.get("Content-Length") or 0) > 0
        refused = p.refuse(self.command, self.path, self.headers) if p.refuse is not None else None
        if refused is not None:
            p._count("refused")
            self._refuse(*refused, has_body=has_body)
            return
        if fault == "fail":
            if self._expect100:  # the client waits for 100 before sending: it sends nothing
                self._send_slowdown(close=has_body)
            else:
                self._drain_body()
                self._send_slowdown(close=False)
            return
        if self._expect100:
            self.send_response_only(100)
            self.end_headers()
        if p.latency:
            time.sleep(p.latency)
        self._forward(fault, has_body)

    def _forward(self, fault: str | None, has_body: bool) -> None:
        p = self.proxy
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        resp = None
        rewrite = p.rewrite_request(self.command, self.path, self.headers) if p.rewrite_request else None
        body = None
        if rewrite is not None and has_body:  # the whole (small) request body, rewritten
            body = rewrite(b"".join(self._body_reader()))
            chunked = False
        for attempt in (1, 2):
            conn = self._upstream_conn()
            try:
                conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for k, v in self.headers.items():
                    if k.lower() not in HOP and not (body is not None and k.lower() == "content-length"):
                        conn.putheader(k, v)
                if chunked:
                    conn.putheader("Transfer-Encoding", "chunked")
                if body is not None:
                    conn.putheader("Content-Length", str(len(body)))
                conn.endheaders()
                if body is not None:
                    conn.send(body)
                elif has_body:  # _ClientGone (the client broke off) is not caught here
                    for data in self._body_reader():
                        conn.send(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
                    if chunked:
                        conn.send(b"0\r\n" + b"".join(self.trailers) + b"\r\n")
                resp = conn.getresponse()
                break
            except (OSError, http.client.HTTPException) as exc:
                self._close_upstream()
                if attempt == 1 and (not has_body or body is not None):
                    continue  # most likely a stale keep-alive connection: once more on a new one
                p._count("upstream_errors")
                try:
                    self._send_error(502, f"upstream: {type(exc).__name__}: {exc}")
                except OSError:
                    pass
                self.close_connection = True
                return
        p._count("forwarded")
        clean = False
        try:
            clean = self._relay(resp, fault) and resp.isclosed() and not resp.will_close
        finally:
            if not clean:
                resp.close()
                self._close_upstream()

    def _relay(self, resp: http.client.HTTPResponse, fault: str | None) -> bool:
        """Send the upstream response to the client; True when its body was read to the end."""
        p = self.proxy
        no_body = self.command == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200
        length = resp.length  # None when chunked or read-until-close
        mode = "none" if no_body else ("length" if length is not None else
                                       ("chunked" if self.request_version >= "HTTP/1.1" else "close"))
        cut = flip = None
        if fault:
            if mode == "length" and length and 200 <= resp.status < 300:
                if fault == "corrupt":
                    flip = int(p._uniform(0, length)) % length
                else:
                    cut = min(length - 1, int(length * p._uniform(0.05, 0.95)))
            else:
                p._refund(fault)  # no body to damage: forward it whole
                fault = None
        headers = resp.getheaders()
        body = None
        if p.lie is not None:  # a store that misreports: the test rewrites the answer
            wanted = p.lie(self.command, self.path, resp.status, headers, None)
            if wanted is not None and mode == "length" and length is not None and length <= 1 << 20:
                body = resp.read(length)
                headers, body = p.lie(self.command, self.path, resp.status, headers, body)
                headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
                headers.append(("Content-Length", str(len(body))))
            elif wanted is not None:
                headers = wanted[0]
        self.send_response_only(resp.status, resp.reason)
        for k, v in headers:
            if k.lower() not in HOP and not (fault == "short" and k.lower() == "content-length"):
                self.send_header(k, v)
        if fault == "short":  # a well-formed response that is simply shorter than the object
            self.send_header("Content-Length", str(cut))
        if mode == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
        elif mode == "close":
            self.send_header("Connection", "close")
        self.end_headers()
        if mode == "none":
            resp.read()
            return True
        if body is not None:
            self._write(body)
            p._account(self._tkey, 2, len(body))
            return True
        sent = 0
        while True:
            want = CHUNK if cut is None else min(CHUNK, cut - sent)
            if want <= 0:
                resp.close()
                if fault == "truncate":
                    raise _Abort()  # reset in the middle of the body
                return False  # "short": the client saw a complete (short) response; upstream is discarded
            try:
                data = resp.read(want)
            except (http.client.HTTPException, OSError):
                resp.close()
                raise _Abort()  # the upstream broke mid-body: so does the client connection
            if not data:
                break
            if flip is not None and sent <= flip < sent + len(data):
                b = bytearray(data)
                b[flip - sent] ^= 0x5A
                data = bytes(b)
            sent += len(data)
            p._account(self._tkey, 2, len(data))
            if mode == "chunked":
                self._write(b"%x\r\n%s\r\n" % (len(data), data))
            else:
                self._write(data)
        if mode == "chunked":
            self.wfile.write(b"0\r\n\r\n")
        elif mode == "length" and sent != length:
            raise _Abort()
        if mode == "close":
            self.close_connection = True
        return True

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = do_OPTIONS = _proxy


class FaultProxy:
    """A fault-injecting reverse proxy on 127.0.0.1; use start()/stop() or a with block."""

    def __init__(self, upstream: str, fail_rate: float = 0.0, drop_rate: float = 0.0,
                 truncate_rate: float = 0.0, short_rate: float = 0.0, corrupt_rate: float = 0.0,
                 max_faults: int | None = None, seed: int | None = 0,
                 bandwidth: float | None = None, latency: float = 0.0, port: int = 0,
                 host: str = "127.0.0.1", methods: set[str] | tuple[str, ...] | None = None,
                 upstream_timeout: float = 120.0, verbose: bool = False, lie=None, refuse=None,
                 rewrite_request=None) -> None:
        u = urllib.parse.urlsplit(upstream)
        if u.scheme != "http" or not u.hostname:
            raise ValueError(f"upstream must be http://HOST:PORT, not {upstream!r}")
        if fail_rate + drop_rate + truncate_rate + short_rate + corrupt_rate > 1:
            raise ValueError("the fault rates must add up to at most 1")
        self.upstream = upstream
        self.upstream_host = u.hostname
        self.upstream_port = u.port or 80
        self.upstream_timeout = upstream_timeout
        self.fail_rate, self.drop_rate, self.truncate_rate = fail_rate, drop_rate, truncate_rate
        self.short_rate, self.corrupt_rate = short_rate, corrupt_rate
        self.max_faults = max_faults
        self.methods = {m.upper() for m in methods} if methods else None
        self.latency = float(latency or 0.0)
        self.frozen = threading.Event()  # set: every request waits, unanswered, until it is cleared
        self.frozen_methods = {"GET", "HEAD", "PUT", "POST", "DELETE"}  # ... of these methods
        self.bucket = TokenBucket(bandwidth) if bandwidth else None
        self.verbose = verbose
        self.host, self.port = host, port
        self.url = ""
        self._rng = random.Random(seed)  # exactly one draw per eligible request: the fault kinds
        self._pos_rng = random.Random(None if seed is None else seed ^ 0x5EED)  # where a body is damaged
        self._lock = threading.Lock()
        self._stats = {"requests": 0, "object_requests": 0, "forwarded": 0, "faults": 0, "fail": 0,
                       "drop": 0, "truncate": 0, "short": 0, "corrupt": 0, "upstream_errors": 0, "bytes": 0,
                       "refused": 0}
        self._traffic: dict[str, list[int]] = {}  # "METHOD kind" -> [requests, bytes_in, bytes_out]
        # lie(method, target, status, headers, body): None to pass the answer on, else (headers,
        # body) as sent instead; called first with body None (headers only), then, for a body of
        # at most 1 MiB, again with the whole body, whose Content-Length is then set anew
        self.lie = lie
        # refuse(method, target, headers): None to go on, else (status, S3 error code, message), sent
        # instead of forwarding (a store whose policy refuses the request)
        self.refuse = refuse
        # rewrite_request(method, target, headers): None, or a function that rewrites the whole
        # request body (read first; keep it small) before it is forwarded
        self.rewrite_request = rewrite_request
        self.agents: dict[str, int] = {}  # User-Agent product (its first word, before '/') -> requests
        self._conns: dict[socket.socket, threading.Thread] = {}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> "FaultProxy":
        self._server = _Server((self.host, self.port), _Handler, self)
        self.port = self._server.server_address[1]
        self.url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"faultproxy:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, end every open connection and wait for the handler threads."""
        srv, self._server = self._server, None
        if srv is None:
            return
        srv.shutdown()
        srv.server_close()
        with self._lock:
            conns = list(self._conns.items())
        for c, _ in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread:
            self._thread.join(timeout)
        deadline = time.monotonic() + timeout
        for t in {t for _, t in conns}:
            t.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- state -----------------------------------------------------------------------------------
    @property
    def stats(self) -> dict[str, int]:
        with self._lock:
            out = dict(self._stats)
            out["open_connections"] = len(self._conns)
            return out

    @property
    def traffic(self) -> dict[str, dict[str, int]]:
        """Per "METHOD kind" (kind: object, bucket, service): requests received, request-body
        bytes read from clients (bytes_in: uploads) and response-body bytes sent to them
        (bytes_out: downloads). Injected faults count as requests; a drained request body counts as
        bytes_in, the proxy's own 503/502 bodies are not bytes_out."""
        with self._lock:
            return {k: {"requests": v[0], "bytes_in": v[1], "bytes_out": v[2]} for k, v in self._traffic.items()}

    def reset_stats(self) -> None:
        with self._lock:
            for k in self._stats:
                self._stats[k] = 0
            self._traffic.clear()

    def set_rates(self, fail_rate: float | None = None, drop_rate: float | None = None,
                  truncate_rate: float | None = None, short_rate: float | None = None,
                  corrupt_rate: float | None = None, max_faults: int | None | str = "keep") -> None:
        """Change the fault rates (and the fault cap) of a running proxy: link gets worse or heals."""
        with self._lock:
            if max_faults != "keep":
                self.max_faults = max_faults
            if short_rate is not None:
                self.short_rate = short_rate
            if corrupt_rate is not None:
                self.corrupt_rate = corrupt_rate
            if fail_rate is not None:
                self.fail_rate = fail_rate
            if drop_rate is not None:
                self.drop_rate = drop_rate
            if truncate_rate is not None:
                self.truncate_rate = truncate_rate

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._conns[conn] = threading.current_thread()
            else:
                self._conns.pop(conn, None)

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._stats[name] = self._stats.get(name, 0) + n

    def _decide(self, method: str, is_object: bool) -> str | None:
        """None, or the kind of fault to inject into this request (one seeded draw per
        eligible request, so a run's fault sequence is reproducible)."""
        with self._lock:
            self._stats["requests"] += 1
            if not is_object:
                return None
            self._stats["object_requests"] += 1
            if self.methods is not None and method not in self.methods:
                return None
            bands = (("fail", self.fail_rate), ("drop", self.drop_rate), ("truncate", self.truncate_rate),
                     ("short", self.short_rate), ("corrupt", self.corrupt_rate))
            if not any(rate for _, rate in bands):
                return None
            r = self._rng.random()
            if self.max_faults is not None and self._stats["faults"] >= self.max_faults:
                return None
            kind = None
            edge = 0.0
            for name, rate in bands:
                edge += rate
                if r < edge:
                    kind = name
                    break
            if kind in ("truncate", "short", "corrupt") and method != "GET":
                kind = None  # body faults only on downloads
            if kind:
                self._stats[kind] += 1
                self._stats["faults"] += 1
            return kind

    def _refund(self, kind: str) -> None:
        with self._lock:
            self._stats[kind] -= 1
            self._stats["faults"] -= 1

    def _account(self, key: str, field: int, n: int) -> None:
        with self._lock:
            row = self._traffic.get(key)
            if row is None:
                row = self._traffic[key] = [0, 0, 0]
            row[field] += n

    def _uniform(self, a: float, b: float) -> float:
        with self._lock:
            return self._pos_rng.uniform(a, b)

    def _throttle(self, n: int) -> None:
        with self._lock:
            self._stats["bytes"] += n
        if self.bucket is not None:
            self.bucket.consume(n)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Fault-injecting, link-emulating HTTP reverse proxy for S3 endpoints.")
    ap.add_argument("--upstream", required=True, help="the S3 server, http://HOST:PORT")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    ap.add_argument("--fail-rate", type=float, default=0.0, help="probability of 503 SlowDown per object request")
    ap.add_argument("--drop-rate", type=float, default=0.0, help="probability of a reset connection per object request")
    ap.add_argument("--truncate-rate", type=float, default=0.0,
                    help="probability of a GET reset in the middle of its body")
    ap.add_argument("--short-rate", type=float, default=0.0,
                    help="probability of a GET answered with a well-formed but shorter body (Content-Length lowered)")
    ap.add_argument("--corrupt-rate", type=float, default=0.0,
                    help="probability of a GET with one byte of its body changed (length unchanged)")
    ap.add_argument("--max-faults", type=int, default=None, help="stop injecting after this many faults")
    ap.add_argument("--seed", type=int, default=0, help="random seed (reproducible fault sequence)")
    ap.add_argument("--methods", default="", help="comma-separated methods eligible for faults (default: all)")
    ap.add_argument("--bandwidth", type=float, default=None, help="bytes/s shared by all connections, both directions")
    ap.add_argument("--latency", type=float, default=0.0, help="seconds added to each request before forwarding")
    ap.add_argument("--verbose", action="store_true", help="log every request to stderr")
    a = ap.parse_args(argv)
    proxy = FaultProxy(a.upstream, fail_rate=a.fail_rate, drop_rate=a.drop_rate, truncate_rate=a.truncate_rate,
                       short_rate=a.short_rate, corrupt_rate=a.corrupt_rate,
                       max_faults=a.max_faults, seed=a.seed, bandwidth=a.bandwidth, latency=a.latency,
                       port=a.port, host=a.host, verbose=a.verbose,
                       methods={m.strip() for m in a.methods.split(",") if m.strip()} or None)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    proxy.start()
    print(f"listening on {proxy.url} -> {a.upstream}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        proxy.stop()
        print(json.dumps(proxy.stats), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
