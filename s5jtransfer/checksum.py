"""MD5, multipart ETags and S3's additional checksums of a local file in one pass, and comparison
with an S3 ETag."""

from __future__ import annotations

import base64
import hashlib
import math
import os
import re
import zlib
from typing import NamedTuple

MIB = 1024 * 1024
# Part sizes S3 clients commonly use (aws cli/boto3 8 MiB, s5cmd 50 MiB, Snowball tools 5-100 MiB).
COMMON_PART_SIZES = tuple(n * MIB for n in (8, 5, 16, 50, 64, 100, 10, 15, 25, 32, 128, 256, 512))
_MD5 = re.compile(r"^[0-9a-f]{32}$")
_MULTI = re.compile(r"^([0-9a-f]{32})-(\d+)$")
CHUNK = MIB
# a file smaller than this is hashed by the thread that needs it: handing it to another (a task, a
# woken thread) costs more than reading it (landing.Landing.landed, dest_sync.rehash)
INLINE_BELOW = MIB

MD5, MULTIPART, SIZE = "md5", "multipart", "size"

# S3's additional checksums (x-amz-checksum-*), each written as its header value: the base64 of the
# big-endian digest. CRC64NVME is what AWS S3 keeps for every new object since December 2024.
CRC64NVME = "CRC64NVME"
SUM_ALGORITHMS = (CRC64NVME, "CRC32C", "CRC32", "SHA1", "SHA256")


def _crt_checksums():
    try:
        from awscrt import checksums  # pinned in requirements.txt; botocore's own CRC64NVME needs it too
    except ImportError:  # pragma: no cover - without it, CRC32C and CRC64NVME are not computed
        return None
    return checksums


_CRT = _crt_checksums()


class _Crc:
    """A CRC computed as bytes come, by fn(data, previous)."""

    __slots__ = ("fn", "width", "value")

    def __init__(self, fn, width: int) -> None:
        self.fn, self.width, self.value = fn, width, 0

    def update(self, data) -> None:
        self.value = self.fn(data, self.value)

    def b64(self) -> str:
        return base64.b64encode(self.value.to_bytes(self.width, "big")).decode()


class _Hash:
    __slots__ = ("h",)

    def __init__(self, name: str) -> None:
        self.h = hashlib.new(name)

    def update(self, data) -> None:
        self.h.update(data)

    def b64(self) -> str:
        return base64.b64encode(self.h.digest()).decode()


def new_sum(algorithm: str):
    """An additional checksum being made (update(bytes), b64()), or None when it cannot be
    computed here (an algorithm S3 does not name, or awscrt missing)."""
    if algorithm == "CRC32":
        return _Crc(zlib.crc32, 4)  # zlib's is twice as fast as awscrt's
    if algorithm in ("SHA1", "SHA256"):
        return _Hash(algorithm.lower())
    if _CRT is not None and algorithm == CRC64NVME:
        return _Crc(_CRT.crc64nvme, 8)
    if _CRT is not None and algorithm == "CRC32C":
        return _Crc(_CRT.crc32c, 4)
    return None


def computable(algorithm: str) -> bool:
    return new_sum(algorithm) is not None


class Digest(NamedTuple):
    """What one read of a file made."""

    md5: str  # hex; "" when not asked for (hash_file's `whole`)
    nbytes: int
    multi: dict[int, str]  # part size -> the multipart ETag of parts of that size
    sums: dict[str, str]  # additional checksum algorithm -> its value as S3 writes it


def etag_kind(etag: str) -> str:
    """'md5', 'multipart', or 'size' when the ETag is not a checksum of the bytes (SSE-KMS...)."""
    etag = etag.strip('"').lower()
    if _MD5.match(etag):
        return MD5
    if _MULTI.match(etag):
        return MULTIPART
    return SIZE


def parts_of(etag: str) -> int:
    m = _MULTI.match(etag.strip('"').lower())
    return int(m.group(2)) if m else 0


def parts_etag(part_md5s: list[str]) -> str:
    """The multipart ETag of parts with these MD5s (hex): the MD5 of their digests, and their count."""
    return f"{hashlib.md5(b''.join(bytes.fromhex(m) for m in part_md5s)).hexdigest()}-{len(part_md5s)}"


class Multipart:
    """A multipart ETag of one part size, made as bytes come."""

    def __init__(self, part_size: int) -> None:
        self.part_size = part_size
        self.digests: list[bytes] = []
        self.cur = hashlib.md5()
        self.filled = 0

    def update(self, data: memoryview) -> None:
        while data:
            room = self.part_size - self.filled
            piece = data[:room]
            self.cur.update(piece)
            self.filled += len(piece)
            data = data[len(piece):]
            if self.filled == self.part_size:
                self.digests.append(self.cur.digest())
                self.cur, self.filled = hashlib.md5(), 0

    def etag(self) -> str:
        digests = self.digests + ([self.cur.digest()] if self.filled or not self.digests else [])
        return parts_etag([d.hex() for d in digests])


