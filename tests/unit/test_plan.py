"""Unit tests for s5jtransfer.plan: what still has to move (todo) and where it goes (assign)."""

from __future__ import annotations

from collections import defaultdict

import pytest

from s5jtransfer import plan
from s5jtransfer.plan import Assignment, Item, Space, VolumeSlot, assign, is_done, on_disk, todo


def keys(items):
    return [i.key for i in items]


def by_volume(assignments):
    out = defaultdict(list)
    for a in assignments:
        out[a.volume].append(a.item)
    return out


def volume_bytes(assignments):
    out = defaultdict(int)
    for a in assignments:
        out[a.volume] += a.item.size
    return out


# --- todo --------------------------------------------------------------------------------------

def test_todo_skips_objects_ledgered_with_same_size_and_etag():
    listing = [Item("a", 10, "e1"), Item("b", 20, "e2")]
    ledger = {"a": (10, "e1", "", ""), "b": (20, "e2", "1", "md5")}
    assert todo(listing, ledger) == []


def test_todo_includes_objects_not_in_the_ledger():
    listing = [Item("a", 10, "e1"), Item("new", 5, "e9")]
    assert keys(todo(listing, {"a": (10, "e1")})) == ["new"]


def test_todo_reincludes_object_whose_etag_changed():
    listing = [Item("a", 10, "e-new")]
    assert todo(listing, {"a": (10, "e-old", "", "")}) == [Item("a", 10, "e-new")]


def test_todo_reincludes_object_whose_size_changed():
    listing = [Item("a", 11, "e1")]
    assert todo(listing, {"a": (10, "e1", "", "")}) == [Item("a", 11, "e1")]


def test_todo_legacy_row_without_etag_counts_by_size():
    listing = [Item("same", 10, "e1"), Item("grown", 12, "e2")]
    ledger = {"same": (10, "", "", ""), "grown": (10, "", "", "")}
    assert keys(todo(listing, ledger)) == ["grown"]


def test_is_done_rules():
    assert is_done(10, "e", (10, "e"))
    assert is_done(10, "e", (10, ""))  # legacy row: size decides
    assert is_done(10, "", (10, "x"))  # listing without ETag: size decides
    assert not is_done(10, "e", None)
    assert not is_done(10, "e", (11, "e"))
    assert not is_done(10, "e", (10, "f"))


def test_todo_orders_largest_first_then_by_key():
    listing = [Item("s", 1, ""), Item("b", 300, ""), Item("m2", 50, ""), Item("m1", 50, ""), Item("x", 0, "")]
    assert keys(todo(listing, {})) == ["b", "m1", "m2", "s", "x"]


def test_todo_accepts_a_generator():
    listing = (Item(f"k{i}", i, "") for i in range(5))
    assert keys(todo(listing, {"k3": (3, "")})) == ["k0", "k1", "k2", "k4"]


def test_the_work_goes_large_objects_first_largest_first_then_the_rest_in_key_order():
    big = plan.LARGE_BYTES
    listing = [Item("a", 5, ""), Item("z", big, ""), Item("m", 3 * big, ""), Item("b", big - 1, ""), Item("c", 0, "")]
    assert keys(todo(listing, {})) == ["m", "z", "a", "b", "c"]


class NoScanDict(dict):
    """A ledger that may only be looked up by key: any scan of it fails the test."""

    def _scan(self, *a, **k):
        raise AssertionError("todo() scanned the ledger instead of looking keys up")

    __iter__ = keys = values = items = _scan


def test_todo_scales_to_200k_items_with_dict_lookups():
    n = 200_000
    listing = [Item(f"dir/{i:07d}", i % 1000, f"etag{i}") for i in range(n)]
    ledger = NoScanDict({f"dir/{i:07d}": (i % 1000, f"etag{i}", "", "") for i in range(0, n, 2)})
    out = todo(listing, ledger)
    assert len(out) == n // 2
    assert all(int(o.key[4:]) % 2 == 1 for o in out)
    assert [o.key for o in out] == sorted(o.key for o in out)  # small objects: in key order


# --- assign ------------------------------------------------------------------------------------

BIG = 10**12


