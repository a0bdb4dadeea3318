"""Unit tests for s5jtransfer.listing: the fast parse of listing pages reads what botocore reads.

Pages are canned (no server): parse_page against botocore's own parser and its after-call URL
decoding, and s3.iter_objects through a real botocore client whose 'before-send' hands back
the canned pages (so signing, the handlers, the paginator and retries are botocore's)."""

from __future__ import annotations

import urllib.parse

import pytest

from s5jtransfer import listing

NS = "http://s3.amazonaws.com/doc/2006-03-01/"

HOSTILE_KEYS = [
    "plain/key.txt",
    "with,comma,s",
    'double"quote"s',
    "single'quote",
    "amp&ersand && &amp; literal",
    "less<than>greater <Key> </Key> <Contents>",
    "unicode/äöü/日本語/😀.bin",
    " leading space",
    "trailing space ",
    "  both  ",
    "tab\there",
    "carriage\rreturn",
    "line\nfeed",
    "crlf\r\nkey\n",
    "folder/",
    "data-folder-with-bytes/",
    "plus+sign and%percent%2Fencoded",
    "100%25 not decoded%0A",
    "question?mark!bang]]>brackets",
    "<![CDATA[not cdata]]>",
    "<!-- not a comment -->",
    "&#x41; literal reference text",
    "\u2028line separator\u2029",
    "\ufeffbom-in-key",
    "\uf8ffprivate-use",
    "x" * 1000,
    "a/../b/./c//d",
    "~tilde*star(paren)",
]


def esc_xml(s: str, cr_as_ref: bool = True) -> str:
    """As S3 escapes a key in XML (without encoding-type=url)."""
    out = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    if cr_as_ref:
        out = out.replace("\r", "&#xD;")
    return out


