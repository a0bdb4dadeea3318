"""streaming.Streamer's check of a part's answer (the whole path runs against moto in
tests/integration/test_streaming.py; here, answers moto does not give)."""

from __future__ import annotations

import hashlib

import pytest

from s5jtransfer import streaming
from s5jtransfer.config import Secret, Side


class Answers:
    """An S3 client's upload_part that answers the given ETag."""

    def __init__(self, etag: str) -> None:
        self.etag = etag

    def upload_part(self, **kw):
        return {"ETag": f'"{self.etag}"'}


def upload(etag: str) -> streaming._Upload:
    return streaming._Upload("k", 10, "e", "/p", "/s", 5, False, "id", 0, Answers(etag))


def streamer() -> streaming.Streamer:
    side = Side("destination", "b", "p/", "us-east-1", Secret(""), Secret(""), ())
    return streaming.Streamer(side, 5, lambda: 0, lambda ep: None, str)


def test_a_part_answered_with_another_md5_is_refused():
    st = streamer()
    u = upload("0" * 32)
    with pytest.raises(ValueError, match="not its MD5"):
        st._send(u, 1, b"hello")
    assert u.md5s == {}
    st.close()


@pytest.mark.parametrize("etag", ["ABCDEF-not-an-md5", "5d41402abc4b2a76b9719d911017c592"])
def test_a_part_answered_with_its_md5_or_no_md5_at_all_is_kept(etag):
    """SSE-KMS answers an ETag that is no MD5: S3 checked Content-MD5, and the object is confirmed by size."""
    st = streamer()
    u = upload(etag)
    st._send(u, 1, b"hello")
    assert u.md5s == {1: hashlib.md5(b"hello").hexdigest()}
    st.close()
