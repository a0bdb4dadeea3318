#!/usr/bin/env python3
"""Show both sides' progress, staging volumes, rates and ETA, from local files only (see README)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from s5jtransfer import status  # noqa: E402

if __name__ == "__main__":
    sys.exit(status.main())
