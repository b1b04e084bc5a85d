"""``python -m auditrail``: the ``auditrail`` command."""

import sys

from auditrail.cli import main

sys.exit(main())