def test_assign_balances_bytes_across_volumes():
    items = [Item(f"k{s}", s, "") for s in (100, 90, 80, 70, 60, 50)]
    slots = [VolumeSlot(0, 1, BIG), VolumeSlot(1, 2, BIG), VolumeSlot(2, 3, BIG)]
    placed, waiting = assign(items, slots, {1: Space(BIG), 2: Space(BIG), 3: Space(BIG)})
    assert waiting == []
    assert sorted(keys(a.item for a in placed)) == sorted(keys(items))
    vb = volume_bytes(placed)
    assert set(vb) == {0, 1, 2}
    # greedy largest-first onto the emptiest volume: 100+50, 90+60, 80+70
    assert sorted(vb.values()) == [150, 150, 150]


def test_assign_returns_assignment_tuples_in_input_order():
    items = [Item("a", 5, ""), Item("b", 4, "")]
    placed, _ = assign(items, [VolumeSlot(7, 1, BIG)], {1: Space(BIG)})
    assert placed == [Assignment(items[0], 7), Assignment(items[1], 7)]


def test_assign_respects_per_volume_batch_budget():
    items = [Item(f"k{i}", 60, "") for i in range(5)]
    slots = [VolumeSlot(0, 1, 100), VolumeSlot(1, 2, 130)]
    placed, waiting = assign(items, slots, {1: Space(BIG), 2: Space(BIG)})
    vb = volume_bytes(placed)
    assert vb[0] <= 100 and vb[1] <= 130
    assert vb == {0: 60, 1: 120}
    assert len(waiting) == 2
    assert sorted(keys(placed_item for placed_item in (a.item for a in placed)) + keys(waiting)) == \
        sorted(keys(items))


def test_assign_respects_shared_device_free_space():
    # two volumes on one file system with 100 bytes free: together they may take only 100
    items = [Item("a", 60, ""), Item("b", 60, ""), Item("c", 30, "")]
    slots = [VolumeSlot(0, 42, BIG), VolumeSlot(1, 42, BIG)]
    placed, waiting = assign(items, slots, {42: Space(100)})
    assert sum(a.item.size for a in placed) <= 100
    assert keys(a.item for a in placed) == ["a", "c"]
    assert keys(waiting) == ["b"]


def test_assign_oversized_object_goes_to_an_empty_volume_when_device_has_room():
    items = [Item("huge", 500, "")]
    placed, waiting = assign(items, [VolumeSlot(0, 1, 100)], {1: Space(1000)})
    assert placed == [Assignment(items[0], 0)]
    assert waiting == []


def test_assign_oversized_object_does_not_join_a_volume_that_already_has_data():
    items = [Item("small", 50, ""), Item("huge", 500, "")]
    placed, waiting = assign(items, [VolumeSlot(0, 1, 100)], {1: Space(1000)})
    assert keys(a.item for a in placed) == ["small"]
    assert keys(waiting) == ["huge"]


def test_assign_oversized_object_waits_when_device_lacks_room():
    items = [Item("huge", 500, "")]
    placed, waiting = assign(items, [VolumeSlot(0, 1, 100)], {1: Space(499)})
    assert placed == []
    assert waiting == items


def test_assign_items_that_fit_nowhere_are_returned_as_waiting():
    items = [Item("a", 80, ""), Item("b", 70, ""), Item("c", 10, "")]
    slots = [VolumeSlot(0, 1, 100)]
    placed, waiting = assign(items, slots, {1: Space(BIG)})
    assert keys(a.item for a in placed) == ["a", "c"]
    assert keys(waiting) == ["b"]


def test_assign_device_without_free_space_takes_nothing():
    items = [Item("a", 1, ""), Item("b", 1, "")]
    placed, waiting = assign(items, [VolumeSlot(0, 1, BIG)], {1: Space(0)})
    assert placed == []
    assert keys(waiting) == ["a", "b"]


def test_assign_unknown_device_counts_as_no_space():
    items = [Item("a", 1, "")]
    placed, waiting = assign(items, [VolumeSlot(0, 99, BIG)], {})
    assert placed == [] and waiting == items


def test_assign_every_item_is_either_placed_or_waiting_exactly_once():
    items = [Item(f"k{i}", (i * 37) % 101 + 1, "") for i in range(200)]
    items.sort(key=lambda o: -o.size)
    slots = [VolumeSlot(i, i % 2, 700) for i in range(4)]
    placed, waiting = assign(items, slots, {0: Space(1500), 1: Space(1200)})
    got = keys(a.item for a in placed) + keys(waiting)
    assert sorted(got) == sorted(keys(items))
    vb = volume_bytes(placed)
    assert all(vb[i] <= 700 for i in vb)
    dev_used = defaultdict(int)
    for a in placed:
        dev_used[a.volume % 2] += a.item.size
    assert dev_used[0] <= 1500 and dev_used[1] <= 1200


