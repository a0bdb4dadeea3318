"""Unit tests for s5jtransfer.checksum: MD5/multipart ETags computed independently, check() levels."""

from __future__ import annotations

import hashlib
import math
import os

import pytest

from s5jtransfer import checksum
from s5jtransfer.checksum import MIB, candidate_part_sizes, check, etag_kind, hash_file, parts_of

EMPTY_MD5 = "d41d8cd98f00b204e9800998ecf8427e"


def expected_multipart(data: bytes, part_size: int) -> str:
    """The S3 multipart ETag, computed here from scratch: md5 of the concatenated part MD5s, '-N'."""
    parts = [data[i:i + part_size] for i in range(0, len(data), part_size)] or [b""]
    digests = b"".join(hashlib.md5(p).digest() for p in parts)
    return f"{hashlib.md5(digests).hexdigest()}-{len(parts)}"


def make(tmp_path, data: bytes, name="f.bin") -> str:
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


def pattern(n: int) -> bytes:
    """Non-repeating-looking bytes (a repeated block could hide part-boundary mistakes)."""
    seed = hashlib.sha256(b"seed").digest()
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(out[:n])


# part size, total size: 0, 1, exactly one part, one part + 1, several parts (with and without a tail)
SMALL_PS = 1000
CASES = [
    (SMALL_PS, 0), (SMALL_PS, 1), (SMALL_PS, SMALL_PS), (SMALL_PS, SMALL_PS + 1), (SMALL_PS, 5 * SMALL_PS),
    (SMALL_PS, 5 * SMALL_PS + 17),
    # part sizes that straddle hash_file's 1 MiB read chunks
    (5 * MIB, 5 * MIB), (5 * MIB, 5 * MIB + 1), (3 * MIB + 7, 3 * (3 * MIB + 7) + 5),
    (MIB - 1, 2 * MIB + 3),
]


@pytest.mark.parametrize("part_size,size", CASES)
def test_hash_file_md5_and_multipart_etag_match_independent_computation(tmp_path, part_size, size):
    data = pattern(size)
    md5, nbytes, multi, _ = hash_file(make(tmp_path, data), (part_size,))
    assert nbytes == size
    assert md5 == hashlib.md5(data).hexdigest()
    assert multi == {part_size: expected_multipart(data, part_size)}


def test_hash_file_several_part_sizes_in_one_pass(tmp_path):
    data = pattern(10 * SMALL_PS + 3)
    sizes = (SMALL_PS, 3 * SMALL_PS, 7, SMALL_PS)  # duplicate is computed once
    md5, nbytes, multi, _ = hash_file(make(tmp_path, data), sizes)
    assert md5 == hashlib.md5(data).hexdigest() and nbytes == len(data)
    assert multi == {ps: expected_multipart(data, ps) for ps in (SMALL_PS, 3 * SMALL_PS, 7)}


def test_hash_file_without_part_sizes_returns_only_md5(tmp_path):
    md5, nbytes, multi, _ = hash_file(make(tmp_path, b""))
    assert (md5, nbytes, multi) == (EMPTY_MD5, 0, {})


def test_hash_file_ignores_non_positive_part_sizes(tmp_path):
    _, _, multi, _ = hash_file(make(tmp_path, b"abc"), (0, -5, 2))
    assert multi == {2: expected_multipart(b"abc", 2)}


# --- check -------------------------------------------------------------------------------------

def test_check_md5_etag_matches(tmp_path):
    data = pattern(4321)
    level, d = check(make(tmp_path, data), len(data), hashlib.md5(data).hexdigest())
    assert level == "md5"
    assert d.md5 == hashlib.md5(data).hexdigest()


def test_check_md5_etag_with_quotes_and_upper_case(tmp_path):
    data = pattern(100)
    etag = '"' + hashlib.md5(data).hexdigest().upper() + '"'
    assert check(make(tmp_path, data), len(data), etag)[0] == "md5"


def test_check_multipart_etag_with_hinted_part_size(tmp_path):
    data = pattern(5 * SMALL_PS + 17)
    etag = expected_multipart(data, SMALL_PS)
    level, d = check(make(tmp_path, data), len(data), etag, part_hint=SMALL_PS)
    assert level == "multipart"
    assert d.multi[SMALL_PS] == etag


