"""Stores as operators have them, in front of moto: callbacks for tests/faultproxy.py.

moto keeps every ETag an MD5 and enforces no bucket policy. A `Front` in a FaultProxy makes one
bucket behave like a real one:

- `kms`: SSE-KMS (default encryption, or uploads asking for it): every ETag the bucket answers is
  no MD5 of the data (AWS documents this for SSE-KMS, DSSE-KMS and SSE-C), in object answers,
  listings, UploadPart and CompleteMultipartUpload alike, and (with `kms_header`) object answers
  carry `x-amz-server-side-encryption: aws:kms`, as AWS's do. The part ETags a client sends back
  in CompleteMultipartUpload are mapped back to moto's. Checksums (x-amz-checksum-*) pass through.
- `require`: a bucket policy that denies PutObject and CreateMultipartUpload without these
  request headers (403 AccessDenied), e.g. {"x-amz-server-side-encryption": "aws:kms"}.
- `deny_code`: the S3 error code of that denial (KMS.DisabledException for a disabled key).

`requests` records (method, target, headers) of every request to the bucket.
"""

from __future__ import annotations

import hashlib
import re
import threading
import urllib.parse

_ETAG_XML = re.compile(rb"<ETag>(&quot;|\")?([0-9a-f]{32})(-\d+)?(&quot;|\")?</ETag>")


def fake(etag: str) -> str:
    """The ETag the store shows instead of moto's: 32 hex digits (as an SSE-KMS ETag looks), no MD5
    of anything the client has."""
    core, _, parts = etag.strip('"').partition("-")
    return hashlib.md5(b"kms-etag:" + core.encode()).hexdigest() + (f"-{parts}" if parts else "")


class Front:
    def __init__(self, bucket: str, kms: bool = False, kms_header: bool = True,
                 require: dict[str, str] | None = None, deny_code: str = "AccessDenied") -> None:
        self.bucket = bucket
        self.kms = kms
        self.kms_header = kms_header
        self.require = {k.lower(): v for k, v in (require or {}).items()}
        self.deny_code = deny_code
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self._real: dict[str, str] = {}  # fake part ETag -> moto's
        self._lock = threading.Lock()

    def proxy_args(self) -> dict:
        return {"lie": self.lie, "refuse": self.refuse, "rewrite_request": self.rewrite_request}

    def _ours(self, target: str) -> bool:
        path = urllib.parse.urlsplit(target).path
        return path == f"/{self.bucket}" or path.startswith(f"/{self.bucket}/")

    # -- requests --------------------------------------------------------------------------
    def refuse(self, method: str, target: str, headers) -> tuple[int, str, str] | None:
        if not self._ours(target):
            return None
        with self._lock:
            self.requests.append((method, target, {k.lower(): v for k, v in headers.items()}))
        query = urllib.parse.urlsplit(target).query
        creates = (method == "PUT" and "uploadId=" not in query and "/" in urllib.parse.urlsplit(target).path[1:]) \
            or (method == "POST" and query.startswith("uploads"))
        if creates and any(headers.get(k) != v for k, v in self.require.items()):
            return 403, self.deny_code, "Access Denied by the bucket policy"
        return None

    def rewrite_request(self, method: str, target: str, headers):
        if not (self.kms and self._ours(target) and method == "POST" and "uploadId=" in target):
            return None

        def back(body: bytes) -> bytes:  # CompleteMultipartUpload: the part ETags moto gave
            with self._lock:
                real = dict(self._real)
            return re.sub(rb"[0-9a-f]{32}", lambda m: real.get(m.group(0).decode(), m.group(0).decode()).encode(),
                          body)
        return back

    # -- answers ---------------------------------------------------------------------------
    def lie(self, method: str, target: str, status: int, headers, body):
        if not (self.kms and self._ours(target) and 200 <= status < 300):
            return None
        path = urllib.parse.urlsplit(target).path
        is_object = "/" in path[1:]
        out = []
        for k, v in headers:
            if k.lower() == "etag" and v.strip('"'):
                f = fake(v)
                if "partNumber=" in target and "uploadId=" in target:
                    with self._lock:
                        self._real[f] = v.strip('"')
                v = f'"{f}"'
            out.append((k, v))
        if is_object and self.kms_header and not any(k.lower() == "x-amz-server-side-encryption" for k, _ in out):
            out.append(("x-amz-server-side-encryption", "aws:kms"))
        listing_or_complete = (method == "GET" and not is_object) or (method == "POST" and "uploadId=" in target)
        if body is None:
            return out, (b"" if listing_or_complete else None)
        if listing_or_complete:
            body = _ETAG_XML.sub(lambda m: b"<ETag>&quot;" + fake((m.group(2) + (m.group(3) or b"")).decode()).encode()
                                 + b"&quot;</ETag>", body)
        return out, body