def page(keys, v2=True, url=True, truncated=False, token=None, marker=None, etags=None, extra="", sizes=None):
    enc = (lambda s: urllib.parse.quote_plus(s, safe="/")) if url else esc_xml
    out = [f'<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns="{NS}"><Name>b</Name><Prefix></Prefix>']
    if v2:
        out.append(f"<KeyCount>{len(keys)}</KeyCount><MaxKeys>1000</MaxKeys>")
    else:
        out.append(f"<Marker>{enc(marker or '')}</Marker><MaxKeys>1000</MaxKeys>")
    if url:
        out.append("<EncodingType>url</EncodingType>")
    out.append(f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>")
    if v2 and truncated:
        out.append(f"<NextContinuationToken>{token}</NextContinuationToken>")
    for i, k in enumerate(keys):
        etag = etags[i] if etags else f"&quot;{i:032x}&quot;"
        size = sizes[i] if sizes else i * 10
        out.append(f"<Contents><Key>{enc(k)}</Key><LastModified>2026-11-30T12:00:00.000Z</LastModified>"
                   f"<ETag>{etag}</ETag>{'<ChecksumAlgorithm>CRC32</ChecksumAlgorithm>' if v2 else ''}"
                   f"<Size>{size}</Size>"
                   f"{'' if v2 else '<Owner><ID>abc</ID><DisplayName>me</DisplayName></Owner>'}"
                   f"<StorageClass>STANDARD</StorageClass></Contents>")
    out.append(extra)
    out.append("</ListBucketResult>")
    return "".join(out).encode()


def botocore_parse(body: bytes, op: str = "ListObjectsV2") -> dict:
    import botocore.parsers
    import botocore.session
    from botocore import handlers

    model = botocore.session.get_session().get_service_model("s3").operation_model(op)
    factory = botocore.parsers.ResponseParserFactory()
    factory.set_parser_defaults(timestamp_parser=str)
    parsed = factory.create_parser("rest-xml").parse({"body": body, "headers": {}, "status_code": 200},
                                                      model.output_shape)
    (handlers.decode_list_object_v2 if op == "ListObjectsV2" else handlers.decode_list_object)(
        parsed=parsed, context={"encoding_type_auto_set": True})
    return parsed


def objects(parsed: dict):
    """(key, size, ETag, checksum) as botocore read them: the first named checksum algorithm, unless
    the checksum is of the parts (COMPOSITE)."""
    return [(c["Key"], int(c["Size"]), c.get("ETag", "").strip('"'),
             "" if c.get("ChecksumType") == "COMPOSITE" else (c.get("ChecksumAlgorithm") or [""])[0])
            for c in parsed.get("Contents", ())]


def meta(parsed: dict):
    return {k: v for k, v in parsed.items() if k not in ("Contents", "ResponseMetadata")}


@pytest.mark.parametrize("op", ["ListObjectsV2", "ListObjects"])
@pytest.mark.parametrize("url", [True, False])
def test_hostile_keys_parse_as_botocore_parses_them(op, url):
    keys = HOSTILE_KEYS if url else [k for k in HOSTILE_KEYS]
    body = page(keys, v2=op == "ListObjectsV2", url=url, truncated=True, token="tok&amp;en")
    want = botocore_parse(body, op)
    got = listing.parse_page(body, op)
    assert got is not None
    objs, stripped = got
    assert objs == objects(want)
    assert [o[0] for o in objs] == keys  # the keys themselves, exactly
    rest = botocore_parse(stripped, op)
    assert meta(rest) == meta(want)  # the page's other fields: botocore reads them from the rest
    assert objects(rest) == objects(want)[-1:]  # and the last object, for ListObjects' next marker


def test_a_literal_tab_and_lf_in_xml_text_are_kept():
    body = page(["a"], url=False).replace(b"<Key>a</Key>", b"<Key>x\ty\nz</Key>")
    assert listing.parse_page(body)[0] == objects(botocore_parse(body)) == [("x\ty\nz", 0, "0" * 32, "CRC32")]


@pytest.mark.parametrize("etag,want", [
    ("&quot;abc&quot;", "abc"), ("abc", "abc"), ("&quot;&quot;", ""), ('"abc"', "abc"),
    ("&quot;abc-12&quot;", "abc-12"), ("&quot;&quot;x&quot;&quot;", "x"), ("&quot;a&amp;b&quot;", "a&b"),
    ("&#34;abc&#x22;", "abc"), ("", ""), ("&quot;", ""),
])
def test_etags_as_botocore_reads_them(etag, want):
    body = page(["k"], etags=[etag])
    assert listing.parse_page(body)[0] == objects(botocore_parse(body)) == [("k", 0, want, "CRC32")]


def test_an_object_without_etag_has_an_empty_one():
    body = page(["a", "b"]).replace(b"<ETag>&quot;00000000000000000000000000000001&quot;</ETag>", b"")
    assert listing.parse_page(body)[0] == objects(botocore_parse(body)) == [("a", 0, "0" * 32, "CRC32"), ("b", 10, "", "CRC32")]


def test_sizes_beyond_32_bits_and_whitespace_around_them():
    body = page(["a", "b"], sizes=[5 * 1024 ** 4, " 7 "])
    assert listing.parse_page(body)[0] == objects(botocore_parse(body)) == [("a", 5 * 1024 ** 4, "0" * 32, "CRC32"),
                                                                             ("b", 7, "1".zfill(32), "CRC32")]


def test_whitespace_between_contents_is_allowed():
    body = page(["a", "b"]).replace(b"</Contents><Contents>", b"</Contents>\n  <Contents>")
    assert listing.parse_page(body)[0] == objects(botocore_parse(body))


UNEXPECTED = {
    "error document": b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code></Error>',
    "no objects": page([]),
    "comment": page(["a"], extra="<!-- <Contents><Key>x</Key><Size>1</Size></Contents> -->"),
    "cdata key": page(["a"]).replace(b"<Key>a</Key>", b"<Key><![CDATA[a&b]]></Key>"),
    "doctype": b"<!DOCTYPE x [<!ENTITY e 'v'>]>" + page(["a"]).split(b"\n", 1)[1],
    "processing instruction": page(["a"], extra="<?pi x?>"),
    "undefined entity": page(["a"]).replace(b"<Key>a</Key>", b"<Key>a&nbsp;</Key>"),
    "undefined entity elsewhere": page(["a", "b"]).replace(b"<DisplayName>", b"<DisplayName>&x;")
    .replace(b"<StorageClass>STANDARD</StorageClass></Contents><Contents>",
             b"<StorageClass>&nbsp;</StorageClass></Contents><Contents>", 1),
    "bare ampersand": page(["a"]).replace(b"<Key>a</Key>", b"<Key>a&b</Key>"),
    "forbidden character reference": page(["a"]).replace(b"<Key>a</Key>", b"<Key>a&#x0;</Key>"),
    "control character reference": page(["a"], url=False).replace(b"<Key>a</Key>", b"<Key>a&#1;</Key>"),
    "uppercase X reference": page(["a"]).replace(b"<Key>a</Key>", b"<Key>a&#X41;</Key>"),
    "literal control character": page(["a"]).replace(b"<Key>a</Key>", b"<Key>a\x01</Key>"),
    "literal CR": page(["a"]).replace(b"<Key>a</Key>", b"<Key>a\rb</Key>"),
    "U+FFFE": page(["a"]).replace(b"<Key>a</Key>", "<Key>a\ufffe</Key>".encode()),
    "invalid UTF-8": page(["a"]).replace(b"<Key>a</Key>", b"<Key>a\xff</Key>"),
    "namespace prefix": page(["a"]).replace(b"<Contents>", b"<s3:Contents>").replace(b"</Contents>", b"</s3:Contents>"),
    "attribute on Key": page(["a"]).replace(b"<Key>a</Key>", b'<Key id="1">a</Key>'),
    "indented Contents": page(["a"]).replace(b"<Contents><Key>", b"<Contents>\n  <Key>"),
    "Key not first": page(["a"]).replace(b"<Contents><Key>a</Key>", b"<Contents><StorageClass>X</StorageClass><Key>a</Key>"),
    "two Sizes": page(["a"]).replace(b"<Size>0</Size>", b"<Size>0</Size><Size>1</Size>"),
    "nested Size": page(["a"]).replace(b"<LastModified>", b"<Owner><Size>9</Size></Owner><LastModified>"),
    "missing Size": page(["a"]).replace(b"<Size>0</Size>", b""),
    "element in Key": page(["a"]).replace(b"<Key>a</Key>", b"<Key>a<b/>c</Key>"),
    "not a number": page(["a"]).replace(b"<Size>0</Size>", b"<Size>zero</Size>"),
    "contents after the end": page(["a"], extra="<CommonPrefixes><Prefix>p/</Prefix></CommonPrefixes><Contents><Key>z</Key></Contents>"),
    "another root": page(["a"]).replace(b"ListBucketResult", b"ListVersionsResult"),
}


@pytest.mark.parametrize("name", sorted(UNEXPECTED))
def test_unexpected_pages_are_left_to_botocore(name):
    assert listing.parse_page(UNEXPECTED[name]) is None


def test_other_operations_and_bodies_are_left_alone():
    body = page(["a"])
    assert listing.parse_page(body, "ListObjectVersions") is None
    assert listing.parse_page(None) is None
    assert listing.parse_page(body)[0] == [("a", 0, "0" * 32, "CRC32")]


# --- through a botocore client ------------------------------------------------------------------

class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_kw):
        yield self.body