def test_assign_empty_items():
    assert assign([], [VolumeSlot(0, 1, 100)], {1: Space(100)}) == ([], [])


def test_assign_no_volumes_leaves_everything_waiting():
    items = [Item("a", 1, ""), Item("b", 2, "")]
    placed, waiting = assign(items, [], {})
    assert placed == []
    assert waiting == items


def test_assign_zero_byte_objects_are_placed():
    items = [Item("z1", 0, ""), Item("z2", 0, "")]
    placed, waiting = assign(items, [VolumeSlot(0, 1, 100)], {1: Space(100)})
    assert keys(a.item for a in placed) == ["z1", "z2"]
    assert waiting == []


# -- how each object is fetched (plan.route) ---------------------------------------------------
MIB = 1024 * 1024


@pytest.mark.parametrize("size, native, safe, stream, want", [
    (0, False, True, True, plan.SMALL),
    (8 * MIB - 1, False, True, True, plan.SMALL),
    (8 * MIB, False, True, True, plan.LARGE),
    (50 * MIB, False, True, True, plan.LARGE),  # one part at most: nothing to upload early
    (50 * MIB + 1, False, True, True, plan.CAT),  # two parts: the first goes out while the rest lands
    (50 * MIB + 1, False, True, False, plan.LARGE),  # dest_stream_uploads off
    (1, True, True, True, plan.API),  # native mode
    (60 * MIB, True, True, True, plan.API),
    (1, False, False, True, plan.API),  # a key a run file cannot carry
])
def test_route(size, native, safe, stream, want):
    assert plan.route(size, native, safe, 50 * MIB, stream) == want


@pytest.mark.parametrize("size, part", [
    (8 * MIB, 8),  # one range: the smallest
    (40 * MIB, 8),  # five of 8 MiB
    (41 * MIB, 9),
    (256 * MIB, 52),  # about five ranges, as s5cmd's own 50 MiB parts would make
    (50 * 1024 * MIB, 64),  # a huge object: ranges of 64 MiB, not hundreds of MiB each
])
def test_large_objects_go_in_about_five_parallel_ranges_of_8_to_64_mib(size, part):
    assert plan.large_flags(size) == ("-c", "5", "-p", str(part))


# --- staging counted the way file systems count -------------------------------------------------

def test_small_objects_take_whole_blocks_and_an_inode_each():
    """1,000 objects of 1 byte on 4 KiB blocks: 4 MB of disk, not 1 KB; and no more files than
    inodes left."""
    items = [Item(f"k{i:04d}", 1, "") for i in range(1000)]
    placed, waiting = assign(items, [VolumeSlot(0, 1, BIG)], {1: Space(100 * 4096, None, 4096)})
    assert len(placed) == 100 and len(waiting) == 900
    placed, waiting = assign(items, [VolumeSlot(0, 1, BIG)], {1: Space(BIG, 7, 4096)})
    assert len(placed) == 7
    # an empty object takes no block but an inode
    placed, _ = assign([Item("e", 0, "")] * 3, [VolumeSlot(0, 1, BIG)], {1: Space(0 + 4096, 2, 4096)})
    assert len(placed) == 2


def test_on_disk_rounds_up_to_whole_blocks():
    assert [on_disk(n, 4096) for n in (0, 1, 4096, 4097, 8192)] == [0, 4096, 4096, 8192, 8192]
    assert on_disk(12345, 1) == 12345


def test_a_volume_already_fetching_takes_only_what_its_batch_budget_leaves():
    items = [Item("a", 60, ""), Item("b", 30, "")]
    placed, waiting = assign(items, [VolumeSlot(0, 1, 100, used=50)], {1: Space(BIG)})
    assert [a.item.key for a in placed] == ["b"] and [i.key for i in waiting] == ["a"]
    # with nothing in flight, one larger than the budget still goes (alone)
    placed, _ = assign([Item("huge", 500, "")], [VolumeSlot(0, 1, 100)], {1: Space(BIG)})
    assert len(placed) == 1
