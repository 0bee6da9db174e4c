"""``python -m gateway``: the same as ``linli gateway``."""

import sys

from gateway.cli import main

sys.exit(main())
