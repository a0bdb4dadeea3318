#!/usr/bin/env python3
"""Start over: remove the ledgers and run files and empty the staging areas (see README)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from s5jtransfer import commands  # noqa: E402

if __name__ == "__main__":
    sys.exit(commands.reset())
