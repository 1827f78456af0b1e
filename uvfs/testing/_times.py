"""Checks on times: nanosecond storage, utimensat's UTIME_NOW/UTIME_OMIT, and which call
moves which of atime, mtime and ctime.

"Now" is a window: the kernel stamps with a coarse clock that may lag the one Python
reads by a tick, so a time counts as now when it lies within SLACK of [before, after].
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from uvfs.testing._helpers import write_file
from uvfs.testing._registry import check
from uvfs.testing._syscalls import UTIME_NOW, UTIME_OMIT, utimensat

SLACK = 20_000_000  # ns: one scheduler tick (at most 10 ms) twice over
OLD = 1_000_000_000_123_456_789  # 2001-09-09, with nanoseconds


def _now_window(op: Callable[[], object]) -> tuple[int, int]:
    """Run `op` between two readings of the clock, after one tick, so times must move."""
    time.sleep(SLACK / 1e9)
    before = time.time_ns()
    op()
    return before - SLACK, time.time_ns() + SLACK


def _is_now(ns: int, window: tuple[int, int]) -> bool:
    return window[0] <= ns <= window[1]


def _aged(*paths: Path) -> None:
    """Set atime and mtime of `paths` to OLD so a later change shows."""
    for path in paths:
        os.utime(path, ns=(OLD, OLD), follow_symlinks=False)


@check("write")
def check_times_nanoseconds(d: Path) -> None:
    """atime and mtime are stored to the nanosecond."""
    write_file(d / "f", b"")
    os.utime(d / "f", ns=(1_234_567_890_123_456_789, 1_111_111_111_987_654_321))
    st = os.stat(d / "f")
    assert (st.st_atime_ns, st.st_mtime_ns) == (
        1_234_567_890_123_456_789,
        1_111_111_111_987_654_321,
    )


@check("write")
def check_times_range(d: Path) -> None:
    """Times after 2038 (2**31 s) and before 1970 are stored exactly."""
    write_file(d / "f", b"")
    for seconds in [2**31 + 5, 2**32 + 7, -1_000_000_000, 0]:
        os.utime(d / "f", ns=(seconds * 10**9, seconds * 10**9))
        assert os.stat(d / "f").st_mtime_ns == seconds * 10**9
        assert os.stat(d / "f").st_atime_ns == seconds * 10**9


@check("write")
def check_utime_omit(d: Path) -> None:
    """UTIME_OMIT leaves that time alone while the other is set."""
    write_file(d / "f", b"")
    _aged(d / "f")
    utimensat(d / "f", (0, UTIME_OMIT), (5, 6))
    st = os.stat(d / "f")
    assert (st.st_atime_ns, st.st_mtime_ns) == (OLD, 5 * 10**9 + 6)
    utimensat(d / "f", (7, 8), (0, UTIME_OMIT))
    st = os.stat(d / "f")
    assert (st.st_atime_ns, st.st_mtime_ns) == (7 * 10**9 + 8, 5 * 10**9 + 6)


@check("write")
def check_utime_now(d: Path) -> None:
    """UTIME_NOW sets that time to now; the other, omitted, stays."""
    write_file(d / "f", b"")
    _aged(d / "f")
    window = _now_window(lambda: utimensat(d / "f", (0, UTIME_OMIT), (0, UTIME_NOW)))
    st = os.stat(d / "f")
    assert st.st_atime_ns == OLD
    assert _is_now(st.st_mtime_ns, window)
    window = _now_window(lambda: os.utime(d / "f"))
    st = os.stat(d / "f")
    assert _is_now(st.st_atime_ns, window)
    assert _is_now(st.st_mtime_ns, window)


@check("write")
def check_utime_sets_ctime_now(d: Path) -> None:
    """Setting explicit times moves ctime to now, never to the time given."""
    write_file(d / "f", b"")
    window = _now_window(lambda: os.utime(d / "f", ns=(OLD, OLD)))
    assert _is_now(os.stat(d / "f").st_ctime_ns, window)


@check("write")
def check_create_times(d: Path) -> None:
    """Creating a file stamps its three times now and moves its parent's mtime and ctime."""
    _aged(d)
    window = _now_window(lambda: write_file(d / "f", b""))
    st, parent = os.stat(d / "f"), os.stat(d)
    assert all(_is_now(t, window) for t in (st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns))
    assert _is_now(parent.st_mtime_ns, window)
    assert _is_now(parent.st_ctime_ns, window)


