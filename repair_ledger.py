#!/usr/bin/env python3
"""Compare source and destination and fix the ledger so missing objects move again (see README)."""
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


if __name__ == "__main__":
    try:  # a Ctrl-C while the modules load, before the command handles it: no traceback
        from s5jtransfer import commands
        code = commands.repair()
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        code = 130
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # done: a Ctrl-C now would only interrupt the exit
    sys.exit(code)
