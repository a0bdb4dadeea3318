"""A faster parse of listing pages (ListObjectsV2 and ListObjects), botocore doing the rest.

botocore reads a page of 1,000 keys twice: its check for an error inside a 200 answer builds an
ElementTree of the page, then its parser builds another and walks the s3 model's shapes in
Python. Through a client against a local server that answers canned S3 pages, listing costs
about 50 s of CPU per million keys on these machines (tools/listing_bench.py). botocore still
signs, sends, retries and parses everything but the objects: a 'before-parse' handler, run
first, reads the page's <Contents> elements with plain string operations, hands botocore the
page without them (its 200 check and its parser read the page's other fields and keep the
paginator going: IsTruncated, NextContinuationToken, NextMarker) and puts the objects in the
parsed page under FAST. Listing then costs about 7 s per million keys, 3 of them this parse.

The parse takes only pages shaped like S3's: UTF-8, no CR, no CDATA, comment, DOCTYPE or
processing instruction, no character XML forbids, every '&' a well-formed reference, <Contents>
elements one after another, each holding exactly one <Key> (first), one <Size> and at most one
<ETag>, with no markup inside them (nor inside a <ChecksumAlgorithm>). Anything else (an error, an unexpected element, an unknown
entity) is left to botocore's parser whole. Keys come out exactly as botocore's parse and its
after-call URL decoding make them (tests/unit/test_listing.py compares both on hostile keys).
The last <Contents> is left in the page botocore parses, so ListObjects' paginator (which
takes the next marker from the last key) works, and iter_pages checks that botocore read that
object as the fast parse did (if not, botocore parses the whole page again, with a warning).

The handler acts only inside iter_pages (a thread-local flag around each page's request): any
other listing made through the same client (list_one's MaxKeys=1 pages, ...) is botocore's alone.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Iterable, Iterator
from urllib.parse import unquote_plus

ENABLED = True  # False: botocore parses every page (tools/listing_bench.py measures both)
FAST = "S5jtransferObjects"  # where the parsed page carries the objects: [(key, size, etag, checksum), ...]

_OPS = ("ListObjectsV2", "ListObjects")
log = logging.getLogger("s5jtransfer.listing")
_scope = threading.local()

# Bytes XML 1.0 forbids (a C0 control other than TAB and LF; CR is refused too, for its
# end-of-line normalisation), kept by translate: what remains is what makes a page unexpected.
_FORBIDDEN = bytes(c for c in range(32) if c not in (9, 10))
_NOT_FORBIDDEN = bytes(c for c in range(256) if c not in _FORBIDDEN)
_NOT_MARKS = bytes(c for c in range(256) if c not in _FORBIDDEN + b"!?]&\xef")
_ENTITY_STARTS = ("&lt;", "&gt;", "&amp;", "&quot;", "&apos;", "&#")
_NAMED = {"lt": "<", "gt": ">", "amp": "&", "quot": '"', "apos": "'"}
_REF = re.compile(r"&(?:#x([0-9a-fA-F]+)|#([0-9]+)|([a-z]+));")


class _Unexpected(Exception):
    """Not a page this parse takes: botocore's parser reads it."""


def _xml_char(cp: int) -> bool:
    return cp in (9, 10, 13) or 0x20 <= cp <= 0xD7FF or 0xE000 <= cp <= 0xFFFD or 0x10000 <= cp <= 0x10FFFF


def _ref(m: re.Match) -> str:
    hexa, dec, name = m.groups()
    if name is not None:
        if name not in _NAMED:
            raise _Unexpected(name)
        return _NAMED[name]
    cp = int(hexa, 16) if hexa is not None else int(dec)
    if not _xml_char(cp):
        raise _Unexpected(cp)
    return chr(cp)


def _text(raw: str) -> str:
    """An element's character data as an XML parser reads it (raw holds no markup)."""
    if "&" not in raw:
        return raw
    out, n = _REF.subn(_ref, raw)
    if n != raw.count("&"):
        raise _Unexpected("a bare '&'")
    return out


def parse_page(body: bytes, op: str = "ListObjectsV2") -> tuple[list[tuple[str, int, str, str]], bytes] | None:
    """(objects, the page without all but its last <Contents>), or None for a page this parse
    does not take. Objects are (key, size, ETag without quotes, checksum: checksum_of the
    object's <ChecksumAlgorithm> and <ChecksumType>), keys URL-decoded when the page
    says <EncodingType>url</EncodingType> (as botocore decodes them when it asked for that
    encoding itself, which it does unless the caller sets EncodingType: iter_objects never does)."""
    if op not in _OPS or not isinstance(body, (bytes, bytearray)):
        return None
    try:
        return _parse(bytes(body))
    except (_Unexpected, UnicodeDecodeError, ValueError, OverflowError):
        return None


