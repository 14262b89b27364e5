"""``python -m ftbroker.cli``: the ``ftbroker`` command."""

import sys

from ftbroker.cli import main

sys.exit(main())
