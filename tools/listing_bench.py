#!/usr/bin/env python3
"""CPU cost of listing N keys through botocore, without an S3 server (issue 16 item 2).

Two measurements, both of the client's CPU only (time.process_time of this process):

  parse   botocore's own parse of N/1000 canned ListBucketResult pages (the s3 model's output
          shape, RestXMLParser, as the suite's client configures it: timestamps not parsed),
          plus botocore's after-call URL decoding of the keys; and the fast parse
          (s5jtransfer.listing) of the same pages.
  client  s3.iter_objects through s3.client() against a tiny local HTTP server (another
          process, so its CPU is not counted) that answers ListObjectsV2 / ListObjects pages of
          1,000 keys: signing, sending, urllib3, parsing and the paginator; with the fast parse
          (as shipped) and without it (botocore's parser alone).

Pages look like S3's: XML-escaped ETags, LastModified, StorageClass, checksum fields (v2),
Owner (v1), keys URL-encoded since botocore asks for encoding-type=url.

    .venv/bin/python tools/listing_bench.py --keys 1000000
    .venv/bin/python tools/listing_bench.py --keys 1000000 --only parse
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PAGE = 1000
NS = "http://s3.amazonaws.com/doc/2006-03-01/"
PREFIX = "survey/"


def key(i: int) -> str:
    return f"{PREFIX}site-{i % 997:03d}/day-{i % 31:02d}/object-{i:09d}.bin"


def index_of(k: str) -> int:
    return int(k[-13:-4])


def etag(i: int) -> str:
    return f"{(i * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF:016x}{i:016x}"


def _enc(k: str) -> str:
    return urllib.parse.quote_plus(k, safe="/")  # as S3 answers with encoding-type=url


def page_xml(start: int, n: int, v2: bool, url: bool, token: str | None = None, marker: str | None = None) -> bytes:
    end = min(n, start + PAGE)
    truncated = end < n
    esc = _enc if url else (lambda s: s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))
    out = ['<?xml version="1.0" encoding="UTF-8"?>\n', f'<ListBucketResult xmlns="{NS}">',
           f"<Name>bucket</Name><Prefix>{esc(PREFIX)}</Prefix>"]
    if v2:
        out.append(f"<KeyCount>{end - start}</KeyCount><MaxKeys>{PAGE}</MaxKeys>")
        if url:
            out.append("<EncodingType>url</EncodingType>")
        out.append(f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>")
        if token:
            out.append(f"<ContinuationToken>{token}</ContinuationToken>")
        if truncated:
            out.append(f"<NextContinuationToken>{end:x}-token-1Ez2XaQ3c4yGk5</NextContinuationToken>")
    else:
        out.append(f"<Marker>{esc(marker or '')}</Marker><MaxKeys>{PAGE}</MaxKeys>")
        if url:
            out.append("<EncodingType>url</EncodingType>")
        out.append(f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>")
    for i in range(start, end):
        out.append(f"<Contents><Key>{esc(key(i))}</Key><LastModified>2026-11-30T12:{i % 60:02d}:07.000Z</LastModified>"
                   f"<ETag>&quot;{etag(i)}&quot;</ETag>")
        if v2:
            out.append("<ChecksumAlgorithm>CRC64NVME</ChecksumAlgorithm><ChecksumType>FULL_OBJECT</ChecksumType>")
        out.append(f"<Size>{(i * 7919) % 50_000_000}</Size>")
        if not v2:
            out.append("<Owner><ID>75aa57f09aa0c8caeab4f8c24e99d10f8e7faeebf76c078efc7c6caea54ba06a</ID>"
                       "<DisplayName>operator</DisplayName></Owner>")
        out.append("<StorageClass>STANDARD</StorageClass></Contents>")
    out.append("</ListBucketResult>")
    return "".join(out).encode()


# -- the canned server (run in its own process) -------------------------------------------------

def serve(port_file: str, n: int) -> None:
    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):  # quiet
            pass

        def do_HEAD(self):
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self):
            q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query, keep_blank_values=True)
            url = q.get("encoding-type", [""])[0] == "url"
            if q.get("list-type", [""])[0] == "2":
                token = q.get("continuation-token", [None])[0]
                start = int(token.split("-")[0], 16) if token else 0
                body = page_xml(start, n, True, url, token=token)
            else:
                marker = q.get("marker", [""])[0]
                start = index_of(marker) + 1 if marker else 0
                body = page_xml(start, n, False, url, marker=marker)
            self.send_response(200)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    Path(port_file).write_text(str(srv.server_address[1]))
    srv.serve_forever()


# -- measurements -------------------------------------------------------------------------------

def _botocore_parse(op: str):
    """(parse(page bytes) -> dict, botocore's after-call decoding) as the suite's client does."""
    import botocore.parsers
    import botocore.session
    from botocore import handlers

    sess = botocore.session.get_session()
    model = sess.get_service_model("s3").operation_model(op)
    factory = botocore.parsers.ResponseParserFactory()
    factory.set_parser_defaults(timestamp_parser=str)
    parser = factory.create_parser("rest-xml")
    decode = handlers.decode_list_object_v2 if op == "ListObjectsV2" else handlers.decode_list_object

    def parse(body: bytes) -> dict:
        parsed = parser.parse({"body": body, "headers": {}, "status_code": 200}, model.output_shape)
        decode(parsed=parsed, context={"encoding_type_auto_set": True})
        return parsed

    return parse


def measure_parse(n: int, op: str) -> dict:
    from s5jtransfer import listing

    v2 = op == "ListObjectsV2"
    pages = [page_xml(s, n, v2, True, token=f"{s:x}-t" if s else None, marker=key(s - 1) if s else None)
             for s in range(0, min(n, 20 * PAGE), PAGE)]  # 20 distinct pages, reused
    reps = max(1, n // (len(pages) * PAGE))
    parse = _botocore_parse(op)
    res = {}
    for name, fn in (("botocore", lambda b: [(c["Key"], c["Size"], c["ETag"]) for c in parse(b).get("Contents", ())]),
                     ("fast", lambda b: listing.parse_page(b, op)[0])):
        got = [fn(b) for b in pages]
        c0 = time.process_time()
        for _ in range(reps):
            for b in pages:
                fn(b)
        res[name] = round((time.process_time() - c0) * 1_000_000 / (reps * len(pages) * PAGE), 3)
        res[name + "_first_page"] = got[0][:2]
    # same keys, sizes and ETags both ways (botocore keeps the quotes on an ETag)
    assert [[(k, int(s), e.strip('"')) for k, s, e in p] for p in
            [[(c["Key"], c["Size"], c["ETag"]) for c in parse(b).get("Contents", ())] for b in pages]] == \
           [[(k, s, e) for k, s, e in listing.parse_page(b, op)[0]] for b in pages]
    return {"op": op, "keys_parsed": reps * len(pages) * PAGE, "s_per_1M_keys": {k: v for k, v in res.items() if "first" not in k}}


def measure_client(n: int, snow: bool, fast: bool) -> dict:
    from s5jtransfer import listing, s3
    from s5jtransfer.config import Secret, Side

    port_file = f"/tmp/listing_bench_port_{os.getpid()}"
    srv = subprocess.Popen([sys.executable, __file__, "--serve", port_file, "--keys", str(n)])
    try:
        for _ in range(100):
            if os.path.exists(port_file) and Path(port_file).read_text():
                break
            time.sleep(0.05)
        port = int(Path(port_file).read_text())
        side = Side("source", "bucket", PREFIX, "snow" if snow else "us-east-1", Secret("AKIAEXAMPLE"),
                    Secret("secret"), (f"http://127.0.0.1:{port}",))
        saved = listing.ENABLED
        listing.ENABLED = fast
        try:
            c0 = time.process_time()
            cl = s3.client(side)
            c1, w1 = time.process_time(), time.perf_counter()
            count = 0
            for o in s3.iter_objects(side, cl):
                count += 1
            c2, w2 = time.process_time(), time.perf_counter()
            assert o.key == key(n - 1)[len(PREFIX):], o
        finally:
            listing.ENABLED = saved
        return {"op": "ListObjects" if snow else "ListObjectsV2", "fast_parse": fast, "keys": count,
                "client_setup_cpu_s": round(c1 - c0, 3), "list_cpu_s": round(c2 - c1, 3),
                "list_wall_s": round(w2 - w1, 3), "s_per_1M_keys": round((c2 - c1) * 1_000_000 / count, 3)}
    finally:
        srv.terminate()
        srv.wait()
        try:
            os.unlink(port_file)
        except OSError:
            pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--only", choices=("parse", "client"))
    ap.add_argument("--serve", metavar="PORT_FILE", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve:
        serve(a.serve, a.keys)
        return 0
    if a.only in (None, "parse"):
        for op in ("ListObjectsV2", "ListObjects"):
            print(json.dumps({"measure": "parse", **measure_parse(a.keys, op)}), flush=True)
    if a.only in (None, "client"):
        for snow in (False, True):
            for fast in (False, True):
                print(json.dumps({"measure": "client", **measure_client(a.keys, snow, fast)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