def _parse(body: bytes) -> tuple[list[tuple[str, int, str, str]], bytes] | None:
    # One pass keeps the bytes that need a closer look: the XML declaration's two '?', one '&'
    # per reference (S3's ETags: two &quot; each) and nothing else, on a page of ordinary keys.
    marks = body.translate(None, _NOT_MARKS)
    if marks.replace(b"&", b"") != (b"??" if body.startswith(b"<?xml ") else b"") and not _plain(body):
        return None
    text = body.decode("utf-8")
    page = _split(text)
    if page is None:
        return None
    head, chunks, tail = page
    url = "<EncodingType>url</EncodingType>" in head or "<EncodingType>url</EncodingType>" in tail  # (moto: after)
    got = _objects(chunks, url)
    if got is None:
        return None
    out, seen = got
    if marks.count(b"&") != seen and not _references_ok(text):
        return None  # an entity XML does not define, or a character reference it forbids
    stripped = head + chunks[-1].lstrip(" \t\n") + "</Contents>" + tail
    return out, stripped.encode("utf-8")


def _split(text: str) -> tuple[str, list[str], str] | None:
    """(the page before its first <Contents>, each <Contents> element without its end tag, the
    page after the last), or None when the elements are not one after another, each with one
    <Key> and one <Size> and at most one <ETag>."""
    first = text.find("<Contents>")
    last = text.rfind("</Contents>")
    if first < 0 or last < first:
        return None  # no objects: botocore's parse costs nothing here
    end = last + len("</Contents>")
    head, region, tail = text[:first], text[first:end], text[end:]
    if "<Contents" in head or "<Contents" in tail or "<ListBucketResult" not in head:
        return None
    chunks = region.split("</Contents>")
    if chunks.pop() != "":
        return None
    n = len(chunks)
    # each <Contents> holds one <Key> (first) and one <Size>, found below: no element twice
    if not region.count("<Key>") == region.count("<Size>") == n or region.count("<ETag>") > n:
        return None
    return head, chunks, tail


def _objects(chunks: list[str], url: bool) -> tuple[list[tuple[str, int, str, str]], int] | None:
    """The (key, size, ETag, checksum) of each <Contents> element and the count of '&' read as
    references in them, or None when one holds markup. The hot loop: one pass per key, inline."""
    out = []
    append = out.append
    seen = 0  # '&' read as references below
    for c in chunks:
        if not c.startswith("<Contents><Key>"):
            c = c.lstrip(" \t\n")  # whitespace between elements (a store that indents)
            if not c.startswith("<Contents><Key>"):
                return None
        k = c.index("</Key>", 15)
        key = c[15:k]
        s = c.index("<Size>", k) + 6
        size = c[s:c.index("</Size>", s)]
        e = c.find("<ETag>", k)
        if e < 0:
            etag = ""
        else:
            e += 6
            etag = c[e:c.index("</ETag>", e)]
            if etag.startswith("&quot;") and etag.endswith("&quot;") and etag.count("&") == 2 and len(etag) >= 12:
                etag = etag[6:-6].strip('"')  # S3's form: '"' + middle + '"', stripped of its quotes
                seen += 2
            elif "<" in etag:
                return None
            else:
                seen += etag.count("&")
                etag = _text(etag).strip('"')
        a = c.find("<ChecksumAlgorithm>", k)
        if a < 0:
            algo = ""
        else:
            a += 19
            algo = checksum_of([c[a:c.index("</ChecksumAlgorithm>", a)]],
                               "COMPOSITE" if "<ChecksumType>COMPOSITE</ChecksumType>" in c else None)
            if "<" in algo:
                return None
        if "<" in key or "<" in size:
            return None  # markup inside
        if "&" in key:
            seen += key.count("&")
            key = _text(key)
        if url and ("%" in key or "+" in key):
            key = unquote_plus(key)
        if "&" in size:
            seen += size.count("&")
            size = _text(size)
        append((key, int(size), etag, algo))
    return out, seen


def _plain(body: bytes) -> bool:
    """No character XML forbids (botocore's parser refuses the page) and no CR (normalised),
    no CDATA, comment, DOCTYPE or processing instruction but the XML declaration."""
    if body.translate(None, _NOT_FORBIDDEN) or b"\xef\xbf\xbe" in body or b"\xef\xbf\xbf" in body:
        return False
    return not (b"<!" in body or b"]]>" in body or body.count(b"<?") > (1 if body.startswith(b"<?xml ") else 0))


