"""How the command line reports a failure the user caused: one line, ``uvfs: ...``."""

from __future__ import annotations

import sys


class UserError(Exception):
    """A failure to report as one line and exit status 1."""


def warn(message: str) -> None:
    print(f"uvfs: {message}", file=sys.stderr)
