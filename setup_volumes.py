#!/usr/bin/env python3
"""Format and mount blank disks as staging volumes /tmp/volume-NN (see README)."""
import os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from s5jtransfer.setup_volumes import main
if __name__ == "__main__":
    sys.exit(main())