def canned_client(keys, v2=True, per_page=3, error_first=False):
    """A real botocore client whose requests are answered from `keys` (no network): pages of
    per_page keys, URL-encoded as botocore asks. Records the requests it answered."""
    import boto3
    import botocore.config
    from botocore.awsrequest import AWSResponse

    client = boto3.client("s3", region_name="us-east-1", aws_access_key_id="AKIDEXAMPLE",
                          aws_secret_access_key="secret", endpoint_url="http://127.0.0.1:1",
                          config=botocore.config.Config(s3={"addressing_style": "path"},
                                                        retries={"mode": "standard", "max_attempts": 3}))
    seen = []

    def answer(request, **_kw):
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(request.url).query, keep_blank_values=True)
        seen.append(q)
        if error_first and len(seen) == 1:
            body = b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code><Message>x</Message></Error>'
            return AWSResponse(request.url, 200, {}, _Raw(body))
        url = q.get("encoding-type", [""])[0] == "url"
        max_keys = int(q.get("max-keys", ["1000"])[0])
        n = min(per_page, max_keys)
        if "continuation-token" in q:
            start = int(q["continuation-token"][0][1:])
        elif q.get("marker", [""])[0]:
            start = keys.index(q["marker"][0]) + 1
        else:
            start = 0
        chunk = keys[start:start + n]
        end = start + len(chunk)
        body = page(chunk, v2=v2, url=url, truncated=end < len(keys), token=f"t{end}",
                    marker=q.get("marker", [""])[0])
        return AWSResponse(request.url, 200, {}, _Raw(body))

    client.meta.events.register("before-send.s3", answer)
    return client, seen


def side_for(prefix="", snow=False):
    from s5jtransfer.config import Secret, Side

    return Side("source", "b", prefix, "snow" if snow else "us-east-1", Secret(""), Secret(""), ())


