"""The bare servers' main loop: a pyfuse3 `Operations` at a mountpoint until it is unmounted.

Apart from ``_bare.py`` and ``_bare_ram.py`` so that neither server imports the other's tree
(the null tree's module imports uvfs): a bare server loads pyfuse3 and trio, nothing more.
"""

from __future__ import annotations

import pyfuse3
import trio


def serve(operations: pyfuse3.Operations, mountpoint: str, options: set[str]) -> None:
    """Mount `operations` at `mountpoint` and answer its requests until it is unmounted."""
    pyfuse3.init(operations, mountpoint, options)
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=True)