def test_check_multipart_etag_with_a_common_part_size_needs_no_hint(tmp_path):
    data = pattern(5 * MIB + 1)  # two parts of the 5 MiB default
    etag = expected_multipart(data, 5 * MIB)
    assert check(make(tmp_path, data), len(data), etag)[0] == "multipart"


def test_check_multipart_etag_from_unknown_part_size_fails(tmp_path):
    data = pattern(5 * SMALL_PS + 17)
    etag = expected_multipart(data, SMALL_PS)
    assert check(make(tmp_path, data), len(data), etag)[0] is None


@pytest.mark.parametrize("etag", ["abc", "0123456789abcdef0123456789abcdefx", "0123456789abcdef0123456789abcdef-",
                                  "0123456789abcdef0123456789abcdef-abc", "", '"kms-encrypted-etag"'])
def test_check_non_md5_etag_falls_back_to_size(tmp_path, etag):
    data = pattern(50)
    assert check(make(tmp_path, data), len(data), etag)[0] == "size"


def test_check_corrupted_byte_is_detected_md5(tmp_path):
    data = pattern(3000)
    bad = bytearray(data)
    bad[1234] ^= 0x01
    assert check(make(tmp_path, bytes(bad)), len(data), hashlib.md5(data).hexdigest())[0] is None


def test_check_corrupted_byte_is_detected_multipart(tmp_path):
    data = pattern(5 * SMALL_PS + 17)
    bad = bytearray(data)
    bad[-1] ^= 0x80
    etag = expected_multipart(data, SMALL_PS)
    assert check(make(tmp_path, bytes(bad)), len(data), etag, part_hint=SMALL_PS)[0] is None


@pytest.mark.parametrize("delta", [-1, 1])
def test_check_wrong_size_is_detected_for_every_kind(tmp_path, delta):
    data = pattern(3000)
    path = make(tmp_path, data)
    size = len(data) + delta
    assert check(path, size, hashlib.md5(data).hexdigest())[0] is None
    assert check(path, size, "not-a-checksum")[0] is None
    assert check(path, size, expected_multipart(data, SMALL_PS), part_hint=SMALL_PS)[0] is None


def test_check_empty_file_against_empty_md5(tmp_path):
    assert check(make(tmp_path, b""), 0, EMPTY_MD5)[0] == "md5"


def test_check_returns_the_multipart_etags_it_computed_for_extra_sizes(tmp_path):
    data = pattern(2500)
    level, d = check(make(tmp_path, data), len(data), hashlib.md5(data).hexdigest(),
                     extra_part_sizes=(SMALL_PS,))
    assert level == "md5"
    assert d.multi == {SMALL_PS: expected_multipart(data, SMALL_PS)}


# --- candidate_part_sizes, etag_kind, parts_of ---------------------------------------------------

@pytest.mark.parametrize("size,parts", [(20 * MIB, 3), (100 * MIB, 2), (5 * MIB + 1, 2), (1000 * MIB, 10),
                                        (8 * MIB, 1), (123456789, 7)])
def test_candidate_part_sizes_respect_the_part_count(size, parts):
    got = candidate_part_sizes(size, parts)
    assert got, "at least one candidate expected"
    assert len(set(got)) == len(got)
    for ps in got:
        assert math.ceil(size / ps) == parts


def test_candidate_part_sizes_includes_common_sizes_that_fit():
    got = candidate_part_sizes(20 * MIB, 3)
    assert 8 * MIB in got  # 8+8+4
    assert 10 * MIB not in got  # 2 parts
    assert 5 * MIB not in got  # 4 parts


def test_candidate_part_sizes_puts_the_hint_first():
    got = candidate_part_sizes(20 * MIB, 3, hint=7 * MIB)
    assert got[0] == 7 * MIB
    assert 8 * MIB in got[1:]


def test_candidate_part_sizes_hint_that_is_also_common_is_first_and_not_repeated():
    got = candidate_part_sizes(100 * MIB, 2, hint=64 * MIB)
    assert got[0] == 64 * MIB
    assert got.count(64 * MIB) == 1
    assert 50 * MIB in got


