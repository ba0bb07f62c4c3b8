"""python -m sweeps run|status|report <sweep.yaml>: the same as python -m lorakit.sweeps."""

import sys

from lorakit.sweeps.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
