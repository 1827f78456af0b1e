"""Checks on names: NAME_MAX, any bytes but '/' and NUL, '.' and '..', path errors."""

from __future__ import annotations

import errno
import os
import unicodedata
from pathlib import Path

from uvfs.testing._helpers import raises, write_file
from uvfs.testing._registry import check


@check("write")
def check_name_max(d: Path) -> None:
    """A 255-byte name is created, listed and opened."""
    name = "x" * 255
    write_file(d / name, b"ok")
    assert os.listdir(d) == [name]
    assert (d / name).read_bytes() == b"ok"


@check("write")
def check_name_too_long_create(d: Path) -> None:
    """Creating a 256-byte name fails with ENAMETOOLONG and leaves nothing behind."""
    raises(errno.ENAMETOOLONG, os.open, d / ("x" * 256), os.O_CREAT | os.O_WRONLY)
    raises(errno.ENAMETOOLONG, os.mkdir, d / ("y" * 256))
    raises(errno.ENAMETOOLONG, os.symlink, "target", d / ("z" * 256))
    assert os.listdir(d) == []


@check("write")
def check_name_too_long_rename_link(d: Path) -> None:
    """Renaming or linking to a 256-byte name fails with ENAMETOOLONG."""
    write_file(d / "a", b"")
    raises(errno.ENAMETOOLONG, os.rename, d / "a", d / ("x" * 256))
    raises(errno.ENAMETOOLONG, os.link, d / "a", d / ("x" * 256))
    assert os.listdir(d) == ["a"]


@check("write")
def check_name_max_multibyte(d: Path) -> None:
    """NAME_MAX counts bytes: 85 three-byte characters fit, 86 do not."""
    write_file(d / ("€" * 85), b"")
    raises(errno.ENAMETOOLONG, os.open, d / ("€" * 86), os.O_CREAT | os.O_WRONLY)
    assert os.listdir(d) == ["€" * 85]


@check("write")
def check_unicode_not_normalised(d: Path) -> None:
    """NFC and NFD spellings of a name are two different files, listed byte for byte."""
    nfc = unicodedata.normalize("NFC", "café-名前")
    nfd = unicodedata.normalize("NFD", "café-名前")
    write_file(d / nfc, b"nfc")
    write_file(d / nfd, b"nfd")
    assert sorted(os.listdir(os.fsencode(d))) == sorted([nfc.encode(), nfd.encode()])
    assert (d / nfc).read_bytes() == b"nfc"
    assert (d / nfd).read_bytes() == b"nfd"


@check("write")
def check_arbitrary_bytes(d: Path) -> None:
    """Any bytes but '/' and NUL make a name, including invalid UTF-8 and control bytes."""
    names = [b"\xff\xfe", b"\x01\x1f\x7f", b"a\\b:c*?<>|\"'", b" lead and trail "]
    for i, name in enumerate(names):
        write_file(Path(os.fsdecode(os.path.join(os.fsencode(d), name))), bytes([i]))
    assert sorted(os.listdir(os.fsencode(d))) == sorted(names)
    for i, name in enumerate(names):
        with open(os.path.join(os.fsencode(d), name), "rb") as f:
            assert f.read() == bytes([i])


@check("write")
def check_case_sensitive(d: Path) -> None:
    """Names differing only in case are different files."""
    write_file(d / "Name", b"upper")
    write_file(d / "name", b"lower")
    assert sorted(os.listdir(d)) == ["Name", "name"]
    assert (d / "Name").read_bytes() == b"upper"


@check("write")
def check_dot_and_dotdot(d: Path) -> None:
    """'.' is the directory itself, '..' its parent; listings show neither."""
    (d / "sub").mkdir()
    assert os.stat(f"{d}/sub/.").st_ino == os.stat(d / "sub").st_ino
    assert os.stat(f"{d}/sub/..").st_ino == os.stat(d).st_ino
    assert os.listdir(d / "sub") == []
    names = [e.name for e in os.scandir(d)]
    assert names == ["sub"]


@check("write")
def check_dot_names_reserved(d: Path) -> None:
    """'.' and '..' cannot be created (EEXIST), removed (EINVAL, ENOTEMPTY) or renamed (EBUSY)."""
    (d / "sub").mkdir()
    raises(errno.EEXIST, os.mkdir, f"{d}/sub/.")
    raises(errno.EEXIST, os.mkdir, f"{d}/sub/..")
    raises(errno.EEXIST, os.open, f"{d}/sub/.", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    raises(errno.EINVAL, os.rmdir, f"{d}/sub/.")
    raises(errno.ENOTEMPTY, os.rmdir, f"{d}/sub/..")
    raises(errno.EBUSY, os.rename, f"{d}/sub/.", d / "other")
    assert os.listdir(d) == ["sub"]


@check("write")
def check_enotdir_in_path(d: Path) -> None:
    """A file used as a directory in a path gives ENOTDIR, trailing slash included."""
    write_file(d / "f", b"")
    raises(errno.ENOTDIR, os.stat, d / "f" / "x")
    raises(errno.ENOTDIR, os.open, str(d / "f") + "/", os.O_RDONLY)
    raises(errno.ENOTDIR, os.mkdir, d / "f" / "x")
    raises(errno.ENOTDIR, os.open, d / "f" / "x", os.O_CREAT | os.O_WRONLY)


@check("write")
def check_enoent(d: Path) -> None:
    """Missing names give ENOENT: lookup, open without O_CREAT, create in a missing dir."""
    raises(errno.ENOENT, os.stat, d / "missing")
    raises(errno.ENOENT, os.open, d / "missing", os.O_RDONLY)
    raises(errno.ENOENT, os.open, d / "nodir" / "f", os.O_CREAT | os.O_WRONLY)
    raises(errno.ENOENT, os.mkdir, d / "nodir" / "sub")
    raises(errno.ENOENT, os.unlink, d / "missing")
    raises(errno.ENOENT, os.rmdir, d / "missing")
    raises(errno.ENOENT, os.rename, d / "missing", d / "other")
    assert os.listdir(d) == []


@check("write")
def check_trailing_slash_dir(d: Path) -> None:
    """A trailing slash is allowed on directories: mkdir, stat and rmdir of 'dir/'."""
    os.mkdir(str(d / "sub") + "/")
    assert os.path.isdir(str(d / "sub") + "/")
    os.rmdir(str(d / "sub") + "/")
    assert os.listdir(d) == []


@check("write")
def check_deep_path(d: Path) -> None:
    """A path 64 directories deep is created, resolved and removed."""
    path = d
    for i in range(64):
        path = path / f"level{i}"
        path.mkdir()
    write_file(path / "leaf", b"deep")
    assert (path / "leaf").read_bytes() == b"deep"
    os.unlink(path / "leaf")
    while path != d:
        os.rmdir(path)
        path = path.parent
    assert os.listdir(d) == []