def test_candidate_part_sizes_ignores_a_hint_with_the_wrong_part_count():
    got = candidate_part_sizes(20 * MIB, 3, hint=5 * MIB)
    assert 5 * MIB not in got
    assert got and all(math.ceil(20 * MIB / ps) == 3 for ps in got)


def test_candidate_part_sizes_falls_back_to_whole_mib_rounding():
    size = 7 * 1000 * MIB + 3  # 7 parts of 1001 MiB: not a common size
    got = candidate_part_sizes(size, 7)
    assert got == (1001 * MIB,)


def test_candidate_part_sizes_nothing_for_zero_parts():
    assert candidate_part_sizes(10 * MIB, 0) == ()


@pytest.mark.parametrize("etag,kind", [
    ("d41d8cd98f00b204e9800998ecf8427e", "md5"),
    ('"d41d8cd98f00b204e9800998ecf8427e"', "md5"),
    ("D41D8CD98F00B204E9800998ECF8427E", "md5"),
    ('"D41D8CD98F00B204E9800998ECF8427E"', "md5"),
    ("d41d8cd98f00b204e9800998ecf8427e-12", "multipart"),
    ('"D41D8CD98F00B204E9800998ECF8427E-3"', "multipart"),
    ("abc", "size"),
    ("", "size"),
    ("d41d8cd98f00b204e9800998ecf8427", "size"),  # 31 hex
    ("d41d8cd98f00b204e9800998ecf8427e0", "size"),  # 33 hex
    ("d41d8cd98f00b204e9800998ecf8427e-", "size"),
    ("d41d8cd98f00b204e9800998ecf8427e-x", "size"),
    ("g41d8cd98f00b204e9800998ecf8427e", "size"),
])
def test_etag_kind(etag, kind):
    assert etag_kind(etag) == kind


def test_parts_of():
    assert parts_of('"D41D8CD98F00B204E9800998ECF8427E-12"') == 12
    assert parts_of("d41d8cd98f00b204e9800998ecf8427e") == 0
    assert parts_of("abc") == 0


def test_upload_etag_is_md5_below_part_size_and_multipart_from_it():
    multi = {100: "x-2"}
    assert checksum.upload_etag("m", 99, 100, multi) == "m"
    assert checksum.upload_etag("m", 0, 100, multi) == "m"
    assert checksum.upload_etag("m", 100, 100, multi) == "x-2"
    assert checksum.upload_etag("m", 150, 100, multi) == "x-2"


def test_hash_file_reads_large_file_across_chunks(tmp_path):
    size = 3 * checksum.CHUNK + 11
    data = os.urandom(size)
    md5, nbytes, multi, _ = hash_file(make(tmp_path, data), (checksum.CHUNK, 5 * MIB))
    assert nbytes == size and md5 == hashlib.md5(data).hexdigest()
    assert multi[checksum.CHUNK] == expected_multipart(data, checksum.CHUNK)
    assert multi[5 * MIB] == expected_multipart(data, 5 * MIB)


# --- one pass for multipart ETags (whole=False) ------------------------------------------------
def multipart(data: bytes, part: int) -> str:
    d = [hashlib.md5(data[i:i + part]).digest() for i in range(0, len(data), part)]
    return f"{hashlib.md5(b''.join(d)).hexdigest()}-{len(d)}"


def test_check_without_the_whole_md5_verifies_a_multipart_etag_by_its_parts(tmp_path):
    data = os.urandom(11 * MIB + 3)
    path = make(tmp_path, data)
    etag = multipart(data, 5 * MIB)
    level, d = check(path, len(data), etag, whole=False)
    assert (level, d.md5) == ("multipart", "")
    from s5jtransfer.checksum import matched_part_size
    assert matched_part_size(etag, d.multi) == 5 * MIB
    bad = bytearray(data)
    bad[-1] ^= 1
    assert check(make(tmp_path, bytes(bad), "bad.bin"), len(data), etag, whole=False)[0] is None
    # an MD5 ETag is always checked by the whole MD5
    level, d = check(path, len(data), hashlib.md5(data).hexdigest(), whole=False)
    assert (level, d.md5) == ("md5", hashlib.md5(data).hexdigest())


