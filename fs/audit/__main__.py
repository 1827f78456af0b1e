"""``python -m uvfs_fs.audit ARGS...``: the same as ``uvfs audit ARGS...``."""

import sys

from uvfs_fs.audit.cli import main

sys.exit(main(sys.argv[1:]))
