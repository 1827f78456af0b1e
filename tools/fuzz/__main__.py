"""``python -m tools.fuzz``: see tools/fuzz/__init__.py."""

from ._cli import main

raise SystemExit(main())
