"""What the two bare pyfuse3 servers share: the kernel told what uvfs tells it, their
command line, and the main loop that serves a mount until it is unmounted.

Apart from ``_bare.py`` and ``_bare_ram.py`` so that neither server imports the other's tree
(the null tree's module imports uvfs): a bare server loads pyfuse3 and trio, nothing more.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import pyfuse3
import trio


class BareServer(pyfuse3.Operations):
    """A tree's requests, answered as uvfs answers the kernel: with the entry, attribute and
    negative timeouts the caller passes (uvfs's own), no "." lookups, no writeback cache, and
    POSIX ACLs only when `acl` (uvfs enables them for drivers with xattrs)."""

    supports_dot_lookup = False
    enable_writeback_cache = False

    def __init__(self, timeouts: Sequence[float], *, acl: bool) -> None:
        super().__init__()
        self.entry_timeout, self.attr_timeout, self.negative_timeout = timeouts
        self.enable_acl = acl  # read by pyfuse3 at INIT

    def _attributes(self, ino: int, mode: int, nlink: int, size: int) -> pyfuse3.EntryAttributes:
        """The record of one node, with the fields every tree has and uvfs's timeouts."""
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = ino
        entry.entry_timeout = self.entry_timeout
        entry.attr_timeout = self.attr_timeout
        entry.st_mode = mode
        entry.st_nlink = nlink
        entry.st_size = size
        entry.st_blksize = 4096
        return entry

    def _absent(self) -> pyfuse3.EntryAttributes:
        """The lookup reply for a missing name: inode 0, a cacheable "no such name"."""
        entry = pyfuse3.EntryAttributes()
        entry.entry_timeout = self.negative_timeout
        return entry


def command_line(prog: str) -> argparse.ArgumentParser:
    """The command line both servers start with: ``SPEC MOUNTPOINT --timeouts E A N``."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("spec")
    parser.add_argument("mountpoint")
    parser.add_argument("--timeouts", nargs=3, type=float, required=True,
                        metavar=("ENTRY", "ATTR", "NEGATIVE"))  # fmt: skip
    return parser


def serve(operations: pyfuse3.Operations, spec: str, mountpoint: str, *, read_only: bool) -> None:
    """Mount `operations` at `mountpoint` with the options uvfs would give `spec`'s mount
    (``default_permissions``; ``ro`` when `read_only`) and answer its requests until it is
    unmounted."""
    options = {f"fsname={os.path.abspath(spec)}", "subtype=bare", "default_permissions"}
    if read_only:
        options.add("ro")
    pyfuse3.init(operations, mountpoint, options)
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=True)
