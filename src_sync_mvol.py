#!/usr/bin/env python3
"""Source bucket -> staging volumes, verified and ledgered (see README)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from s5jtransfer import cli, commands  # noqa: E402

if __name__ == "__main__":
    cli.exit_now(commands.src_sync())
