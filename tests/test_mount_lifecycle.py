"""A mount's whole life: `uvfs mount` returns once it is live; `uvfs umount` returns once the
server has exited; a signal to the server unmounts cleanly; nothing is left behind."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tests.conftest import run_uvfs
from uvfs import _runtime


def _server_pid(mountpoint: Path) -> int:
    first = run_uvfs("stats", str(mountpoint)).stdout.splitlines()[0]
    return int(first.rsplit("pid ", 1)[1].rstrip(")"))


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "Z"


def _left_behind(mountpoint: Path) -> list[Path]:
    return [p for p in _runtime.paths_for(str(mountpoint))[:2] if p.exists()]


def test_umount_returns_after_the_server_and_its_records_are_gone(mount, hello_dir: Path) -> None:
    mnt = mount(hello_dir / "empty.img", fstype="hello_driver:DRIVER", options="ro,isolate",
                cwd=hello_dir)  # fmt: skip
    assert (mnt / "hello.txt").read_bytes() == b"Hello, world!\n"  # live on return
    pid = _server_pid(mnt)
    assert len(_left_behind(mnt)) == 2  # the record and the control socket
    run_uvfs("umount", str(mnt))
    assert _gone(pid)
    assert not os.path.ismount(mnt)
    assert _left_behind(mnt) == []


def test_a_terminated_server_unmounts_cleanly(mount, hello_dir: Path) -> None:
    mnt = mount(hello_dir / "empty.img", fstype="hello_driver:DRIVER", options="ro",
                cwd=hello_dir)  # fmt: skip
    pid = _server_pid(mnt)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(pid)
    assert not os.path.ismount(mnt)
    assert _left_behind(mnt) == []


def test_umount_finishes_even_when_another_namespace_holds_the_mount(
    mount, hello_dir: Path
) -> None:
    """An unshare made while mounted copies the mount; our unmount must still end the
    server (and so write everything back) instead of waiting for that copy to go."""
    import subprocess

    mnt = mount(hello_dir / "empty.img", fstype="hello_driver:DRIVER", options="ro",
                cwd=hello_dir)  # fmt: skip
    pid = _server_pid(mnt)
    holder = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sleep", "60"])
    try:
        time.sleep(0.2)  # the copy exists once unshare has run
        started = time.monotonic()
        run_uvfs("umount", str(mnt))
        assert _gone(pid)
        assert time.monotonic() - started < 10
    finally:
        holder.kill()
        holder.wait()


def test_an_idle_writable_mount_writes_its_changes_back(mount, tmp_path: Path) -> None:
    """No fsync, no unmount, no further request: a few seconds later the change is on the
    image all the same (the broker asks the driver to write back periodically)."""
    import subprocess

    from uvfs._mount import WRITE_BACK_SECONDS

    image = tmp_path / "image"
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext2", str(image), "8M"], check=True)
    mnt = mount(image, options="rw")
    (mnt / "note").write_bytes(b"written back\n")
    time.sleep(2 * WRITE_BACK_SECONDS + 1)  # the driver flushes what waited 5 s
    seen = subprocess.run(["debugfs", "-R", "cat /note", str(image)], capture_output=True,
                          check=True).stdout  # fmt: skip
    assert seen == b"written back\n"
