"""The check registry: each check is a small function guarding one POSIX behaviour.

A check takes one directory and asserts exactly. Its kind says which directory it gets:

- ``write``: a fresh, empty scratch directory inside the mount, removed afterwards;
- ``read``: the reference tree (``uvfs.testing.make_tree``), which it only reads: the
  root of a read-only mount built from the tree, or a copy the kit writes into a
  read-write mount;
- ``readonly``: the reference tree on a read-only mount only (EROFS and the like).
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

Kind = Literal["write", "read", "readonly"]
CheckFn = Callable[[Path], None]


@dataclass(frozen=True)
class Check:
    """One conformance check: `fn(directory)` asserts the behaviour its docstring names."""

    name: str
    kind: Kind
    fn: CheckFn

    @property
    def doc(self) -> str:
        """The behaviour the check guards (the first line of its docstring)."""
        return (self.fn.__doc__ or "").strip().splitlines()[0]


CHECKS: dict[str, Check] = {}


def check(kind: Kind) -> Callable[[CheckFn], CheckFn]:
    """Register the decorated function as a check named after it (``check_`` dropped)."""

    def register(fn: CheckFn) -> CheckFn:
        name = fn.__name__.removeprefix("check_")
        assert fn.__doc__, f"check {name} must say what it guards"
        assert name not in CHECKS, f"two checks named {name}"
        CHECKS[name] = Check(name, kind, fn)
        return fn

    return register


def raises(expected: int | tuple[int, ...], fn: Callable, *args: object, **kwargs: object) -> None:
    """Assert that ``fn(*args, **kwargs)`` fails with exactly `expected` (one errno or a few)."""
    allowed = expected if isinstance(expected, tuple) else (expected,)
    try:
        fn(*args, **kwargs)
    except OSError as e:
        assert e.errno in allowed, (
            f"{getattr(fn, '__name__', fn)}: {errno.errorcode.get(e.errno, e.errno)}, "
            f"expected {'/'.join(errno.errorcode[a] for a in allowed)}"
        )
    else:
        raise AssertionError(
            f"{getattr(fn, '__name__', fn)} succeeded, expected "
            f"{'/'.join(errno.errorcode[a] for a in allowed)}"
        )


def need_root(why: str) -> None:
    """Skip the check unless running as root, saying what root is needed for."""
    if os.geteuid() != 0:
        pytest.skip(f"needs root: {why}")


def current_umask() -> int:
    """The process's umask (reading it means setting it: put straight back)."""
    old = os.umask(0)
    os.umask(old)
    return old


def write_file(path: Path, data: bytes) -> None:
    """Create or replace `path` holding `data`."""
    with open(path, "wb") as f:
        f.write(data)


def pattern(size: int, seed: int = 0) -> bytes:
    """`size` bytes that differ at every position of a 251-byte period (prime: no block aligns)."""
    period = bytes((i * 7 + seed) % 251 for i in range(251))
    return (period * (size // 251 + 1))[:size]


def in_child(fn: Callable[[], object], *, nobody: bool = False) -> None:
    """Run `fn` in a forked child process; with `nobody`, as uid and gid 65534.

    The child inherits open descriptors, so `fn` reaches files through them even when
    the mount sits below directories only root may enter (a FUSE mount must still let
    other users in: ``allow_other``). An exception in the child fails the check with
    its message.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        status = 0
        try:
            os.close(read_end)
            if nobody:
                os.setgroups([])
                os.setresgid(65534, 65534, 65534)
                os.setresuid(65534, 65534, 65534)
            fn()
        except BaseException as e:
            os.write(write_end, f"{type(e).__name__}: {e}".encode())
            status = 1
        os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        message = f.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, f"in a child process: {message}"


def as_nobody(fn: Callable[[], object]) -> None:
    """Run `fn` as a user owning nothing and lacking every capability (uid 65534).

    As root that is a child process (`in_child`); otherwise the current user already
    lacks CAP_FSETID and owns nothing of another's, so `fn` runs here.
    """
    if os.geteuid() == 0:
        in_child(fn, nobody=True)
    else:
        fn()


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

    def seek(self, position: int) -> None:
        _libc.seekdir(self._dir, position)
