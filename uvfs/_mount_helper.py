"""``mount.fuse.uvfs``: the helper mount(8) runs for ``mount -t fuse.uvfs`` and fstab lines.

mount(8) hands a ``fuse.uvfs`` mount to ``/sbin/mount.fuse.uvfs SOURCE MOUNTPOINT [-sfnv]
[-N NS] [-o OPTIONS] [-t fuse.uvfs]`` (install it there as a link to the console script).
The helper runs ``uvfs mount -o OPTIONS SOURCE MOUNTPOINT``, which returns once the mount
is live, so ``mount -a`` and systemd's mount units see it ready.

OPTIONS arrive as fstab holds them: ours (``ro``, ``partition=N``, ``cache_size=`` ...)
mixed with mount(8)'s own, which are dropped here: ``defaults``, ``auto``/``noauto``,
``user``/``users``/``nouser``/``owner``/``group``, ``nofail``, ``_netdev``, ``x-*`` and
``comment=*`` mean nothing to a filesystem; ``nosuid``, ``nodev`` and ``relatime`` are what
a FUSE mount always is. Anything else goes to uvfs, which names an option it does not know.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from uvfs import cli

_MOUNT_ONLY = frozenset(
    {"defaults", "auto", "noauto", "user", "users", "nouser", "owner", "group", "nofail",
     "_netdev", "nosuid", "nodev", "relatime"}
)  # fmt: skip


def _ours(option: str) -> bool:
    return not (option in _MOUNT_ONLY or option.startswith(("x-", "comment=")))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mount.fuse.uvfs", description="mount(8) helper for uvfs (type fuse.uvfs)"
    )
    parser.add_argument("source")
    parser.add_argument("mountpoint")
    parser.add_argument("-o", dest="options", default="")
    parser.add_argument("-t", dest="type", help="fuse.uvfs (ignored)")
    parser.add_argument("-N", dest="namespace", help="ignored")
    parser.add_argument("-f", dest="fake", action="store_true", help="do nothing")
    for flag in ("-s", "-n", "-v"):  # sloppy, no mtab, verbose: nothing to do
        parser.add_argument(flag, action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.fake:
        return 0
    options = ",".join(o for o in args.options.split(",") if o and _ours(o))
    return cli.main(["mount", *(["-o", options] if options else []), args.source, args.mountpoint])


if __name__ == "__main__":
    sys.exit(main())
