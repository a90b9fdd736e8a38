"""``python -m alignlab``: see :mod:`alignlab.cli`."""

import sys

from alignlab.cli import main

if __name__ == "__main__":
    sys.exit(main())
