"""Entry point: ``python -m tools.bench [--quick] [--only SUITE] [--workdir DIR]``."""

import sys

from ._cli import main

sys.exit(main())