def test_a_one_part_multipart_etag_is_checked_by_the_md5_alone(tmp_path):
    data = os.urandom(3 * MIB)
    path = make(tmp_path, data)
    etag = f"{hashlib.md5(hashlib.md5(data).digest()).hexdigest()}-1"
    level, d = check(path, len(data), etag, whole=False)
    assert (level, d.md5, d.multi) == ("multipart", hashlib.md5(data).hexdigest(), {})
    assert check(path, len(data), "0" * 32 + "-1")[0] is None


def test_reusable_part_sizes_are_whole_mib_within_s3s_limits():
    from s5jtransfer.checksum import reusable_part_size
    assert reusable_part_size(5 * MIB) and reusable_part_size(5 * 1024 * MIB)
    assert not any(reusable_part_size(x) for x in (None, 0, 4 * MIB, 5 * MIB + 1, 5 * 1024 * MIB + MIB))


def test_early_uploads_take_the_sources_part_size_when_its_etag_names_exactly_one():
    from s5jtransfer.streaming import early_part_size
    assert early_part_size(256 * MIB, "a" * 32 + "-32", 8 * MIB) == (8 * MIB, True)
    assert early_part_size(20 * MIB, "a" * 32 + "-4", 8 * MIB) == (5 * MIB, True)
    assert early_part_size(12 * MIB, "a" * 32 + "-2", 8 * MIB) == (8 * MIB, False)  # 8 or 10 MiB: not known
    assert early_part_size(256 * MIB, "a" * 32 + "-2", 8 * MIB) == (8 * MIB, False)  # 128 MiB: too large
    assert early_part_size(256 * MIB, "a" * 32, 8 * MIB) == (8 * MIB, False)  # one PUT


# --- additional checksums, made in the same read ------------------------------------------------
def crc64nvme_reference(data: bytes) -> int:
    """CRC-64/NVME computed bit by bit from its definition (reflected, polynomial 0xAD93D23594C93659,
    initial value and final XOR all ones), independently of awscrt."""
    poly = int(f"{0xAD93D23594C93659:064b}"[::-1], 2)  # reflected
    crc = (1 << 64) - 1
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
    return crc ^ ((1 << 64) - 1)


def test_crc64nvme_of_the_check_string_is_the_published_one():
    # the CRC catalogue's check value of CRC-64/NVME, over "123456789"
    assert crc64nvme_reference(b"123456789") == 0xAE8B14860A799888


@pytest.mark.parametrize("size", [0, 1, 4095, checksum.CHUNK + 7])
def test_additional_checksums_in_the_same_read_match_independent_computation(tmp_path, size):
    import base64
    import zlib

    data = os.urandom(size)
    d = hash_file(make(tmp_path, data), (SMALL_PS,), sums=("CRC64NVME", "CRC32", "SHA1", "SHA256", "CRC32C", "MD4"))
    b64 = lambda raw: base64.b64encode(raw).decode()  # noqa: E731
    assert d.md5 == hashlib.md5(data).hexdigest() and d.nbytes == size
    assert d.sums["CRC64NVME"] == b64(crc64nvme_reference(data).to_bytes(8, "big"))
    assert d.sums["CRC32"] == b64(zlib.crc32(data).to_bytes(4, "big"))
    assert d.sums["SHA1"] == b64(hashlib.sha1(data).digest())
    assert d.sums["SHA256"] == b64(hashlib.sha256(data).digest())
    assert "CRC32C" in d.sums and "MD4" not in d.sums  # an algorithm S3 does not name is not made


def test_crc32c_is_the_castagnoli_crc(tmp_path):
    import base64

    # the CRC catalogue's check value of CRC-32/ISCSI (Castagnoli), over "123456789"
    d = hash_file(make(tmp_path, b"123456789"), sums=("CRC32C",))
    assert d.sums["CRC32C"] == base64.b64encode((0xE3069283).to_bytes(4, "big")).decode()


def test_check_makes_the_asked_checksums_beside_the_etags_verdict(tmp_path):
    data = pattern(3000)
    level, d = check(make(tmp_path, data), len(data), "kms-opaque", sums=("SHA256",))
    assert level == "size" and set(d.sums) == {"SHA256"}
