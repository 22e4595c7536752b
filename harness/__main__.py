"""`python -m qkbench` is the same as the `qkbench` command."""

import sys

from qkbench.cli import main

if __name__ == "__main__":
    sys.exit(main())
