#!/usr/bin/env python3
"""Format and mount blank disks as staging volumes /tmp/volume-NN (see README)."""
import os, signal, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
if __name__ == "__main__":
    try:  # a Ctrl-C while the modules load, before the command handles it: no traceback
        from s5jtransfer.setup_volumes import main
        code = main()
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        code = 130
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # done: a Ctrl-C now would only interrupt the exit
    sys.exit(code)
