"""Permissions on a shared mount are exactly the kernel's ext4's, for every user.

The oracle is the kernel itself: the same script of operations, run as root and as two
other users (one with a supplementary group), on a kernel loop mount of one copy of an
image and on an ``allow_other`` uvfs mount of another, must give the same outcome, errno
for errno, and leave the same modes, owners and ACLs. No permission option is typed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import force_unmount, need, run_uvfs
from tests.ext2.writing import fresh_image, fsck
from tests.permissions_probe import probe

pytestmark = pytest.mark.slow

ROOT = ["--reuid=0", "--regid=0", "--clear-groups"]
U1 = ["--reuid=1001", "--regid=1001", "--groups=3000"]  # a member of group 3000
U2 = ["--reuid=1002", "--regid=1002", "--clear-groups"]
ACCESS, DEFAULT = "system.posix_acl_access", "system.posix_acl_default"
NO_ID = 0xFFFFFFFF
USER_OBJ, USER, GROUP_OBJ, MASK, OTHER = 1, 2, 4, 0x10, 0x20

SETUP = [
    ["umask", "022"],
    ["mkdir", "private", "700"], ["create", "private/s", "600"], ["write", "private/s", "secret"],
    ["mkdir", "pub", "755"], ["create", "pub/r", "644"], ["write", "pub/r", "hello"],
    ["mkdir", "tmp", "777"], ["chmod", "tmp", "1777"],
    ["mkdir", "sgid", "775"], ["chown", "sgid", 0, 3000], ["chmod", "sgid", "2775"],
    ["mkdir", "shared", "750"], ["chown", "shared", 0, 3000],
    ["create", "shared/g", "640"], ["chown", "shared/g", 0, 3000], ["write", "shared/g", "group"],
    ["mkdir", "acl", "755"], ["create", "acl/f", "600"], ["write", "acl/f", "acl"],
    ["setacl", "acl/f", ACCESS, [[USER_OBJ, 6, NO_ID], [USER, 4, 1002], [GROUP_OBJ, 0, NO_ID],
                                 [MASK, 4, NO_ID], [OTHER, 0, NO_ID]]],
    ["getacl", "acl/f", ACCESS],
    ["chmod", "acl/f", "640"], ["getacl", "acl/f", ACCESS],
    ["mkdir", "acl/d", "755"],
    ["setacl", "acl/d", DEFAULT, [[USER_OBJ, 7, NO_ID], [USER, 7, 1002], [GROUP_OBJ, 5, NO_ID],
                                  [MASK, 7, NO_ID], [OTHER, 0, NO_ID]]],
    ["setacl", "acl/d", ACCESS, [[USER_OBJ, 7, NO_ID], [USER, 7, 1002], [GROUP_OBJ, 5, NO_ID],
                                 [MASK, 7, NO_ID], [OTHER, 5, NO_ID]]],
    ["create", "eq", "644"],
    ["setacl", "eq", ACCESS, [[USER_OBJ, 6, NO_ID], [GROUP_OBJ, 0, NO_ID], [OTHER, 0, NO_ID]]],
    ["getacl", "eq", ACCESS],
    ["create", "suid", "755"], ["chmod", "suid", "4777"],
    ["create", "sgidx", "755"], ["chown", "sgidx", 0, 3000], ["chmod", "sgidx", "2777"],
    ["create", "trunc", "755"], ["write", "trunc", "data"], ["chmod", "trunc", "6777"],
]  # fmt: skip

AS_U1 = [
    ["read", "private/s"], ["listdir", "private"], ["stat", "private/s"],
    ["access", "private", "1"], ["chdir", "private"],
    ["create", "x", "644"], ["mkdir", "y", "755"],
    ["write", "pub/r", "no"], ["read", "pub/r"], ["access", "pub/r", "4"],
    ["create", "tmp/a", "666"], ["chmod", "tmp/a", "666"],
    ["umask", "077"], ["create", "tmp/m", "666"], ["mkdir", "tmp/md", "777"], ["umask", "022"],
    ["read", "shared/g"],
    ["create", "sgid/f", "644"], ["mkdir", "sgid/d", "755"], ["create", "sgid/s", "2755"],
    ["write", "suid", "x"], ["stat", "suid"], ["write", "sgidx", "x"], ["stat", "sgidx"],
    ["chmod", "pub/r", "600"], ["chown", "tmp/a", 1002, -1], ["chown", "tmp/a", -1, 3000],
    ["chown", "tmp/a", -1, 1002], ["utime", "tmp/a", 1000],
    ["read", "acl/f"], ["create", "acl/d/u1", "644"],
    ["setacl", "tmp/a", ACCESS, [[USER_OBJ, 6, NO_ID], [USER, 4, 1002], [GROUP_OBJ, 4, NO_ID],
                                 [MASK, 4, NO_ID], [OTHER, 6, NO_ID]]],
    ["getacl", "tmp/a", ACCESS],
    ["noatime", "pub/r"],
    ["setxattr", "pub/r", "user.x", "v"], ["setxattr", "tmp/a", "user.x", "v"],
    ["mknod", "tmp/fifo", "666"], ["symlink", "tmp/ln", "../pub/r"], ["rename", "tmp/m", "tmp/m2"],
    ["link", "pub/r", "tmp/hard"], ["chmod", "tmp/md", "2777"], ["stat", "tmp/md"],
]  # fmt: skip

AS_U2 = [
    ["read", "shared/g"], ["listdir", "shared"],
    ["unlink", "tmp/a"], ["rename", "tmp/a", "tmp/b"], ["rmdir", "tmp/md"],
    ["utime", "tmp/a", 5], ["utime", "tmp/a", None], ["write", "tmp/a", "u2"],
    # Umask 0 where a default ACL applies: the kernel masks the mode before uvfs sees it
    # (pyfuse3 cannot ask it not to), which ext4 would not do there.
    ["read", "acl/f"], ["umask", "000"],
    ["create", "acl/d/u2", "666"], ["getacl", "acl/d/u2", ACCESS],
    ["mkdir", "acl/d/sub", "777"], ["getacl", "acl/d/sub", ACCESS],
    ["getacl", "acl/d/sub", DEFAULT], ["symlink", "acl/d/ln", "u2"],
    ["mknod", "acl/d/fifo", "644"], ["getacl", "acl/d/fifo", ACCESS], ["umask", "022"],
    ["create", "sgid/f2", "2755"], ["mkdir", "sgid/d2", "700"],
    ["setacl", "tmp/a", ACCESS, [[USER_OBJ, 7, NO_ID], [GROUP_OBJ, 7, NO_ID], [OTHER, 7, NO_ID]]],
    ["chmod", "tmp/a", "777"], ["removexattr", "tmp/a", "user.x"],
    ["truncate", "trunc", 1], ["stat", "trunc"],
    ["noatime", "tmp/a"], ["write", "tmp/hard", "no"],
]  # fmt: skip

AS_ROOT = [
    ["read", "private/s"], ["noatime", "pub/r"], ["chmod", "suid", "4755"],
    ["chown", "suid", 1001, 1001], ["stat", "suid"],
    ["chmod", "acl/d/sub", "750"], ["getacl", "acl/d/sub", ACCESS],
    ["removexattr", "acl/f", ACCESS], ["stat", "acl/f"], ["unlink", "tmp/a"],
]  # fmt: skip

READ_ONLY = [
    ["read", "private/s"], ["listdir", "private"], ["read", "pub/r"], ["read", "shared/g"],
    ["read", "acl/f"], ["access", "acl/f", "4"], ["listdir", "acl/d"], ["read", "acl/d/u2"],
]  # fmt: skip


@pytest.fixture
def place() -> Iterator[Path]:
    """A directory other users can walk through (pytest's are private to root)."""
    directory = Path(tempfile.mkdtemp(prefix="uvfs-perm-"))
    directory.chmod(0o755)
    yield directory
    for mountpoint in directory.glob("*-mnt"):
        force_unmount(mountpoint)
        subprocess.run(["umount", str(mountpoint)], capture_output=True, check=False)
    shutil.rmtree(directory, ignore_errors=True)


def script(mnt: Path, steps: list[tuple[list[str], list]]) -> list:
    """Each step's outcomes, paired with its operations so that a mismatch reads well."""
    return [list(zip(map(json.dumps, ops), probe(mnt, user, ops), strict=True))
            for user, ops in steps]  # fmt: skip


def tree(mnt: Path) -> dict[str, tuple]:
    """Mode, owner, size and extended attributes (ACLs included) of every path."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(mnt):
        for name in sorted([*dirnames, *filenames]):
            path = Path(dirpath, name)
            st = path.lstat()
            names = sorted(os.listxattr(path, follow_symlinks=False))
            xattrs = [(n, os.getxattr(path, n, follow_symlinks=False)) for n in names]
            size = st.st_size if not path.is_dir() or path.is_symlink() else None
            out[str(path.relative_to(mnt))] = (oct(st.st_mode), st.st_uid, st.st_gid, size,
                                               st.st_nlink, xattrs)  # fmt: skip
    return out


def kernel_mount(image: Path, mnt: Path, options: str) -> None:
    mnt.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "ext4", "-o", f"loop,{options}", str(image), str(mnt)],
                   check=True, capture_output=True)  # fmt: skip


def test_every_user_gets_what_ext4_gives(place: Path) -> None:
    need("mke2fs", "e2fsck", "setpriv")
    if os.geteuid() != 0:
        pytest.skip("switching users and loop mounts need root")
    image = fresh_image(place / "uvfs.img", block_size=4096, size_mb=16, extra=("-I", "256"))
    oracle_image = place / "kernel.img"
    shutil.copyfile(image, oracle_image)
    steps = [(ROOT, SETUP), (U1, AS_U1), (U2, AS_U2), (ROOT, AS_ROOT)]

    kernel, uvfs = place / "kernel-mnt", place / "uvfs-mnt"
    kernel_mount(oracle_image, kernel, "rw")
    uvfs.mkdir()
    run_uvfs("mount", "-o", "allow_other", str(image), str(uvfs))
    expected, seen = script(kernel, steps), script(uvfs, steps)
    for want, got in zip(expected, seen, strict=True):
        assert got == want
    assert tree(uvfs) == tree(kernel)

    subprocess.run(["umount", str(kernel)], check=True)
    run_uvfs("umount", str(uvfs))
    fsck(image)
    # Read-only mounts check reads and searches the same way.
    kernel_mount(oracle_image, kernel, "ro")
    run_uvfs("mount", "-o", "ro,allow_other", str(image), str(uvfs))
    ro_steps = [(U1, READ_ONLY), (U2, READ_ONLY)]
    assert script(uvfs, ro_steps) == script(kernel, ro_steps)
