#!/usr/bin/env python3
"""Staging volumes -> destination bucket, confirmed, ledgered and freed (see README)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


if __name__ == "__main__":
    try:  # a Ctrl-C while the modules load, before the command handles it: no traceback
        from s5jtransfer import cli, commands
        code = commands.dest_sync()
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    cli.exit_now(code)
