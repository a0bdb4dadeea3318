"""write_atomic: the whole new file or the old one, never a mix; pieces streamed; odd keys kept."""

from __future__ import annotations

import os

import pytest

from s5jtransfer.atomic import write_atomic


def test_replaces_the_file_and_leaves_no_temporary(tmp_path):
    p = tmp_path / "state.json"
    p.write_text("old")
    write_atomic(str(p), "new", durable=True)
    assert p.read_text() == "new" and os.listdir(tmp_path) == ["state.json"]


def test_pieces_are_written_in_order_and_a_named_temporary_is_used(tmp_path):
    p = tmp_path / "missing_keys.txt"
    write_atomic(str(p), (f"k{i}\n" for i in range(3)), tmp=str(tmp_path / "x.123.tmp"))
    assert p.read_text() == "k0\nk1\nk2\n" and sorted(os.listdir(tmp_path)) == ["missing_keys.txt"]


def test_a_key_that_is_not_utf8_round_trips_with_surrogateescape(tmp_path):
    p = tmp_path / "keys"
    key = b"bad\xff.bin".decode("utf-8", "surrogateescape")
    write_atomic(str(p), key + "\n", errors="surrogateescape")
    assert p.read_bytes() == b"bad\xff.bin\n"
    with pytest.raises(UnicodeEncodeError):
        write_atomic(str(p), key)  # strict by default: nothing replaced
    assert p.read_bytes() == b"bad\xff.bin\n"
