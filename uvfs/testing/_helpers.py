"""What checks share: exact errno assertions, root and other-user runs, file content."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest


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
    who = " as uid 65534 (a FUSE mount lets other users in only with allow_other)" if nobody else ""
    assert os.waitstatus_to_exitcode(status) == 0, f"in a child process{who}: {message}"


def as_nobody(fn: Callable[[], object]) -> None:
    """Run `fn` as a user owning nothing and lacking every capability (uid 65534).

    As root that is a child process (`in_child`); otherwise the current user already
    lacks CAP_FSETID and owns nothing of another's, so `fn` runs here.
    """
    if os.geteuid() == 0:
        in_child(fn, nobody=True)
    else:
        fn()
