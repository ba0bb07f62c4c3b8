"""python -m packing <pack.json>: the same as python -m lorakit pack <pack.json>."""

import sys

from lorakit.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["pack", *sys.argv[1:]]))