def hash_file(path: str, part_sizes: tuple[int, ...] = (), whole: bool = True, sums: tuple[str, ...] = ()) -> Digest:
    """The file's MD5, multipart ETags of part_sizes and additional checksums `sums` (those that can
    be computed here), in a single read; the md5 is "" when not `whole` (each hash is a pass of MD5
    over every byte: skip the ones not needed; a CRC costs a thirtieth of one)."""
    whole_md5 = hashlib.md5() if whole else None
    multis = [Multipart(ps) for ps in dict.fromkeys(part_sizes) if ps > 0]
    extra = {a: h for a in dict.fromkeys(sums) if (h := new_sum(a)) is not None}
    total = 0
    try:  # most objects are small: don't allocate (and zero) a whole MiB for each
        bufsize = max(4096, min(CHUNK, os.path.getsize(path) + 1))
    except OSError:
        bufsize = CHUNK
    buf = bytearray(bufsize)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while True:
            n = fh.readinto(buf)
            if not n:
                break
            chunk = view[:n]
            if whole_md5 is not None:
                whole_md5.update(chunk)
            for m in multis:
                m.update(chunk)
            for h in extra.values():
                h.update(chunk)
            total += n
    return Digest(whole_md5.hexdigest() if whole_md5 else "", total, {m.part_size: m.etag() for m in multis},
                  {a: h.b64() for a, h in extra.items()})


def candidate_part_sizes(size: int, parts: int, hint: int | None = None) -> tuple[int, ...]:
    """Part sizes that split `size` bytes into exactly `parts` parts, the hint first."""
    out = [ps for ps in ((hint,) if hint else ()) + COMMON_PART_SIZES if ps and math.ceil(size / ps) == parts]
    if parts == 1 and size == 0:  # a zero-byte object uploaded as one (empty) part
        out.append(COMMON_PART_SIZES[0])
    if parts > 0 and size > 0 and not out:
        # Many tools round the part size up to a whole MiB: try the smallest such size.
        ps = math.ceil(math.ceil(size / parts) / MIB) * MIB
        if math.ceil(size / ps) == parts:
            out.append(ps)
    return tuple(dict.fromkeys(out))


def upload_etag(md5: str, size: int, part_size: int, multi: dict[int, str]) -> str:
    """The ETag an upload with this part size produces (single PUT below the part size)."""
    if size < part_size or size == 0:
        return md5
    return multi[part_size]


def source_part_sizes(size: int, etag: str) -> tuple[int, ...]:
    """The part sizes that may have made a multipart ETag of two parts or more (without a hint
    from the source): a copy verified with one of them can be checked again, and uploaded with
    it, from the size and ETag alone."""
    parts = parts_of(etag)
    return candidate_part_sizes(size, parts) if parts >= 2 else ()


def check(path: str, size: int, etag: str, part_hint: int | None = None,
          extra_part_sizes: tuple[int, ...] = (), whole: bool = True,
          sums: tuple[str, ...] = ()) -> tuple[str | None, Digest]:
    """Verify a local file against an S3 object's size and ETag in one read.

    Returns (level, what the read made): level is 'md5', 'multipart' or 'size' (the ETag is no
    checksum of the bytes: evidence.py looks for other evidence) when the file matches, None when
    it does not. not `whole`: a multipart ETag of two parts or more is checked without the file's
    MD5 (the digest's md5 is then ""), one MD5 pass per candidate part size instead of one more for
    the whole. sums: additional checksums to make in the same read.
    """
    kind = etag_kind(etag)
    etag = etag.strip('"').lower()
    sizes = tuple(extra_part_sizes)
    if kind == MULTIPART and parts_of(etag) == 1 and not sizes:
        # one part: its MD5 is the file's, so the single pass that makes the MD5 makes the ETag
        d = hash_file(path, sums=sums)
        return (MULTIPART if d.nbytes == size and parts_etag([d.md5]) == etag else None), d
    if kind == MULTIPART:
        sizes = candidate_part_sizes(size, parts_of(etag), part_hint) + sizes
    d = hash_file(path, sizes, whole or kind != MULTIPART or parts_of(etag) < 2, sums)
    if d.nbytes != size:
        return None, d
    if kind == MD5:
        return (MD5 if d.md5 == etag else None), d
    if kind == MULTIPART:
        return (MULTIPART if etag in d.multi.values() else None), d
    return SIZE, d


def reusable_part_size(ps: int | None) -> bool:
    """A part size our uploads can use again: whole MiB (s5cmd's -p), within S3's 5 MiB to 5 GiB."""
    return bool(ps) and ps % MIB == 0 and 5 * MIB <= ps <= 5 * 1024 * MIB


def matched_part_size(etag: str, multi: dict[int, str]) -> int | None:
    """The part size whose multipart ETag (of check's or hash_file's) is `etag`."""
    etag = etag.strip('"').lower()
    return next((ps for ps, e in multi.items() if e == etag), None)