@pytest.mark.parametrize("snow", [False, True])
@pytest.mark.parametrize("fast", [True, False])
def test_iter_objects_lists_every_hostile_key_through_botocore(monkeypatch, snow, fast):
    from s5jtransfer import s3

    monkeypatch.setattr(listing, "ENABLED", fast)
    parsed = []
    real = listing.parse_page
    monkeypatch.setattr(listing, "parse_page", lambda *a: parsed.append(real(*a)) or parsed[-1])
    keys = sorted(HOSTILE_KEYS + ["folder-marker/", "zzz"])
    client, seen = canned_client(keys, v2=not snow)
    got = list(s3.iter_objects(side_for(snow=snow), client))
    assert len(parsed) == (len(seen) if fast else 0) and None not in parsed  # every page the fast way
    # folder markers (zero bytes, ending in '/') are skipped; page i's object j has size j * 10
    want = [(k, (i % 3) * 10) for i, k in enumerate(keys) if not (k.endswith("/") and i % 3 == 0)]
    assert [(o.key, o.size) for o in got] == want
    assert len(seen) == -(-len(keys) // 3)
    if snow:
        assert all("list-type" not in q for q in seen) and seen[-1]["marker"] == [keys[-4]]


def test_the_fast_parse_acts_only_inside_iter_objects():
    from s5jtransfer import s3

    client, _ = canned_client(["a", "b", "c", "d"], per_page=2)
    objs = s3.iter_objects(side_for(), client)
    assert next(objs).key == "a"
    # a listing made otherwise through the same client (list_one's pages...) is botocore's alone,
    # also while a listing through it is under way
    page_ = client.list_objects_v2(Bucket="b", Prefix="")
    assert listing.FAST not in page_ and [c["Key"] for c in page_["Contents"]] == ["a", "b"]
    assert [o.key for o in objs] == ["b", "c", "d"]
    page_ = client.list_objects_v2(Bucket="b", Prefix="")
    assert listing.FAST not in page_ and [c["Key"] for c in page_["Contents"]] == ["a", "b"]


def test_a_200_answer_holding_an_error_is_still_retried():
    from s5jtransfer import s3

    client, seen = canned_client(["a", "b"], per_page=5, error_first=True)
    assert [o.key for o in s3.iter_objects(side_for(), client)] == ["a", "b"]
    assert len(seen) == 2  # botocore's check for an error inside a 200 answer still runs


def test_register_runs_before_botocores_200_check_once():
    from botocore import handlers

    client, _ = canned_client(["a"])
    listing.register(client)
    listing.register(client)
    found = client.meta.events._emitter._handlers.prefix_search("before-parse.s3.ListObjectsV2")  # noqa: SLF001
    names = [getattr(h, "__name__", "") for h in found]
    assert names.index("_before_parse") < names.index(handlers._handle_200_error.__name__)  # noqa: SLF001
    assert names.count("_before_parse") == 1 and names.count("_handle_200_error") == 1


def test_a_page_the_two_parses_disagree_on_is_botocores(monkeypatch, caplog):
    """A guard: botocore also reads each page's last object; should the fast parse ever read it
    otherwise, the page is parsed again by botocore, whole, and a warning says so."""
    from s5jtransfer import s3

    real = listing.parse_page

    def wrong(body, op="ListObjectsV2"):
        got = real(body, op)
        return got and ([(k + "?", s, e, c) for k, s, e, c in got[0]], got[1])

    monkeypatch.setattr(listing, "parse_page", wrong)
    client, _ = canned_client(["a", "b", "c"], per_page=2)
    with caplog.at_level("WARNING"):
        assert [o.key for o in s3.iter_objects(side_for(), client)] == ["a", "b", "c"]
    assert "disagrees with botocore" in caplog.text


def test_botocore_parse_is_the_reference_parse():
    body = page(HOSTILE_KEYS, truncated=True, token="t")
    assert objects(listing.botocore_parse(body, "ListObjectsV2")) == objects(botocore_parse(body))


def test_encoding_type_after_the_objects_is_read_too():
    """moto answers <EncodingType> after the <Contents> elements."""
    body = page(HOSTILE_KEYS).replace(b"<EncodingType>url</EncodingType>", b"")
    body = body.replace(b"</ListBucketResult>", b"<EncodingType>url</EncodingType></ListBucketResult>")
    assert listing.parse_page(body)[0] == objects(botocore_parse(body))
    assert [o[0] for o in listing.parse_page(body)[0]] == HOSTILE_KEYS


@pytest.mark.parametrize("op", ["ListObjectsV2", "ListObjects"])
def test_the_checksum_a_listing_names_is_read_as_botocore_reads_it(op):
    """An object's <ChecksumAlgorithm> (and <ChecksumType>): the algorithm of a checksum of the
    whole object is kept, one of parts (COMPOSITE) is not, and none is ''."""
    body = page(["a", "b", "c", "d"], v2=op == "ListObjectsV2", url=False)
    body = body.replace(b"<ChecksumAlgorithm>CRC32</ChecksumAlgorithm>", b"")
    algos = [b"<ChecksumAlgorithm>CRC64NVME</ChecksumAlgorithm><ChecksumType>FULL_OBJECT</ChecksumType>",
             b"<ChecksumAlgorithm>SHA256</ChecksumAlgorithm><ChecksumType>COMPOSITE</ChecksumType>",
             b"<ChecksumAlgorithm>CRC32C</ChecksumAlgorithm>", b""]
    parts = body.split(b"<Size>")
    body = parts[0] + b"".join(a + b"<Size>" + rest for a, rest in zip(algos, parts[1:]))
    got = listing.parse_page(body, op)
    assert got is not None
    assert got[0] == objects(botocore_parse(body, op))
    assert [o[3] for o in got[0]] == ["CRC64NVME", "", "CRC32C", ""]
    assert listing.parse_page(body.replace(b"<ChecksumAlgorithm>CRC32C<", b"<ChecksumAlgorithm><b>CRC32C<"), op) is None