@check("write")
def check_write_times(d: Path) -> None:
    """A write moves mtime and ctime to now and leaves atime."""
    write_file(d / "f", b"before")
    _aged(d / "f")

    def write() -> None:
        with open(d / "f", "r+b") as f:
            f.write(b"after")

    window = _now_window(write)
    st = os.stat(d / "f")
    assert st.st_atime_ns == OLD
    assert _is_now(st.st_mtime_ns, window)
    assert _is_now(st.st_ctime_ns, window)


@check("write")
def check_read_updates_atime(d: Path) -> None:
    """A read moves an atime older than mtime to now (relatime), leaving mtime and ctime."""
    if os.statvfs(d).f_flag & os.ST_NOATIME:
        pytest.skip("mounted noatime: reads keep atime by request")
    write_file(d / "f", b"read me")
    os.utime(d / "f", ns=(OLD, OLD + 10**9))
    ctime = os.stat(d / "f").st_ctime_ns
    window = _now_window(lambda: (d / "f").read_bytes())
    st = os.stat(d / "f")
    assert _is_now(st.st_atime_ns, window)
    assert (st.st_mtime_ns, st.st_ctime_ns) == (OLD + 10**9, ctime)


@check("write")
def check_truncate_times(d: Path) -> None:
    """truncate and open with O_TRUNC move mtime and ctime to now."""
    write_file(d / "f", b"some bytes")
    _aged(d / "f")
    window = _now_window(lambda: os.truncate(d / "f", 3))
    assert _is_now(os.stat(d / "f").st_mtime_ns, window)
    assert _is_now(os.stat(d / "f").st_ctime_ns, window)
    _aged(d / "f")
    window = _now_window(lambda: os.close(os.open(d / "f", os.O_WRONLY | os.O_TRUNC)))
    assert _is_now(os.stat(d / "f").st_mtime_ns, window)
    assert _is_now(os.stat(d / "f").st_ctime_ns, window)


@check("write")
def check_chmod_times(d: Path) -> None:
    """chmod moves ctime only."""
    write_file(d / "f", b"")
    _aged(d / "f")
    window = _now_window(lambda: os.chmod(d / "f", 0o600))
    st = os.stat(d / "f")
    assert (st.st_atime_ns, st.st_mtime_ns) == (OLD, OLD)
    assert _is_now(st.st_ctime_ns, window)


@check("write")
def check_link_unlink_times(d: Path) -> None:
    """link and unlink move the file's ctime and the parent's mtime and ctime, not file mtime."""
    write_file(d / "f", b"")
    _aged(d / "f", d)
    window = _now_window(lambda: os.link(d / "f", d / "g"))
    st, parent = os.stat(d / "f"), os.stat(d)
    assert st.st_mtime_ns == OLD
    assert _is_now(st.st_ctime_ns, window)
    assert _is_now(parent.st_mtime_ns, window)
    _aged(d / "f", d)
    window = _now_window(lambda: os.unlink(d / "g"))
    st, parent = os.stat(d / "f"), os.stat(d)
    assert st.st_mtime_ns == OLD
    assert _is_now(st.st_ctime_ns, window)
    assert _is_now(parent.st_mtime_ns, window)
    assert _is_now(parent.st_ctime_ns, window)


@check("write")
def check_mkdir_rmdir_times(d: Path) -> None:
    """mkdir and rmdir move the parent's mtime and ctime."""
    _aged(d)
    window = _now_window(lambda: os.mkdir(d / "sub"))
    assert _is_now(os.stat(d).st_mtime_ns, window)
    _aged(d)
    window = _now_window(lambda: os.rmdir(d / "sub"))
    assert _is_now(os.stat(d).st_mtime_ns, window)
    assert _is_now(os.stat(d).st_ctime_ns, window)


@check("write")
def check_rename_times(d: Path) -> None:
    """rename moves both parents' mtime and ctime and leaves the file's mtime."""
    (d / "a").mkdir()
    (d / "b").mkdir()
    write_file(d / "a" / "f", b"")
    _aged(d / "a", d / "b", d / "a" / "f")
    window = _now_window(lambda: os.rename(d / "a" / "f", d / "b" / "f"))
    for parent in [d / "a", d / "b"]:
        assert _is_now(os.stat(parent).st_mtime_ns, window)
        assert _is_now(os.stat(parent).st_ctime_ns, window)
    assert os.stat(d / "b" / "f").st_mtime_ns == OLD
