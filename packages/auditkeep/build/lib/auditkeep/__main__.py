"""``python -m auditkeep``: the ``auditkeep`` command."""

import sys

from auditkeep.cli import main

if __name__ == "__main__":  # imported (a tool walking every module), it does nothing
    sys.exit(main())
