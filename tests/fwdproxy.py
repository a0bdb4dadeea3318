"""A tiny forward HTTP proxy for tests: absolute-URI requests, a host map, request counts by client."""

from __future__ import annotations

import collections
import http.client
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ForwardProxy:
    """HTTP_PROXY/HTTPS_PROXY target. `hosts` maps a host name (which need not resolve) to the
    real (host, port), so a client only reaches the mapped server if it really uses the proxy."""

    def __init__(self, hosts: dict[str, tuple[str, int]]) -> None:
        self.hosts = hosts
        self.by_agent: collections.Counter = collections.Counter()
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _forward(self) -> None:
                u = urllib.parse.urlsplit(self.path)
                if not u.scheme or u.hostname not in proxy.hosts:
                    self.send_error(502, "unknown host")
                    return
                agent = self.headers.get("User-Agent", "").split("/")[0].split(" ")[0]
                with proxy._lock:
                    proxy.by_agent[agent] += 1
                length = int(self.headers.get("Content-Length") or 0)
                if self.headers.get("Expect", "").lower() == "100-continue":
                    self.send_response_only(100)
                    self.end_headers()
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    parts = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            break
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                    body = b"".join(parts)
                else:
                    body = self.rfile.read(length) if length else None
                host, port = proxy.hosts[u.hostname]
                conn = http.client.HTTPConnection(host, port, timeout=60)
                path = u.path + ("?" + u.query if u.query else "")
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("proxy-connection", "connection", "expect", "keep-alive", "host",
                                                "transfer-encoding", "content-length")}
                if body is not None:
                    headers["Content-Length"] = str(len(body))
                headers["Host"] = f"{host}:{port}"  # the server behind the made-up name
                conn.request(self.command, path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                # a HEAD answer has no body but tells the object's length
                self.send_header("Content-Length", resp.getheader("Content-Length", "0") if self.command == "HEAD"
                                 else str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> "ForwardProxy":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
