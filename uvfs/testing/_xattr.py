"""Checks on extended attributes: set/get/list/remove, create and replace flags, sizes."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from uvfs.testing._helpers import pattern, raises, write_file
from uvfs.testing._registry import check


def _user(path: Path, follow: bool = True) -> list[str]:
    """The user.* names on `path` (security.* and the like belong to the system)."""
    return sorted(n for n in os.listxattr(path, follow_symlinks=follow) if n.startswith("user."))


@check("write")
def check_xattr_roundtrip(d: Path) -> None:
    """Attributes read back byte for byte, empty and binary values included, and are listed."""
    write_file(d / "f", b"")
    values = {"user.a": b"1", "user.empty": b"", "user.bin": bytes(range(256))}
    for name, value in values.items():
        os.setxattr(d / "f", name, value)
    assert _user(d / "f") == sorted(values)
    for name, value in values.items():
        assert os.getxattr(d / "f", name) == value


@check("write")
def check_xattr_fresh_file(d: Path) -> None:
    """A new file has no user attributes; reading one gives ENODATA."""
    write_file(d / "f", b"")
    assert _user(d / "f") == []
    raises(errno.ENODATA, os.getxattr, d / "f", "user.missing")


@check("write")
def check_xattr_create_flag(d: Path) -> None:
    """XATTR_CREATE adds a new attribute and gives EEXIST for an existing one."""
    write_file(d / "f", b"")
    os.setxattr(d / "f", "user.a", b"first", os.XATTR_CREATE)
    raises(errno.EEXIST, os.setxattr, d / "f", "user.a", b"second", os.XATTR_CREATE)
    assert os.getxattr(d / "f", "user.a") == b"first"


@check("write")
def check_xattr_replace_flag(d: Path) -> None:
    """XATTR_REPLACE changes an existing attribute and gives ENODATA for a missing one."""
    write_file(d / "f", b"")
    raises(errno.ENODATA, os.setxattr, d / "f", "user.a", b"x", os.XATTR_REPLACE)
    assert _user(d / "f") == []
    os.setxattr(d / "f", "user.a", b"first")
    os.setxattr(d / "f", "user.a", b"2nd", os.XATTR_REPLACE)
    assert os.getxattr(d / "f", "user.a") == b"2nd"


@check("write")
def check_xattr_resize(d: Path) -> None:
    """Replacing a value with a longer then a shorter one keeps exactly the last value."""
    write_file(d / "f", b"")
    for value in [b"short", pattern(2000), b"", pattern(700, seed=9), b"s"]:
        os.setxattr(d / "f", "user.v", value)
        assert os.getxattr(d / "f", "user.v") == value


@check("write")
def check_xattr_remove(d: Path) -> None:
    """removexattr deletes one attribute; removing a missing one gives ENODATA."""
    write_file(d / "f", b"")
    os.setxattr(d / "f", "user.a", b"1")
    os.setxattr(d / "f", "user.b", b"2")
    os.removexattr(d / "f", "user.a")
    assert _user(d / "f") == ["user.b"]
    raises(errno.ENODATA, os.getxattr, d / "f", "user.a")
    raises(errno.ENODATA, os.removexattr, d / "f", "user.a")


@check("write")
def check_xattr_sizes(d: Path) -> None:
    """A 255-byte name and a 1000-byte value fit; a 256-byte name gives ERANGE."""
    write_file(d / "f", b"")
    name = "user." + "n" * 250
    os.setxattr(d / "f", name, pattern(1000))
    assert os.getxattr(d / "f", name) == pattern(1000)
    raises(errno.ERANGE, os.setxattr, d / "f", name + "n", b"x")
    assert _user(d / "f") == [name]


@check("write")
def check_xattr_many(d: Path) -> None:
    """Thirty small attributes are all listed and read back."""
    write_file(d / "f", b"")
    for i in range(30):
        os.setxattr(d / "f", f"user.attr{i:02d}", f"value {i}".encode())
    assert _user(d / "f") == [f"user.attr{i:02d}" for i in range(30)]
    for i in range(30):
        assert os.getxattr(d / "f", f"user.attr{i:02d}") == f"value {i}".encode()


@check("write")
def check_xattr_directory(d: Path) -> None:
    """Directories carry user attributes as files do."""
    (d / "sub").mkdir()
    os.setxattr(d / "sub", "user.dir", b"on a dir")
    assert os.getxattr(d / "sub", "user.dir") == b"on a dir"
    assert _user(d / "sub") == ["user.dir"]


@check("write")
def check_xattr_namespace_rules(d: Path) -> None:
    """user.* on a symlink gives EPERM; an unknown namespace gives EOPNOTSUPP."""
    write_file(d / "f", b"")
    os.symlink("f", d / "link")
    raises(errno.EPERM, os.setxattr, d / "link", "user.a", b"x", follow_symlinks=False)
    raises(errno.EOPNOTSUPP, os.setxattr, d / "f", "bogus.a", b"x")
    assert _user(d / "f") == []


@check("write")
def check_xattr_follows_inode(d: Path) -> None:
    """Attributes belong to the inode: seen through a hard link and kept across rename."""
    write_file(d / "f", b"")
    os.setxattr(d / "f", "user.a", b"1")
    os.link(d / "f", d / "g")
    os.rename(d / "f", d / "h")
    assert os.getxattr(d / "g", "user.a") == b"1"
    assert os.getxattr(d / "h", "user.a") == b"1"


@check("write")
def check_xattr_fd(d: Path) -> None:
    """fsetxattr, fgetxattr, flistxattr and fremovexattr act through a descriptor."""
    fd = os.open(d / "f", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.setxattr(fd, "user.fd", b"via fd")
        assert os.getxattr(fd, "user.fd") == b"via fd"
        assert "user.fd" in os.listxattr(fd)
        os.removexattr(fd, "user.fd")
        raises(errno.ENODATA, os.getxattr, fd, "user.fd")
    finally:
        os.close(fd)
