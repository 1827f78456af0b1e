"""``python -m uvfs.testing [--ro] MOUNTPOINT [PYTEST-ARG...]`` or ``--make-tree DIR``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pytest

from uvfs.testing import make_tree

# Run by path, not imported here: pytest imports it once its assert rewriting is on.
SUITE = Path(__file__).with_name("suite.py")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m uvfs.testing",
        description="Run the POSIX conformance checks against a mount; other arguments "
        "(-x, -k NAME, -v ...) go to pytest.",
    )
    parser.add_argument("--ro", action="store_true", help="read-only mount of the reference tree")
    parser.add_argument("--make-tree", metavar="DIR", type=Path, help="write the reference tree")
    parser.add_argument("mountpoint", nargs="?", type=Path)
    args, pytest_args = parser.parse_known_args(argv)
    if args.make_tree is not None:
        if args.mountpoint is not None or args.ro:
            parser.error("--make-tree takes only the directory to write")
        try:
            make_tree(args.make_tree)
        except OSError as e:
            print(f"uvfs: cannot write the reference tree: {e}", file=sys.stderr)
            return 1
        return 0
    if args.mountpoint is None:
        parser.error("a MOUNTPOINT (or --make-tree DIR) is needed")
    if not args.mountpoint.is_dir():
        print(f"uvfs: {args.mountpoint}: not a directory", file=sys.stderr)
        return 2
    kit = [
        *("-p", "uvfs.testing.plugin", "-p", "no:cacheprovider"),
        # The kit's own settings, not those of the project it is run from.
        *("-c", os.devnull, "--rootdir", str(SUITE.parent)),
        *("--uvfs-mountpoint", str(args.mountpoint.resolve())),
        *(["--uvfs-ro"] if args.ro else []),
    ]
    return int(pytest.main([str(SUITE), *kit, *pytest_args]))


if __name__ == "__main__":
    sys.exit(main())