def _references_ok(text: str) -> bool:
    """Every '&' in the page starts a reference XML defines, to a character XML allows."""
    if text.count("&") != sum(text.count(e) for e in _ENTITY_STARTS):
        return False
    return "&#" not in text or _refs_ok(text)


def _refs_ok(text: str) -> bool:
    """Every character reference in the page is one XML allows."""
    try:
        for m in re.finditer(r"&#x([0-9a-fA-F]+);|&#([0-9]+);|&#", text):
            if m.group(1) is None and m.group(2) is None:
                return False
            if not _xml_char(int(m.group(1), 16) if m.group(1) is not None else int(m.group(2))):
                return False
    except (ValueError, OverflowError):
        return False
    return True


def _before_parse(operation_model=None, response_dict=None, customized_response_dict=None, **_kw) -> None:
    if not (ENABLED and getattr(_scope, "on", False)) or response_dict is None or customized_response_dict is None:
        return
    op = getattr(operation_model, "name", "")
    if op not in _OPS or response_dict.get("status_code") != 200:
        return
    got = parse_page(response_dict.get("body"), op)
    if got is None:
        return
    customized_response_dict[FAST] = (got[0], response_dict["body"])
    response_dict["body"] = got[1]


def register(s3client) -> None:
    """Install the handler on this client, once. It runs before botocore's check for an error
    inside a 200 answer (handlers._handle_200_error, on every S3 answer), which would otherwise
    parse the whole page into an ElementTree first (about 4 us per key): that check then reads
    the page without its objects (root element, and well-formed head and tail). Only this
    client's handlers are reordered; the same handlers run for every other operation."""
    if getattr(s3client, "_s5jtransfer_fast_listing", False):
        return
    from botocore import handlers

    events = s3client.meta.events
    check = getattr(handlers, "_handle_200_error", None)
    if check is not None:
        events.unregister("before-parse.s3.*", check)
    events.register_first("before-parse.s3.*", _before_parse, unique_id="s5jtransfer-fast-listing")
    if check is not None:
        events.register_first("before-parse.s3.*", check)
    s3client._s5jtransfer_fast_listing = True


def iter_pages(pages: Iterable[dict], op: str = "ListObjectsV2") -> Iterator[list[tuple[str, int, str, str]]]:
    """The objects of each page of a botocore paginator over ListObjectsV2 / ListObjects, as
    (key, size, ETag without quotes, checksum), through the fast parse where it took the page."""
    it = iter(pages)
    while True:
        _scope.on = True
        try:
            page = next(it)
        except StopIteration:
            return
        finally:
            _scope.on = False
        fast = page.get(FAST)
        contents = page.get("Contents") or ()
        if fast is None:
            yield [_row(c) for c in contents]
            continue
        objs, body = fast
        # botocore parsed the last object too: the two parses must agree on it
        if len(contents) == 1 and objs and _row(contents[0]) == objs[-1]:
            yield objs
            continue
        log.warning("the fast parse of a listing page disagrees with botocore's on its last object (%r, %r): "
                    "botocore parses the page", objs[-1:], contents)
        yield [_row(c) for c in botocore_parse(body, op).get("Contents") or ()]


def _row(c: dict) -> tuple[str, int, str, str]:
    return c["Key"], int(c["Size"]), c.get("ETag", "").strip('"'), checksum_of(c.get("ChecksumAlgorithm") or (),
                                                                                c.get("ChecksumType"))


_ALGORITHMS = {a: a for a in ("CRC64NVME", "CRC32C", "CRC32", "SHA1", "SHA256")}


def checksum_of(algorithms, checksum_type: str | None) -> str:
    """The additional checksum a listing names for an object, when its value is of the whole
    object (a COMPOSITE one is of its parts, and the part sizes are not known): its algorithm, as
    one shared string per algorithm (an unknown one is kept as it is), or ""."""
    if checksum_type == "COMPOSITE" or not algorithms:
        return ""
    first = str(algorithms[0])
    return _ALGORITHMS.get(first, first)


def botocore_parse(body: bytes, op: str) -> dict:
    """A page as botocore parses it (timestamps left as text, as s3.client's) and URL-decodes
    its keys when it asked for that encoding itself."""
    import botocore.parsers
    import botocore.session
    from botocore import handlers

    model = botocore.session.get_session().get_service_model("s3").operation_model(op)
    factory = botocore.parsers.ResponseParserFactory()
    factory.set_parser_defaults(timestamp_parser=str)
    parsed = factory.create_parser("rest-xml").parse({"body": body, "headers": {}, "status_code": 200},
                                                      model.output_shape)
    decode = handlers.decode_list_object_v2 if op == "ListObjectsV2" else handlers.decode_list_object
    decode(parsed=parsed, context={"encoding_type_auto_set": True})
    return parsed
