"""Whole-file writes that a reader never sees half done: a temporary file beside the target,
then a rename over it."""

from __future__ import annotations

import os
from typing import Iterable


def write_atomic(path: str, text: str | Iterable[str], durable: bool = False, tmp: str | None = None,
                 errors: str = "strict") -> None:
    """Replace `path` with `text`: a string, or pieces written one after another (a long file is
    never held whole in memory). durable: the bytes are fsynced before the rename, so a power cut
    leaves the old file or the new one, never an empty one. tmp: the temporary file's name
    (path + ".tmp" by default; a per-process name where several processes write the same file).
    errors: the encoding's error handler (surrogateescape for keys that are not UTF-8)."""
    tmp = tmp or path + ".tmp"
    try:
        with open(tmp, "w", encoding="utf-8", errors=errors) as fh:
            if isinstance(text, str):
                fh.write(text)
            else:
                fh.writelines(text)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:  # a full disk, say: no half-written temporary file is left behind
            os.remove(tmp)
        except OSError:
            pass
        raise
