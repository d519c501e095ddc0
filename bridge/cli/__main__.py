"""``python -m bridge.cli``: the ``bridge`` console script."""

import sys

from bridge.cli import main

sys.exit(main())
