"""``python -m auditrail``: the ``auditrail`` command."""

import sys

from auditrail.cli import main

if __name__ == "__main__":  # imported (a tool walking every module), it does nothing
    sys.exit(main())
