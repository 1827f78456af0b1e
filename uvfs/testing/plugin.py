"""The kit's pytest plugin: command-line options and the ``uvfs_run`` fixture.

Use it from a driver's own test suite (``conftest.py``)::

    pytest_plugins = ["uvfs.testing.plugin"]

    @pytest.fixture(scope="module")
    def uvfs_mountpoint(tmp_path_factory):
        ...  # mount the driver, yield the mountpoint, unmount

and in a test module::

    from uvfs.testing import params

    @pytest.mark.parametrize("check", params(xfail={"times_nanoseconds": "whole seconds"}))
    def test_conformance(check, uvfs_run):
        uvfs_run(check)

For a read-only mount built from the reference tree, ``params(readonly=True)``; the mount
is seen to be read-only by its statvfs flags (or say so by overriding ``uvfs_readonly``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from uvfs.testing._registry import Check
from uvfs.testing._tree import make_tree

TREE = ".uvfs-kit-tree"  # the reference tree's copy in a read-write mount
SCRATCH = ".uvfs-kit-"  # + the check's name: its scratch directory

# The reference trees this session wrote, by mountpoint: written once, used by every read check.
_trees = pytest.StashKey[dict[Path, Path]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("uvfs", "uvfs conformance kit")
    group.addoption("--uvfs-mountpoint", metavar="DIR", help="the mount the checks run in")
    group.addoption(
        "--uvfs-ro",
        action="store_true",
        default=None,
        help="the mount is read-only and holds the reference tree at its root",
    )


@pytest.fixture(scope="session")
def uvfs_mountpoint(pytestconfig: pytest.Config) -> Path:
    """The mount under test: ``--uvfs-mountpoint``, or override this fixture."""
    value = pytestconfig.getoption("uvfs_mountpoint", None)
    if value is None:
        raise pytest.UsageError("uvfs: pass --uvfs-mountpoint or override uvfs_mountpoint")
    return Path(value)


@pytest.fixture
def uvfs_readonly(pytestconfig: pytest.Config, uvfs_mountpoint: Path) -> bool:
    """Whether the mount is read-only: ``--uvfs-ro``, else its statvfs flags say."""
    option = pytestconfig.getoption("uvfs_ro", None)
    if option is not None:
        return bool(option)
    return bool(os.statvfs(uvfs_mountpoint).f_flag & os.ST_RDONLY)


@pytest.fixture
def uvfs_run(
    request: pytest.FixtureRequest, uvfs_mountpoint: Path, uvfs_readonly: bool
) -> Callable[[Check], None]:
    """``uvfs_run(check)`` runs one check in the directory its kind asks for."""

    def run(check: Check) -> None:
        if check.kind == "write":
            if uvfs_readonly:
                pytest.skip("the mount is read-only")
            scratch = uvfs_mountpoint / f"{SCRATCH}{check.name}"
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir()
            try:
                check.fn(scratch)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        elif uvfs_readonly:
            check.fn(uvfs_mountpoint)
        elif check.kind == "readonly":
            pytest.skip("the mount is read-write")
        else:
            check.fn(_written_tree(request.config, uvfs_mountpoint))

    return run


def _written_tree(config: pytest.Config, mountpoint: Path) -> Path:
    """The reference tree in a read-write mount, written on first use and removed at exit."""
    trees = config.stash.setdefault(_trees, {})
    root = trees.get(mountpoint)
    if root is None or not root.is_dir():
        root = mountpoint / TREE
        shutil.rmtree(root, ignore_errors=True)
        make_tree(root)
        trees[mountpoint] = root
        config.add_cleanup(lambda: shutil.rmtree(root, ignore_errors=True))
    return root
