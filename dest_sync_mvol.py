#!/usr/bin/env python3
"""Staging volumes -> destination bucket, confirmed, ledgered and freed (see README)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from s5jtransfer import cli, commands  # noqa: E402

if __name__ == "__main__":
    cli.exit_now(commands.dest_sync())
