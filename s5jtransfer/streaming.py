"""Uploading a large object while the source side is still fetching it.

The source side fetches an object larger than the part size with `s5cmd cat`, whose standard
output is the partial copy itself: s5cmd writes the object in order, so the file's size is the
number of bytes landed. Only once its last byte is in, verified and ledgered may the destination
side upload it the regular way; until then the destination link would idle. Here its parts go out
as they land, so the destination link carries them meanwhile.

Source side (dest_stream_uploads): for each such object, a note in
<volume>/s5jtransfer/streaming/<file name>: the key, size and listed ETag, and how many bytes from
the start of the partial copy are written. It is replaced (atomically) each time that prefix holds
one more whole part, and at the end; it is removed once the copy is verified and staged, or given
up.

Destination side (Streamer): for each note, a boto3 multipart upload whose parts are read from the
partial copy as they are written and sent with their Content-MD5. Nothing is completed on the
note's word. When the object is staged, verified and ledgered, and the destination side takes
it up as usual, every part sent early is compared with the staged copy's bytes (MD5 per part),
the rest is sent from the staged copy, the copy is checked against the checksum verified at
staging (in the source's parts, when the upload has them: early_part_size; else the whole MD5),
and only then is the upload completed; the object is then confirmed like any other upload. A part
that does not match aborts the multipart upload and the object goes the regular way (s5cmd).
Uploads never taken up (the copy failed, the source side stopped) are aborted. Their IDs are
journaled in dest_multipart.jsonl first, so a destination side stopped by a power cut aborts them
at its next start. Nothing here can complete an object from a truncated stream.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

from . import checksum, evidence, s3
from .atomic import write_atomic
from .config import Side
from .runtime import remove_quietly
from .volumes import Volume

log = logging.getLogger("s5jtransfer.stream")
MIB = 1024 * 1024
MAX_PARTS = 10_000  # S3's limit
JOURNAL = "dest_multipart.jsonl"
UNCLAIMED_GRACE = 120.0  # seconds an upload whose note is gone waits to be taken up, then is aborted
PART_WORKERS = 4


STREAM_PART_MAX = 8 * MIB  # parts of early uploads: small, so the first goes out within a second or two


def stream_part_size(part_size: int) -> int:
    """The part size of early multipart uploads: the configured one, at most STREAM_PART_MAX.
    Objects larger than this are fetched in order and uploaded while they land."""
    return min(part_size, STREAM_PART_MAX)


def part_size_for(size: int, part_size: int) -> int:
    """The configured part size; larger (whole MiB) when S3's 10,000 parts would not hold the object."""
    need = -(-size // MAX_PARTS)
    return max(part_size, -(-need // MIB) * MIB)


SOURCE_PART_MAX = 64 * MIB  # the source's parts are taken up to this size (the first goes out once it landed)


def early_part_size(size: int, src_etag: str, part_size: int) -> tuple[int, bool]:
    """(part size, whether it is the source's) of an early upload. The source's when its ETag
    names exactly one (checksum.source_part_sizes) that is not too large: the upload's ETag is
    then the source's, and its completion checks the staged copy by its parts, one MD5 pass;
    else part_size (the completion also hashes the whole)."""
    sizes = checksum.source_part_sizes(size, src_etag)
    if len(sizes) == 1 and checksum.reusable_part_size(sizes[0]) and sizes[0] <= SOURCE_PART_MAX:
        return sizes[0], True
    return part_size_for(size, part_size), False


# -- the source side's notes ----------------------------------------------------------------
def write_note(vol: Volume, name: str, key: str, size: int, etag: str, ready: int) -> None:
    write_atomic(vol.note_path(name), json.dumps({"key": key, "size": size, "etag": etag, "ready": ready}))


def remove_note(vol: Volume, name: str) -> None:
    remove_quietly(vol.note_path(name))


def read_notes(volumes: list[Volume]) -> list[tuple[Volume, str, dict]]:
    """(volume, file name, note) for every readable note; others are skipped (being replaced)."""
    out = []
    for vol in volumes:
        for path in vol.scan_notes():
            if path.endswith(".tmp"):
                continue
            try:
                with open(path, encoding="utf-8") as fh:
                    note = json.load(fh)
                if not (isinstance(note.get("key"), str) and isinstance(note.get("size"), int)
                        and isinstance(note.get("etag"), str) and isinstance(note.get("ready"), int)):
                    continue
            except (OSError, ValueError):
                continue
            out.append((vol, os.path.basename(path), note))
    return out


# -- the destination side -------------------------------------------------------------------
def read_copy(partial: str, staged: str | None, start: int, length: int) -> bytes:
    """Up to `length` bytes at `start` of the partial copy, or of the staged copy when the
    partial one was verified and renamed meanwhile (the same bytes)."""
    try:
        fd = os.open(partial, os.O_RDONLY)
    except FileNotFoundError:
        if staged is None:
            raise
        fd = os.open(staged, os.O_RDONLY)
    try:
        return os.pread(fd, length, start)
    finally:
        os.close(fd)


class Made(NamedTuple):
    """What a completed early upload is made of: the multipart ETag of its parts, and the
    additional checksums of its bytes."""

    etag: str
    sums: dict[str, str]


# report(endpoint, ok, error, the destination's answer to the completion, what the upload made)
Report = Callable[[int, bool, str, "s3.Obj | None", "Made | None"], None]


@dataclass
class _Upload:
    key: str
    size: int
    etag: str  # the source ETag the note names
    partial: str
    staged: str  # where the partial copy is renamed to once verified
    part: int
    source_parts: bool  # part is the source's: the parts' MD5s alone check the bytes (see _finish)
    upload_id: str
    ep: int
    client: object
    ready: int = 0
    submitted: int = 0  # parts 1..submitted are sent or being sent
    md5s: dict[int, str] = field(default_factory=dict)  # part number -> MD5 of the bytes sent
    etags: dict[int, str] = field(default_factory=dict)  # part number -> the ETag the destination answered
    futures: list[Future] = field(default_factory=list)
    error: str = ""
    taken: bool = False
    seen: float = 0.0  # when its note was last seen
    early: int = 0  # parts sent before it was taken up

    @property
    def parts(self) -> int:
        return max(1, -(-self.size // self.part))


class Streamer:
    """The destination side's early multipart uploads (see the module's doc). scan() and take()
    run in the destination side's cycle; parts go out on a pool of their own."""

    def __init__(self, side: Side, part_size: int, endpoint: Callable[[], int],
                 client_of: Callable[[int], object], describe: Callable[[BaseException], str]) -> None:
        self.side = side
        self.part_size = part_size  # objects larger than this are streamed as multipart uploads
        self.endpoint = endpoint  # () -> the endpoint for a new upload
        self.client_of = client_of  # endpoint -> its client
        self.describe = describe
        self.uploads: dict[str, _Upload] = {}
        self._pool = ThreadPoolExecutor(max_workers=PART_WORKERS, thread_name_prefix="stream-part")
        self._finisher = ThreadPoolExecutor(max_workers=4, thread_name_prefix="stream-finish")  # and aborts
        self._lock = threading.Lock()  # the journal
        self._leftover = False  # an abort failed: its journal line must stay for the next start
        self._closing = False

    # journal ---------------------------------------------------------------------------
    def _journal(self, entry: dict) -> None:
        with self._lock, open(JOURNAL, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def _journal_clear(self) -> None:
        with self._lock:
            if not self.uploads and not self._leftover and os.path.exists(JOURNAL):
                os.truncate(JOURNAL, 0)

    def recover(self) -> None:
        """Abort the uploads an earlier run journaled and did not finish (a completed one answers
        NoSuchUpload: nothing to do). Entries that cannot be aborted now are kept for next time."""
        try:
            with open(JOURNAL, encoding="utf-8") as fh:
                lines = fh.read().splitlines()
        except FileNotFoundError:
            return
        keep = []
        aborted = 0
        for line in lines:
            try:
                e = json.loads(line)
                key, upload_id, ep = e["key"], e["upload_id"], int(e.get("ep", 0))
            except (ValueError, KeyError, TypeError):
                continue  # a line torn by a power cut: its upload was never used
            try:
                self.client_of(ep).abort_multipart_upload(Bucket=self.side.bucket, Key=self.side.prefix + key,
                                                          UploadId=upload_id)
                aborted += 1
            except Exception as exc:  # noqa: BLE001
                code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
                if code not in ("NoSuchUpload", "404"):
                    log.warning("cannot abort the unfinished multipart upload of %r (%s); trying again at the "
                                "next start", key, self.describe(exc))
                    keep.append(line)
        write_atomic(JOURNAL, (x + "\n" for x in keep), durable=True)
        if aborted:
            log.info("aborted %d unfinished multipart uploads left by an earlier run", aborted)

    # the cycle's part ------------------------------------------------------------------
    def scan(self, volumes: list[Volume], waiting: Callable[[str], bool] = lambda key: False) -> None:
        """Start uploads for new notes and send the parts now fully written; abort what is gone
        for UNCLAIMED_GRACE seconds, unless waiting(key): staged and ledgered, its turn to come."""
        now = time.monotonic()
        for vol, name, note in read_notes(volumes):
            key, size, etag, ready = note["key"], note["size"], note["etag"], note["ready"]
            if size <= self.part_size:
                continue
            partial = vol.partial_path(name)
            u = self.uploads.get(key)
            if u is not None and not u.taken and (u.size, u.etag, u.partial) != (size, etag, partial):
                self._abort(u, "the source side is fetching another version")
                u = None
            if u is None:
                u = self._begin(key, size, etag, partial, vol.staged_path(name))
                if u is None:
                    continue
            if u.taken:
                continue
            u.seen = now
            u.ready = max(u.ready, min(ready, size))
            self._send_ready(u)
        for u in list(self.uploads.values()):
            if not u.taken and not u.error and waiting(u.key):
                u.seen = now
            if not u.taken and (u.error or now - u.seen > UNCLAIMED_GRACE):
                self._abort(u, u.error or "the source side did not stage it")

    def _begin(self, key: str, size: int, etag: str, partial: str, staged: str) -> _Upload | None:
        ep = self.endpoint()
        client = self.client_of(ep)
        try:
            resp = client.create_multipart_upload(Bucket=self.side.bucket, Key=self.side.prefix + key,
                                                  **s3.upload_args(self.side))
        except Exception as exc:  # noqa: BLE001 - the object goes the regular way
            log.debug("no early upload of %r: %s", key, self.describe(exc))
            self.uploads.pop(key, None)
            return None
        part, source_parts = early_part_size(size, etag, self.part_size)
        u = _Upload(key, size, etag, partial, staged, part, source_parts, resp["UploadId"], ep, client,
                    seen=time.monotonic())
        self.uploads[key] = u  # before the journal line: an empty dict lets the journal be emptied
        try:
            self._journal({"key": key, "upload_id": u.upload_id, "ep": ep})
        except OSError as exc:
            self._abort(u, f"cannot journal it: {exc}")
            return None
        log.debug("uploading %r while it is fetched (%d parts)", key, u.parts)
        return u

    def _send_ready(self, u: _Upload) -> None:
        while u.submitted < u.parts and min((u.submitted + 1) * u.part, u.size) <= u.ready:
            u.submitted += 1
            u.futures.append(self._pool.submit(self._send_from_partial, u, u.submitted))

    def _send_from_partial(self, u: _Upload, n: int) -> None:
        if u.error:
            return
        start = (n - 1) * u.part
        length = min(u.part, u.size - start)
        try:
            data = read_copy(u.partial, u.staged, start, length)
            if len(data) != length:
                raise OSError(f"the partial copy holds {len(data)} of part {n}'s {length} bytes")
            self._send(u, n, data)
        except Exception as exc:  # noqa: BLE001 - the upload is aborted; the object goes the regular way
            u.error = u.error or f"part {n}: {self._why(exc)}"

    def _send(self, u: _Upload, n: int, data: bytes) -> None:
        digest = hashlib.md5(data)
        resp = u.client.upload_part(Bucket=self.side.bucket, Key=self.side.prefix + u.key, UploadId=u.upload_id,
                                    PartNumber=n, Body=data, ContentMD5=base64.b64encode(digest.digest()).decode())
        md5 = digest.hexdigest()
        etag = resp.get("ETag", "").strip('"')
        # S3 checked the bytes against Content-MD5; an ETag that is an MD5 must be this one (with
        # SSE-KMS it is no MD5 at all, and says so: evidence.etag_opaque)
        opaque = evidence.etag_opaque(s3.answer_of(u.key, len(data), resp), self.side.etag_is_md5)
        if not opaque and checksum.etag_kind(etag) == checksum.MD5 and etag.lower() != md5:
            raise ValueError(f"the destination answered ETag {etag!r} for part {n}, not its MD5 {md5}")
        u.md5s[n] = md5
        u.etags[n] = etag

    def take(self, key: str, size: int, src_etag: str, level: str, staged: str, md5: str, report: Report) -> bool:
        """Finish the early upload of a staged, verified object, if there is one for this version:
        True when it is taken (report(endpoint, ok, error, the destination's answer, what the
        upload should make) follows, from another thread); False: upload it the regular way.
        level, md5: how the source side verified it (its ledger row); the upload is completed only
        when the bytes it is made of have that checksum."""
        u = self.uploads.get(key)
        if u is None or u.taken:
            return False
        if (u.size, u.etag) != (size, src_etag) or u.error:
            self._abort(u, u.error or "the staged copy is another version")
            return False
        u.taken = True
        self._finisher.submit(self._finish, u, staged, level, md5, report)
        return True

    def _finish(self, u: _Upload, staged: str, level: str, verified_md5: str, report: Report) -> None:
        try:
            for f in u.futures:
                f.result()
            if u.error:
                raise ValueError(u.error)
            made = self._parts_of_staged(u, staged, level, verified_md5)
            resp = u.client.complete_multipart_upload(
                Bucket=self.side.bucket, Key=self.side.prefix + u.key, UploadId=u.upload_id,
                MultipartUpload={"Parts": [{"PartNumber": n, "ETag": f'"{u.etags[n]}"'}
                                           for n in range(1, u.parts + 1)]})
        except Exception as exc:  # noqa: BLE001 - aborted; the regular way takes the object next
            error = self._why(exc)
            self._abort(u, error, wait=True)
            report(u.ep, False, f"early multipart upload: {error}", None, None)
            return
        self.uploads.pop(u.key, None)
        self._journal_clear()
        log.info("uploaded %r while it was fetched: %d of %d parts went out before it was staged", u.key,
                 u.early, u.parts)
        report(u.ep, True, "", s3.answer_of(u.key, u.size, resp), made)

    def _parts_of_staged(self, u: _Upload, staged: str, level: str, verified_md5: str) -> Made:
        """Read the staged copy once, in order: each part sent early must equal its bytes, the
        others are sent from them. The bytes must have the checksum verified at staging, or nothing
        is completed (a staged copy changed after its verification, between the destination side's
        check and this read, say): in the source's parts when the source side verified those (its
        multipart ETag), the parts' MD5s make the source's ETag; else the whole MD5 is made too, or
        the source's parts when the source side verified those instead of an MD5. The same read
        makes the copy's CRC64NVME, which the destination may keep (evidence.py)."""
        u.early = len(u.md5s)
        # the source side verified the bytes by the source's parts (their multipart ETag; a row
        # with no MD5 was checked by nothing else)
        by_source = u.source_parts and (level == checksum.MULTIPART or not verified_md5)
        whole = hashlib.md5() if verified_md5 and not by_source else None
        by_parts = () if by_source or verified_md5 else checksum.source_part_sizes(u.size, u.etag)
        multis = [checksum.Multipart(ps) for ps in by_parts]
        crc = checksum.new_sum(checksum.CRC64NVME)
        md5s = []
        with open(staged, "rb") as fh:
            for n in range(1, u.parts + 1):
                if self._closing:
                    raise ValueError("the destination side stops")
                data = fh.read(min(u.part, u.size - (n - 1) * u.part))
                for h in ([whole] if whole else []) + multis + ([crc] if crc else []):
                    h.update(data)
                if n in u.md5s:
                    md5 = hashlib.md5(data).hexdigest()
                    if md5 != u.md5s[n]:
                        raise ValueError(f"part {n} sent early differs from the staged copy")
                else:
                    self._send(u, n, data)
                    md5 = u.md5s[n]
                md5s.append(md5)
        made = checksum.parts_etag(md5s)
        if by_source:
            good = made == u.etag.strip('"').lower()
        else:
            good = whole.hexdigest() == verified_md5 if whole else \
                (not multis or u.etag.strip('"').lower() in (m.etag() for m in multis))
        if not good:
            raise ValueError("the staged copy no longer matches the checksum verified at staging")
        return Made(made, {checksum.CRC64NVME: crc.b64()} if crc else {})

    def _why(self, exc: BaseException) -> str:
        """A failure for the log: our own checks and local I/O as they are, S3's errors named."""
        return str(exc) if isinstance(exc, (ValueError, OSError)) else self.describe(exc)

    def _abort(self, u: _Upload, why: str, wait: bool = False) -> None:
        """Give the upload up: no part is started any more; once the parts being sent are done
        (a part sent to an aborted upload only fails, and may be retried), it is aborted, in the
        background unless `wait`."""
        if self.uploads.get(u.key) is u:
            del self.uploads[u.key]
        u.error = u.error or why
        for f in u.futures:
            f.cancel()
        if wait:
            self._abort_now(u, why)
        else:
            self._finisher.submit(self._abort_now, u, why)

    def _abort_now(self, u: _Upload, why: str) -> None:
        for f in u.futures:
            if not f.cancelled():
                f.exception()  # waits; its error is already in u.error
        try:
            u.client.abort_multipart_upload(Bucket=self.side.bucket, Key=self.side.prefix + u.key,
                                            UploadId=u.upload_id)
        except Exception as exc:  # noqa: BLE001 - left in the journal: the next start aborts it
            self._leftover = True
            log.warning("cannot abort the early multipart upload of %r (%s); the next start tries again",
                        u.key, self.describe(exc))
            return
        log.info("early upload of %r given up (%s); it goes the regular way", u.key, why)
        self._journal_clear()

    def close(self) -> None:
        """Abort every upload not completed (on exit)."""
        self._closing = True
        for u in list(self.uploads.values()):
            if not u.taken:
                self._abort(u, "the destination side stops")
        self._finisher.shutdown(wait=True)
        self._pool.shutdown(wait=True, cancel_futures=True)
