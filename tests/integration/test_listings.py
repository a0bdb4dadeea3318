"""Listings as a Snowball gives them: ListObjects v1, keys in no order (not within a page, not
across pages), pages with markers of its own; and one full listing of the source per pass."""

from __future__ import annotations

import json
import random
import threading
import urllib.parse
from xml.sax.saxutils import escape

from faultproxy import FaultProxy

PAGE = 7  # keys per page the fake Snowball answers, whatever MaxKeys asks


class UnsortedSnowball:
    """Answers the source bucket's ListObjects (v1) itself: every key under the prefix (read from
    the real store at the listing's first page), shuffled, served PAGE at a time with NextMarker
    tokens of its own. Counts the full listings (first pages) it answered."""

    def __init__(self, work, seed: int = 7) -> None:
        self.work = work
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.full_listings = 0
        self.pages = 0
        self._snapshot: list[dict] = []

    def _contents(self, prefix: str) -> list[dict]:
        client = self.work.server.client()
        out = []
        for page in client.get_paginator("list_objects").paginate(Bucket=self.work.src, Prefix=prefix):
            out.extend(page.get("Contents", []))
        self.rng.shuffle(out)
        return out

    def lie(self, method: str, target: str, status: int, headers, body):
        parts = urllib.parse.urlsplit(target)
        query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
        if method != "GET" or parts.path.strip("/") != self.work.src or "list-type" in query or status != 200 \
                or "max-keys" in query and query["max-keys"] == ["1"]:
            return None  # not a full v1 listing of the source (list_one asks for one key)
        if body is None:
            return headers, b""  # ask for the body: the answer is rewritten
        prefix = query.get("prefix", [""])[0]
        marker = query.get("marker", [""])[0]
        with self.lock:
            if not marker:
                self.full_listings += 1
                self._snapshot = self._contents(prefix)
            start = int(marker[1:]) if marker.startswith("p") else 0
            page = self._snapshot[start:start + PAGE]
            self.pages += 1
        truncated = start + PAGE < len(self._snapshot)
        items = "".join(
            f"<Contents><Key>{escape(c['Key'])}</Key><LastModified>{c['LastModified'].strftime('%Y-%m-%dT%H:%M:%S.000Z')}"
            f"</LastModified><ETag>&quot;{c['ETag'].strip(chr(34))}&quot;</ETag><Size>{c['Size']}</Size>"
            "<StorageClass>STANDARD</StorageClass></Contents>" for c in page)
        xml = ('<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
               f"<Name>{self.work.src}</Name><Prefix>{escape(prefix)}</Prefix><Marker>{escape(marker)}</Marker>"
               f"<MaxKeys>1000</MaxKeys><IsTruncated>{'true' if truncated else 'false'}</IsTruncated>"
               + (f"<NextMarker>p{start + PAGE}</NextMarker>" if truncated else "") + items + "</ListBucketResult>")
        return [(k, v) for k, v in headers if k.lower() != "content-type"] + [("Content-Type", "application/xml")], \
            xml.encode()


def test_a_snowball_listing_in_no_order_moves_everything_with_one_listing_per_pass(work):
    data = {f"{name}-{i:02d}.bin": bytes([i]) * (100 + 37 * i)
            for i, name in enumerate(["zeta", "alpha", "mid/dle", "Alpha", "a,b", "ünï", "z", "0"] * 6)}
    work.put_all(data)
    snow = UnsortedSnowball(work)
    with FaultProxy(work.server.url, lie=snow.lie) as link:
        work.cfg["source"]["region"] = "snow"
        work.cfg["transfer_settings"]["src_endpoint_url"] = link.url
        work.write_config()
        r = work.run("sync_mvol.py", "--once", timeout=180)
        assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
        # a pass's listing, the one that finds nothing new, and the final comparison's
        assert 1 <= snow.full_listings <= 3, snow.full_listings
        assert snow.pages >= snow.full_listings * (len(data) // PAGE)  # every listing went through the pages
        listed = snow.full_listings
        r = work.run("repair_ledger.py", timeout=120)
        assert r.returncode == 0 and "COMPLETE" in r.stdout, r.stdout + r.stderr
        assert snow.full_listings == listed + 1
    for key, body in data.items():
        assert work.dest_bytes(key) == body
    assert work.ledger_lines() == len(data) + 1 and work.ledger_lines("dest_ledger.csv") == len(data) + 1
    report = json.loads((work.path / "transfer_report.json").read_text())
    assert report["complete"] is True
