#!/usr/bin/env python3
"""Compare source and destination and fix the ledger so missing objects move again (see README)."""
import os
import sys

import _signal  # the C module, loaded at once (signal imports enum and functools first)

# a Ctrl-C while the modules load (inside an import it can surface as another error): nothing
# is written yet, so exit at once, without a traceback; the command's own handling takes over
_signal.signal(_signal.SIGINT, lambda *_: (sys.stderr.write("interrupted\n"), os._exit(130)))

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


if __name__ == "__main__":
    from s5jtransfer import cli, commands
    cli.script_main(commands.repair)
