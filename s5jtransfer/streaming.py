"""Uploading a large object while the source side is still fetching it.

A large object is fetched in ranges, one object after another at the speed of the whole source
link (direct.get_ordered), and only once its last byte is in, verified and ledgered may the
destination side upload it the regular way. Until then the destination link idles or carries
small objects only, and after the last one it sends the whole object on its own. Here its parts
go out as the ranges land, so the destination link carries them meanwhile.

Source side (dest_stream_uploads): for an object of at least part_size_mb fetched in ranges on
the event loop, a note in <volume>/s5jtransfer/streaming/<file name>: the key, size and listed ETag, and
how many bytes from the start of the partial copy are written. It is replaced (atomically) each
time that prefix holds one more whole part, and at the end; it is removed once the copy is
verified and staged, or given up.

Objects from SINGLE_MIN (8 MiB) up to the part size are sent as one PUT instead (_Single): its
body is read from the partial copy as it grows, all but the last byte, which is sent only once
the object is taken up and every byte sent hashes to the verified MD5; otherwise the connection
is cut mid-body and S3 keeps nothing. The source side then replaces the note at every range.

Destination side (Streamer): for each note, a multipart upload whose parts are read from the
partial copy as they are written and sent with their Content-MD5. Nothing is completed on the
note's word. When the object is staged, verified and ledgered, and the destination side takes
it up as usual (after re-hashing the staged copy), every part sent early is compared with the
staged copy's bytes (MD5 per part), the rest is sent from the staged copy, and only then is the
upload completed; the object is then confirmed like any other upload. A part that does not match
aborts the multipart upload and the object goes the regular way. Uploads never taken up (the
copy failed, the source side stopped) are aborted. Their IDs are journaled in
dest_multipart.jsonl first, so a destination side stopped by a power cut aborts them at its next
start.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import select
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from . import checksum
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
SINGLE_MIN = 8 * MIB  # objects from this size to the part size are streamed as one PUT (_Single)
SINGLE_CHUNK = 1 * MIB
SINGLE_IDLE = 30.0  # seconds a streamed PUT waits for more bytes (S3 itself gives up after about 20)
SINGLE_FAILS = 3  # streamed PUTs failing in a row that turn them off for the run


def part_size_for(size: int, part_size: int) -> int:
    """The configured part size; larger (whole MiB) when S3's 10,000 parts would not hold the object."""
    need = -(-size // MAX_PARTS)
    return max(part_size, -(-need // MIB) * MIB)


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


class _Single:
    """An object below the part size sent as one PUT while it is fetched: the request's body is
    read from the partial copy as its written prefix grows, all but its last byte. The PUT ends,
    and the object exists at the destination, only once that byte is sent, which happens only
    when the object is staged, verified and taken up, and the bytes sent then hash to the MD5
    verified at staging. Anything else (a mismatch, an error, a stop) closes the connection mid-
    body, and S3 keeps nothing of a PUT whose body did not arrive whole."""

    def __init__(self, key: str, size: int, etag: str, partial: str, staged: str, ep: int, target,
                 path: str, on_end: Callable[[str, str], None]) -> None:
        self.key, self.size, self.etag, self.partial, self.staged, self.ep = key, size, etag, partial, staged, ep
        self.target, self.path, self.on_end = target, path, on_end
        self.ready = 0
        self.sent = 0
        self.md5 = hashlib.md5()  # of the bytes sent so far
        self.taken = False
        self.error = ""
        self.seen = time.monotonic()
        self.early = 0  # bytes sent before it was taken up
        self._take: tuple | None = None  # (staged, verified MD5, report) once taken
        self._done = False  # the thread has ended
        self._cond = threading.Condition()
        self._conn = None
        self._thread = threading.Thread(target=self._run, name="stream-put", daemon=True)
        self._thread.start()

    def advance(self, ready: int) -> None:
        with self._cond:
            if ready > self.ready:
                self.ready = min(ready, self.size)
                self._cond.notify()

    def take(self, staged: str, md5: str, report: Callable[[int, bool, str, str, str], None]) -> bool:
        """Finish the PUT from the staged copy: True when taken (report follows, from this
        object's thread); False when it has failed already (upload it the regular way)."""
        with self._cond:
            if self.error or self._done:
                return False
            self.taken = True
            self._take = (staged, md5, report)
            self._cond.notify()
            return True

    def abort(self, why: str) -> None:
        with self._cond:
            self.error = self.error or why
            self._cond.notify()
        conn = self._conn
        if conn is not None and conn.sock is not None:
            try:  # wakes a send blocked on a slow link; the server drops the incomplete PUT
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _read(self, start: int, length: int, path: str | None = None) -> bytes:
        """Bytes of the copy being fetched (or of `path` only, when given)."""
        data = read_copy(path, None, start, length) if path else read_copy(self.partial, self.staged, start, length)
        if len(data) != length:
            raise OSError(f"the copy holds {start + len(data)} of its first {start + length} bytes")
        return data

    def _send_upto(self, end: int) -> None:
        while self.sent < end and not self.error:
            data = self._read(self.sent, min(SINGLE_CHUNK, end - self.sent))
            self.md5.update(data)
            self._conn.send(data)
            self.sent += len(data)

    def _run(self) -> None:
        from . import direct

        try:
            self._conn = direct._http_connection(self.target, SINGLE_IDLE)
            self._conn.putrequest("PUT", self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.target.headers("PUT", self.path):  # UNSIGNED-PAYLOAD: sent as it is read
                self._conn.putheader(name, value)
            self._conn.putheader("Content-Length", str(self.size))
            self._conn.putheader("User-Agent", "s5jtransfer")
            self._conn.endheaders()
            idle_since = time.monotonic()
            while True:
                with self._cond:  # the object's last byte waits for the verification
                    if not self.error and self._take is None and min(self.ready, self.size - 1) <= self.sent:
                        self._cond.wait(0.5)
                    if self.error:
                        raise ValueError(self.error)
                    take, limit = self._take, min(self.ready, self.size - 1)
                if take is not None:
                    break
                if limit > self.sent:
                    self._send_upto(limit)
                    idle_since = time.monotonic()
                elif select.select([self._conn.sock], [], [], 0)[0]:
                    # the server answered (or closed) before the body was whole: a refusal, say
                    self._answer()
                    raise ValueError("the destination answered before the whole body was sent")
                elif time.monotonic() - idle_since > SINGLE_IDLE:
                    raise TimeoutError(f"nothing more to send for {SINGLE_IDLE:.0f}s")
            staged, verified_md5, report = take
            self.early = self.sent
            self.staged = staged
            rest = self._read(self.sent, self.size - self.sent, staged)  # the copy taken up, nothing else
            whole = self.md5.copy()
            whole.update(rest)
            if verified_md5 and whole.hexdigest() != verified_md5:  # none: only the benchmark's size-only variant
                raise ValueError("the bytes sent do not hash to the checksum verified at staging")
            self._conn.send(rest)
            self.sent = self.size
            etag = self._answer()
        except (BrokenPipeError, ConnectionResetError) as exc:
            # the server may have answered before reading the whole body (a refusal): say so
            if self._conn is not None and self._conn.sock is not None and not self.error:
                try:
                    self._conn.sock.settimeout(2.0)
                    self._answer()
                except ValueError as answered:
                    exc = answered
                except Exception:  # noqa: BLE001 - no answer: the broken connection is the error
                    pass
            self._failed(exc)
            return
        except Exception as exc:  # noqa: BLE001
            self._failed(exc)
            return
        with self._cond:
            self._done = True
        self._conn.close()
        self.on_end("", "")  # a success: failures in a row start again from none
        log.info("uploaded %r while it was fetched: %d of %d bytes went out before it was staged", self.key,
                 self.early, self.size)
        report(self.ep, True, "", etag, "")

    def _answer(self) -> str:
        """Read the PUT's answer: the ETag of a 200; anything else raises."""
        resp = self._conn.getresponse()
        doc = resp.read()
        etag = (resp.getheader("ETag") or "").strip('"')
        if resp.status != 200 or not etag:
            m = re.search(rb"<Code>([^<]{1,64})</Code>", doc)
            why = f"HTTP {resp.status}{' ' + m.group(1).decode('latin-1') if m else ''}"
            if 400 <= resp.status < 500 and resp.status not in (408, 409, 429):
                self.on_end(why, "")  # this endpoint does not take such PUTs: none more
            raise ValueError(f"the destination answered {why}")
        return etag

    def _failed(self, exc: BaseException) -> None:
        """The connection is closed mid-body (nothing is kept); the failure is reported once taken."""
        why = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
        with self._cond:
            own = not self.error  # failed on its own, not given up by the Streamer
            self.error = self.error or why
            self._done = True
            take = self._take
        if own:
            self.on_end("", why)
        if self._conn is not None:
            self._conn.close()
        log.debug("streamed PUT of %r given up: %s", self.key, self.error)
        if take is not None:
            take[2](self.ep, False, f"streamed PUT: {self.error}", "", "")


@dataclass
class _Upload:
    key: str
    size: int
    etag: str  # the source ETag the note names
    partial: str
    staged: str  # where the partial copy is renamed to once verified
    part: int
    upload_id: str
    ep: int
    client: object
    ready: int = 0
    submitted: int = 0  # parts 1..submitted are sent or being sent
    md5s: dict[int, str] = field(default_factory=dict)  # part number -> MD5 of the bytes sent
    futures: list[Future] = field(default_factory=list)
    error: str = ""
    taken: bool = False
    seen: float = 0.0  # when its note was last seen

    @property
    def parts(self) -> int:
        return max(1, -(-self.size // self.part))


class Streamer:
    """The destination side's early multipart uploads (see the module's doc). scan() and take()
    run in the destination side's cycle; parts go out on a pool of their own."""

    def __init__(self, side: Side, part_size: int, endpoint: Callable[[], int],
                 client_of: Callable[[int], object], describe: Callable[[BaseException], str],
                 target_of: Callable[[int], object] | None = None) -> None:
        self.side = side
        self.part_size = part_size  # the smallest object streamed as a multipart upload
        # objects from SINGLE_MIN to the part size: one streamed PUT each, through the endpoint's
        # direct.Target (None: not streamed); off for the run once an endpoint refuses one
        self.target_of = target_of
        self._singles_off = ""
        self._singles_failed: dict[str, tuple[int, str, str]] = {}  # key -> (size, ETag, partial copy)
        self._single_fails = 0  # streamed PUTs that failed on their own, in a row
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
            single = size < self.part_size
            if single and (size < SINGLE_MIN or self.target_of is None or self._singles_off):
                continue
            partial = vol.partial_path(name)
            if single and self._singles_failed.get(key) == (size, etag, partial):
                continue  # this copy's PUT failed already: the regular way, not one PUT after another
            u = self.uploads.get(key)
            if u is not None and not u.taken and (u.size, u.etag, u.partial) != (size, etag, partial):
                self._abort(u, "the source side is fetching another version")
                u = None
            if u is None:
                begin = self._begin_single if single else self._begin
                u = begin(key, size, etag, partial, vol.staged_path(name))
                if u is None:
                    continue
            if u.taken:
                continue
            u.seen = now
            if isinstance(u, _Single):
                u.advance(ready)
                continue
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
            resp = client.create_multipart_upload(Bucket=self.side.bucket, Key=self.side.prefix + key)
        except Exception as exc:  # noqa: BLE001 - the object goes the regular way
            log.debug("no early upload of %r: %s", key, self.describe(exc))
            self.uploads.pop(key, None)
            return None
        u = _Upload(key, size, etag, partial, staged, part_size_for(size, self.part_size), resp["UploadId"], ep,
                    client, seen=time.monotonic())
        self.uploads[key] = u  # before the journal line: an empty dict lets the journal be emptied
        try:
            self._journal({"key": key, "upload_id": u.upload_id, "ep": ep})
        except OSError as exc:
            self._abort(u, f"cannot journal it: {exc}")
            return None
        log.debug("uploading %r while it is fetched (%d parts)", key, u.parts)
        return u

    def _begin_single(self, key: str, size: int, etag: str, partial: str, staged: str) -> _Single | None:
        ep = self.endpoint()
        target = self.target_of(ep)
        if target is None:
            return None
        u = _Single(key, size, etag, partial, staged, ep, target, target.path(self.side.prefix + key),
                    self._single_ended)
        self.uploads[key] = u
        log.debug("uploading %r while it is fetched (one PUT)", key)
        return u

    def _single_ended(self, refused: str, failed: str) -> None:
        """A streamed PUT ended on its own: refused (a 4xx answer), failed otherwise, or neither
        (a success). A refusal, or SINGLE_FAILS in a row, turn streamed PUTs off for the run (a
        store that resets such requests may never answer with a status)."""
        with self._lock:
            if not refused and not failed:
                self._single_fails = 0
                return
            self._single_fails += 1
            if refused or self._single_fails >= SINGLE_FAILS:
                why = refused or f"{self._single_fails} failed in a row, the last: {failed}"
                if not self._singles_off:
                    self._singles_off = why
                    log.info("PUTs streamed while their objects are fetched do not work at the destination (%s); "
                             "objects below the part size are uploaded once staged for the rest of this run", why)

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
        etag = resp.get("ETag", "").strip('"').lower()
        # S3 checked the bytes against Content-MD5; an ETag that is an MD5 must be this one (with
        # SSE-KMS it is not an MD5 at all, and the object is then confirmed by size, as any upload)
        if checksum.etag_kind(etag) == checksum.MD5 and etag != md5:
            raise ValueError(f"the destination answered ETag {etag!r} for part {n}, not its MD5 {md5}")
        u.md5s[n] = md5

    def take(self, key: str, size: int, src_etag: str, staged: str, md5: str,
             report: Callable[[int, bool, str, str, str], None]) -> bool:
        """Finish the early upload of a staged, verified object, if there is one for this version:
        True when it is taken (report(endpoint, ok, error, destination ETag, expected ETag) follows,
        from another thread); False: upload it the regular way. md5: of the verified bytes; the
        upload is completed only when the bytes it is made of hash to it."""
        u = self.uploads.get(key)
        if u is None or u.taken:
            return False
        if (u.size, u.etag) != (size, src_etag) or u.error:
            self._abort(u, u.error or "the staged copy is another version")
            return False
        if isinstance(u, _Single):
            if u.take(staged, md5, lambda *a: self._single_done(u, report, *a)):
                return True
            self._abort(u, u.error)
            return False
        u.taken = True
        self._finisher.submit(self._finish, u, staged, md5, report)
        return True

    def _finish(self, u: _Upload, staged: str, verified_md5: str,
                report: Callable[[int, bool, str, str, str], None]) -> None:
        try:
            for f in u.futures:
                f.result()
            if u.error:
                raise ValueError(u.error)
            md5s = []
            early = len(u.md5s)
            # the whole of what the upload is made of (the parts sent early equal these bytes, the
            # others are these bytes), in order: a staged copy changed after its verification
            # (between the destination side's check and this read, say) is never completed
            whole = hashlib.md5()
            with open(staged, "rb") as fh:
                for n in range(1, u.parts + 1):
                    if self._closing:
                        raise ValueError("the destination side stops")
                    data = fh.read(min(u.part, u.size - (n - 1) * u.part))
                    whole.update(data)
                    if n in u.md5s:
                        md5 = hashlib.md5(data).hexdigest()
                        if md5 != u.md5s[n]:
                            raise ValueError(f"part {n} sent early differs from the staged copy")
                    else:
                        self._send(u, n, data)
                        md5 = u.md5s[n]
                    md5s.append(md5)
            if verified_md5 and whole.hexdigest() != verified_md5:
                raise ValueError("the staged copy no longer matches the checksum verified at staging")
            expected = hashlib.md5(b"".join(bytes.fromhex(m) for m in md5s)).hexdigest() + f"-{len(md5s)}"
            resp = u.client.complete_multipart_upload(
                Bucket=self.side.bucket, Key=self.side.prefix + u.key, UploadId=u.upload_id,
                MultipartUpload={"Parts": [{"PartNumber": n, "ETag": f'"{m}"'} for n, m in enumerate(md5s, 1)]})
            got = resp.get("ETag", "").strip('"')
        except Exception as exc:  # noqa: BLE001 - aborted; the regular way takes the object next
            error = self._why(exc)
            self._abort(u, error, wait=True)
            report(u.ep, False, f"early multipart upload: {error}", "", "")
            return
        self.uploads.pop(u.key, None)
        self._journal_clear()
        log.info("uploaded %r while it was fetched: %d of %d parts went out before it was staged", u.key, early,
                 len(md5s))
        report(u.ep, True, "", got, expected)

    def _single_done(self, u: _Single, report, ep: int, ok: bool, error: str, etag: str, expected: str) -> None:
        if self.uploads.get(u.key) is u:
            del self.uploads[u.key]
        if not ok:
            self._singles_failed[u.key] = (u.size, u.etag, u.partial)
        report(ep, ok, error, etag, expected)

    def _why(self, exc: BaseException) -> str:
        """A failure for the log: our own checks and local I/O as they are, S3's errors named."""
        return str(exc) if isinstance(exc, (ValueError, OSError)) else self.describe(exc)

    def _abort(self, u: _Upload, why: str, wait: bool = False) -> None:
        """Give the upload up: no part is started any more; once the parts being sent are done
        (a part sent to an aborted upload only fails, and may be retried), it is aborted, in the
        background unless `wait`."""
        if self.uploads.get(u.key) is u:
            del self.uploads[u.key]
        if isinstance(u, _Single):  # nothing to abort at the destination: its PUT never ends
            self._singles_failed[u.key] = (u.size, u.etag, u.partial)
            u.abort(why)
            return
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
            if not u.taken or (isinstance(u, _Single) and u.sent < u.size):
                self._abort(u, "the destination side stops")
        self._finisher.shutdown(wait=True)
        self._pool.shutdown(wait=True, cancel_futures=True)
