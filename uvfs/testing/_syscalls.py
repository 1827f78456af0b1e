"""The calls Python's os module lacks, through ctypes: renameat2, utimensat with
UTIME_NOW/UTIME_OMIT, and opendir's telldir/seekdir (glibc on 64-bit Linux)."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

_libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2


def _check(result: int, path: Path) -> None:
    if result != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), str(path))


def renameat2(old: Path, new: Path, flags: int) -> None:
    """renameat2(2), which Python's os module lacks."""
    _check(_libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags), old)


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def utimensat(path: Path, atime: tuple[int, int], mtime: tuple[int, int]) -> None:
    """utimensat(2) with raw (seconds, nanoseconds) pairs, so UTIME_NOW/UTIME_OMIT pass."""
    times = (_Timespec * 2)(_Timespec(*atime), _Timespec(*mtime))
    _check(_libc.utimensat(AT_FDCWD, os.fsencode(path), times, 0), path)


class _Dirent(ctypes.Structure):
    """glibc's struct dirent on 64-bit Linux (the layout readdir(3) returns)."""

    _fields_ = [
        ("d_ino", ctypes.c_uint64),
        ("d_off", ctypes.c_int64),
        ("d_reclen", ctypes.c_ushort),
        ("d_type", ctypes.c_ubyte),
        ("d_name", ctypes.c_char * 256),
    ]


_libc.opendir.restype = ctypes.c_void_p
_libc.opendir.argtypes = [ctypes.c_char_p]
_libc.readdir.restype = ctypes.POINTER(_Dirent)
_libc.readdir.argtypes = [ctypes.c_void_p]
_libc.telldir.restype = ctypes.c_long
_libc.telldir.argtypes = [ctypes.c_void_p]
_libc.seekdir.argtypes = [ctypes.c_void_p, ctypes.c_long]
_libc.closedir.argtypes = [ctypes.c_void_p]


class DirStream:
    """opendir(3) with telldir/seekdir, which Python's os module lacks; a context manager."""

    def __init__(self, path: Path) -> None:
        self._dir = _libc.opendir(os.fsencode(path))
        if not self._dir:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e), str(path))

    def __enter__(self) -> DirStream:
        return self

    def __exit__(self, *exc: object) -> None:
        _libc.closedir(self._dir)

    def read(self) -> bytes | None:
        """The next name, '.' and '..' included, or None at the end."""
        entry = _libc.readdir(self._dir)
        return entry.contents.d_name if entry else None

    def tell(self) -> int:
        return _libc.telldir(self._dir)

    def listing(self) -> list[tuple[int, bytes]]:
        """Every (telldir position, name) from here to the end of the directory."""
        entries = []
        while True:
            position = self.tell()
            name = self.read()
            if name is None:
                return entries
            entries.append((position, name))

    def seek(self, position: int) -> None:
        _libc.seekdir(self._dir, position)
