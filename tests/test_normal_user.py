"""A normal user mounts an image, reads it and unmounts it: no root, no kernel module."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import force_unmount, need
from tests.permissions_probe import probe

pytestmark = pytest.mark.slow
NOBODY = 65534


@pytest.fixture
def home() -> Iterator[Path]:
    """A directory nobody can use (pytest's temporary directories are private to root)."""
    with tempfile.TemporaryDirectory() as directory:
        os.chmod(directory, 0o755)
        yield Path(directory)


def as_nobody(home: Path, *args: str) -> subprocess.CompletedProcess:
    """Run `uvfs ARGS` as nobody, with Debian's python3 and this project's packages."""
    site = next(Path(sys.prefix, "lib").glob("python3*/site-packages"))
    (home / "sitecustomize.py").write_text(f"import site\nsite.addsitedir({str(site)!r})\n")
    command = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
               "env", f"PYTHONPATH={home}", f"HOME={home}", "/usr/bin/python3", "-m",
               "uvfs.cli", *args]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_nobody_mounts_reads_and_unmounts_an_image(home: Path) -> None:
    need("mke2fs", "setpriv")
    if os.geteuid() != 0:
        pytest.skip("becoming nobody needs root")
    if os.stat("/dev/fuse").st_mode & 0o666 != 0o666:
        pytest.fail("/dev/fuse is not usable by normal users: run make test (it sets 0666)")
    tree = home / "tree"
    tree.mkdir()
    (tree / "note").write_text("mounted by nobody\n")
    image, mnt = home / "image", home / "mnt"
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext2", "-d", str(tree), str(image), "4M"],
                   check=True)  # fmt: skip
    mnt.mkdir()
    os.chown(image, NOBODY, NOBODY)
    os.chown(mnt, NOBODY, NOBODY)
    try:
        done = as_nobody(home, "mount", "-o", "ro", str(image), str(mnt))
        assert (done.returncode, done.stderr) == (0, "")
        read = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                               "--clear-groups", "cat", str(mnt / "note")],
                              capture_output=True, text=True, check=False)  # fmt: skip
        assert read.stdout == "mounted by nobody\n"
        done = as_nobody(home, "umount", str(mnt))
        assert (done.returncode, done.stderr) == (0, "")
        assert not os.path.ismount(mnt)
    finally:
        force_unmount(mnt)


NOBODY_USER = [f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]


@pytest.fixture
def roots_image(home: Path) -> Iterator[tuple[Path, Path]]:
    """(image, mountpoint), both nobody's; inside the image everything is root's: a 0755
    root directory and a 0600 file ``secret``. The mountpoint is unmounted at the end."""
    need("mke2fs", "setpriv")
    if os.geteuid() != 0:
        pytest.skip("becoming nobody needs root")
    tree = home / "tree"
    tree.mkdir()
    (tree / "secret").write_text("root's\n")
    (tree / "secret").chmod(0o600)
    image, mnt = home / "image", home / "mnt"
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext2", "-d", str(tree), "-E", "root_owner=0:0",
                    str(image), "4M"], check=True)  # fmt: skip
    mnt.mkdir()
    os.chown(image, NOBODY, NOBODY)
    os.chown(mnt, NOBODY, NOBODY)
    try:
        yield image, mnt
    finally:
        force_unmount(mnt)


def test_the_mounting_user_is_checked_like_anyone_else(home: Path, roots_image) -> None:
    image, mnt = roots_image
    done = as_nobody(home, "mount", str(image), str(mnt))
    assert (done.returncode, done.stderr) == (0, "")
    ops = [["read", "secret"], ["create", "new", "644"], ["chown", ".", NOBODY, NOBODY]]
    assert probe(mnt, NOBODY_USER, ops) == ["EACCES", "EACCES", "EPERM"]


def test_fakeroot_makes_the_mounting_user_root_inside(home: Path, roots_image) -> None:
    image, mnt = roots_image
    done = as_nobody(home, "mount", "-o", "fakeroot", str(image), str(mnt))
    assert (done.returncode, done.stderr) == (0, "")
    ops = [["read", "secret"], ["write", "secret", "ROOT"], ["create", "new", "644"],
           ["chown", "new", 7, 8], ["mkdir", "d", "700"]]  # fmt: skip
    assert probe(mnt, NOBODY_USER, ops) == [
        ["ok", "root's\n"], "ok", ["ok", ["0o100644", 0, 0]], ["ok", ["0o100644", 7, 8]],
        ["ok", ["0o40700", 0, 0]],
    ]  # fmt: skip
    assert as_nobody(home, "umount", str(mnt)).returncode == 0
    listing = subprocess.run(["debugfs", "-R", "stat /new", str(image)], capture_output=True,
                             text=True, check=True).stdout  # fmt: skip
    assert "User:     7   Group:     8" in listing


def test_fakeroot_with_allow_other_is_refused(home: Path, roots_image) -> None:
    image, mnt = roots_image
    done = as_nobody(home, "mount", "-o", "fakeroot,allow_other", str(image), str(mnt))
    reason = "fakeroot cannot be combined with allow_other (nothing would check the other users)"
    assert (done.returncode, done.stderr) == (1, f"uvfs: {reason}\n")
    assert not os.path.ismount(mnt)
