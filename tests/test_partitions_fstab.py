"""``mount -t fuse.uvfs`` and an /etc/fstab line work through the ``mount.fuse.uvfs`` helper,
with ``partition=`` and mount(8)'s own options (noauto, nofail, x-*) in the list. Run by the
real mount(8) in a private mount namespace, where the helper is laid over /usr/sbin and a
test fstab over /etc/fstab, so the host's stay untouched."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_partitions_mounted import FIVE, disk, kernel_partition

pytestmark = pytest.mark.slow
__all__ = ["disk", "kernel_partition"]  # fixtures, used by name

HELPER = Path(sys.executable).parent / "mount.fuse.uvfs"
_TEXT: dict = {"text": True, "errors": "surrogateescape"}  # names are bytes, not all UTF-8


def _listing(root: Path) -> list[str]:
    """Name, size and mode of every node, as ``find -printf '%P %s %m'`` prints them."""
    command = ["find", str(root), "-mindepth", "1", "-printf", r"%P %s %m\n"]
    done = subprocess.run(command, capture_output=True, check=True, **_TEXT)
    return sorted(done.stdout.splitlines())


def test_mount_t_fuse_uvfs_and_fstab(disk: Path, tmp_path: Path, kernel_partition) -> None:
    if shutil.which("unshare") is None or not HELPER.exists():
        pytest.skip("needs unshare and the installed mount.fuse.uvfs (make setup)")
    helpers = tmp_path / "helpers"
    helpers.mkdir()
    (helpers / "mount.fuse.uvfs").symlink_to(HELPER)
    one, five = tmp_path / "one", tmp_path / "five"
    one.mkdir()
    five.mkdir()
    fstab = tmp_path / "fstab"
    fstab.write_text(f"{disk} {one} fuse.uvfs ro,partition=1,noauto,nofail,x-gvfs-show 0 0\n")
    uvfs = f"{sys.executable} -m uvfs.cli"
    script = f"""
        set -e
        mount -t overlay overlay -o lowerdir={helpers}:/usr/sbin /usr/sbin
        mount --bind {fstab} /etc/fstab
        trap '{uvfs} umount {five} || true; {uvfs} umount {one} || true' EXIT
        mount -t fuse.uvfs -o ro,partition=5,nosuid,nodev {disk} {five}
        mount {one}
        grep -c " {five} fuse.ext2 ro," /proc/mounts
        grep -c " {one} fuse.ext2 ro," /proc/mounts
        cat {one}/one
        echo ---
        find {five} -mindepth 1 -printf '%P %s %m\\n' | sort
    """
    command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]
    done = subprocess.run(command, capture_output=True, timeout=120, **_TEXT)
    assert done.returncode == 0, done.stderr
    head, _, listing = done.stdout.partition("---\n")
    assert head == "1\n1\npartition one\n"
    assert listing.splitlines() == _listing(kernel_partition(disk, *FIVE))
    assert not os.path.ismount(one) and not os.path.ismount(five)
