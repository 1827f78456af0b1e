"""``-o isolate`` runs the same driver, unchanged, in a process of its own, and starts a new one
when it dies: readers see nothing, a request that changes things and was in flight fails
with EIO, open files stay open, and a driver that keeps dying is given up with one log line."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import force_unmount, need, run_uvfs
from tests.ext2.images import debugfs, make_image, make_tree
from tests.ext2.test_mount_vs_kernel import view
from uvfs._runtime import paths_for

DATA = b"still here\n"
WARNING = "writes are kept in memory only"  # what the crashy driver logs at open
GIVE_UP = "giving up, every request now fails with EIO"

CRASHY = textwrap.dedent('''
    """Five files in memory and ways to die: reading "crash" or opening "poison" crashes the
    process (in C), reading or writing "slow" takes a second, reading "hog" the first time
    runs out of memory. While a file "die-on-open" lies beside this module, opening the
    images kills the process too; while "fork-on-open" lies there, opening forks a process
    that holds every descriptor (its pid goes into "holders") for a minute. What is written
    (or unlinked) stays in the process's memory only. Every open warns that it is so."""
    import ctypes, errno, itertools, logging, os, stat, time
    import trio
    import uvfs

    DATA = b"still here\\n"
    FILES = {b"calm": 2, b"crash": 3, b"slow": 4, b"poison": 5, b"hog": 6}
    MARKER = os.path.join(os.path.dirname(__file__), "die-on-open")
    FORK = os.path.join(os.path.dirname(__file__), "fork-on-open")
    HOGGED = os.path.join(os.path.dirname(__file__), "hogged")


    def crash():
        ctypes.string_at(0)  # SIGSEGV


    class CrashyFS:
        root = 1

        def __init__(self):
            # Handles differ from one process to the next: an old one here is EBADF.
            self.handles = set()
            self.numbers = itertools.count(os.getpid() << 16)
            self.data = {ino: bytearray(DATA) for ino in FILES.values()}
            self.unlinked = set()

        async def getattr(self, ino):
            if ino == 1:
                return uvfs.Attr(ino=1, mode=stat.S_IFDIR | 0o755, nlink=2, uid=0, gid=0, size=0)
            if ino in FILES.values():
                return uvfs.Attr(ino=ino, mode=stat.S_IFREG | 0o644, nlink=1, uid=0, gid=0,
                                 size=len(self.data[ino]))
            raise uvfs.FSError(errno.ENOENT)

        async def lookup(self, parent, name):
            if name not in FILES or name in self.unlinked:
                raise uvfs.FSError(errno.ENOENT)
            return await self.getattr(FILES[name])

        async def open(self, ino, flags, caller):
            if ino == FILES[b"poison"]:
                crash()
            handle = next(self.numbers)
            self.handles.add(handle)
            return handle

        async def read(self, ino, handle, offset, size):
            if handle not in self.handles:
                raise uvfs.FSError(errno.EBADF)
            if ino == FILES[b"crash"]:
                crash()
            if ino == FILES[b"slow"]:
                await trio.sleep(1)
            if ino == FILES[b"hog"] and not os.path.exists(HOGGED):
                open(HOGGED, "w").close()
                raise MemoryError
            return bytes(self.data[ino][offset : offset + size])

        async def write(self, ino, handle, offset, data):
            if handle not in self.handles:
                raise uvfs.FSError(errno.EBADF)
            if ino == FILES[b"slow"]:
                await trio.sleep(1)
            self.data[ino][offset : offset + len(data)] = data
            return len(data)

        async def unlink(self, parent, name):
            if name not in FILES or name in self.unlinked:
                raise uvfs.FSError(errno.ENOENT)
            self.unlinked.add(name)

        async def release(self, ino, handle):
            self.handles.discard(handle)


    class Driver:
        name = "crashy"

        def probe(self, head):
            return False

        async def open(self, sources, options):
            if os.path.exists(MARKER):
                crash()
            if os.path.exists(FORK):
                if (pid := os.fork()) == 0:
                    time.sleep(60)
                    os._exit(0)
                with open(os.path.join(os.path.dirname(__file__), "holders"), "a") as f:
                    f.write(f"{pid}\\n")
            logging.getLogger("crashy").warning("writes are kept in memory only")
            return CrashyFS()

        async def describe(self, sources):
            return "crashy"


    DRIVER = Driver()
''')


# --- helpers ----------------------------------------------------------------------------------


def _stats(mountpoint: Path) -> dict:
    return json.loads(run_uvfs("stats", "--json", str(mountpoint)).stdout)


def _driver(mountpoint: Path) -> tuple[int, int]:
    """The driver process's pid and its restarts so far."""
    driver = _stats(mountpoint)["driver"]
    return driver["pid"], driver["restarts"]


def _kill_driver(mountpoint: Path) -> int:
    """kill -9 the driver process; its pid."""
    pid, _ = _driver(mountpoint)
    os.kill(pid, signal.SIGKILL)
    return pid


def _wait_for_restarts(mountpoint: Path, restarts: int) -> int:
    """Wait until the mount has restarted its driver `restarts` times; the new pid."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pid, done = _driver(mountpoint)
        if done >= restarts:
            assert done == restarts
            return pid
        time.sleep(0.05)
    pytest.fail(f"the driver was not restarted {restarts} times within 60 s")


def _server_log(mountpoint: Path) -> str:
    return paths_for(os.path.realpath(mountpoint))[2].read_text()


def _errno_of(call, *args) -> int:
    try:
        call(*args)
    except OSError as e:
        return e.errno
    return 0


@pytest.fixture
def crashy(tmp_path: Path) -> Path:
    """A directory holding the crashy driver (crashy_driver.py) and an empty image."""
    directory = tmp_path / "driver"
    directory.mkdir()
    (directory / "crashy_driver.py").write_text(CRASHY)
    (directory / "empty.img").touch()
    return directory


def _mount_crashy(mount, crashy: Path, options: str) -> Path:
    return mount(crashy / "empty.img", fstype="crashy_driver:DRIVER", options=options,
                 cwd=crashy)  # fmt: skip


# --- the crashy driver: what each request in flight sees ---------------------------------------


def test_a_read_in_flight_is_repeated_and_open_files_are_opened_again(mount, crashy) -> None:
    mnt = _mount_crashy(mount, crashy, "ro,isolate,cache_size=0")
    first, restarts = _driver(mnt)
    assert restarts == 0
    calm = os.open(mnt / "calm", os.O_RDONLY)
    try:
        assert os.pread(calm, 100, 0) == DATA
        with ThreadPoolExecutor(1) as pool:
            slow = pool.submit((mnt / "slow").read_bytes)
            time.sleep(0.3)  # the read is in the driver, sleeping
            os.kill(first, signal.SIGKILL)
            assert slow.result(timeout=30) == DATA
        second = _wait_for_restarts(mnt, 1)
        assert second != first
        # The handle the dead process gave is opened again on the new one (an old handle
        # would be EBADF there); past the kernel's page cache, the read reaches the driver.
        os.posix_fadvise(calm, 0, 0, os.POSIX_FADV_DONTNEED)
        assert os.pread(calm, 100, 0) == DATA
    finally:
        os.close(calm)
    # A read that kills the driver is asked once more, kills it again, and fails alone. (The
    # kernel reads a page again after its readahead failed: two reads, four deaths.)
    assert _errno_of((mnt / "crash").read_bytes) == errno.EIO
    _wait_for_restarts(mnt, 5)
    assert _errno_of(os.lstat, mnt / "never-looked-up") == errno.ENOENT
    assert (mnt / "calm").read_bytes() == DATA
    log = _server_log(mnt)
    assert log.count("was killed by SIGKILL") == 1
    assert log.count("was killed by SIGSEGV") == 4
    assert GIVE_UP not in log


def test_a_driver_out_of_memory_is_restarted_and_the_read_answered(mount, crashy) -> None:
    mnt = _mount_crashy(mount, crashy, "ro,isolate,cache_size=0")
    first, _ = _driver(mnt)
    assert (mnt / "hog").read_bytes() == DATA
    assert _driver(mnt)[0] != first
    assert _server_log(mnt).count(f"driver process {first} ran out of memory") == 1


def test_a_write_in_flight_fails_with_eio_and_fsync_tells_of_lost_writes(mount, crashy) -> None:
    mnt = _mount_crashy(mount, crashy, "rw,isolate,cache_size=0")
    calm = os.open(mnt / "calm", os.O_WRONLY)
    slow = os.open(mnt / "slow", os.O_WRONLY)
    try:
        assert os.pwrite(calm, b"a" * 10, 0) == 10  # acknowledged, held in the driver's memory
        first, _ = _driver(mnt)
        with ThreadPoolExecutor(1) as pool:
            write = pool.submit(os.pwrite, slow, b"x" * 10, 0)
            time.sleep(0.3)  # the write is in the driver, sleeping
            os.kill(first, signal.SIGKILL)
            assert _errno_of(write.result, 30) == errno.EIO  # never repeated
        # The same open file goes on, on a new process (opened there again).
        assert os.pwrite(slow, b"y" * 10, 0) == 10
        assert _driver(mnt)[1] == 1
        assert os.pwrite(slow, b"z" * 10, 0) == 10
        # No fsync vouches for what died with the process: once EIO, for the file written
        # through before; the in-flight write's EIO already told of its own.
        assert [_errno_of(os.fsync, calm), _errno_of(os.fsync, calm)] == [errno.EIO, 0]
        assert _errno_of(os.fsync, slow) == 0
    finally:
        os.close(calm)
        os.close(slow)


def test_no_cache_shows_writes_a_restarted_read_write_driver_lost(mount, crashy) -> None:
    # The broker's cache is on: written bytes are cached (write-allocate), and the kernel's
    # page cache holds them as well.
    mnt = _mount_crashy(mount, crashy, "rw,isolate")
    calm = os.open(mnt / "calm", os.O_RDWR)
    try:
        assert os.pwrite(calm, b"LOST", 0) == 4  # only in the driver process's memory
        assert os.pread(calm, 100, 0) == b"LOST" + DATA[4:]
        os.posix_fadvise(calm, 0, 0, os.POSIX_FADV_DONTNEED)
        assert os.pread(calm, 100, 0) == b"LOST" + DATA[4:]  # from the broker's cache
        _kill_driver(mnt)
        _wait_for_restarts(mnt, 1)
        # The new process never saw the write: neither the kernel's page cache (the same
        # open file, no fadvise) nor the broker's shows it any more.
        assert os.pread(calm, 100, 0) == DATA
        assert (mnt / "calm").read_bytes() == DATA
    finally:
        os.close(calm)


def test_no_name_cache_shows_an_unlink_a_restarted_driver_lost(mount, crashy) -> None:
    mnt = _mount_crashy(mount, crashy, "rw,isolate")
    (mnt / "calm").unlink()  # only in the driver process's memory (the driver never syncs)
    assert _errno_of(os.stat, mnt / "calm") == errno.ENOENT  # now in the kernel's name cache
    _kill_driver(mnt)
    _wait_for_restarts(mnt, 1)
    assert (mnt / "calm").read_bytes() == DATA  # the new process has it: so has the kernel


def _stop_driver(mountpoint: Path) -> int:
    """SIGSTOP the driver process: alive, answering nothing; its pid."""
    pid, _ = _driver(mountpoint)
    os.kill(pid, signal.SIGSTOP)
    return pid


def _resume(pid: int) -> None:
    """SIGCONT `pid` if it still runs, so that no stopped process outlives a failed test."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)


def test_a_hung_driver_is_killed_and_a_read_asked_again(mount, crashy) -> None:
    mnt = _mount_crashy(mount, crashy, "ro,isolate,cache_size=0,driver_timeout=2")
    stopped = _stop_driver(mnt)
    try:
        started = time.monotonic()
        assert (mnt / "calm").read_bytes() == DATA  # its open was asked of the next process
        assert 2 <= time.monotonic() - started < 10
    finally:
        _resume(stopped)
    assert _driver(mnt)[1] == 1
    log = _server_log(mnt)
    assert log.count("killing it as hung") == 1
    assert log.count(f"driver process {stopped} was killed by SIGKILL") == 1


def test_a_write_to_a_hung_driver_fails_with_eio_and_the_mount_goes_on(mount, crashy) -> None:
    mnt = _mount_crashy(mount, crashy, "rw,isolate,driver_timeout=1")
    calm = os.open(mnt / "calm", os.O_WRONLY)
    try:
        stopped = _stop_driver(mnt)
        try:
            started = time.monotonic()
            assert _errno_of(os.pwrite, calm, b"x", 0) == errno.EIO  # may have happened
            assert 1 <= time.monotonic() - started < 10
        finally:
            _resume(stopped)
        assert os.pwrite(calm, b"y", 0) == 1  # the same open file, on the next process
    finally:
        os.close(calm)
    assert _driver(mnt)[1] == 1
    assert (mnt / "calm").read_bytes() == b"y" + DATA[1:]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("driver_timeout=5", "driver_timeout needs isolate"),
        ("isolate,driver_timeout=0", "bad driver_timeout '0'"),
        ("isolate,driver_timeout=soon", "bad driver_timeout 'soon'"),
    ],
)
def test_driver_timeout_is_seconds_for_an_isolated_driver(options: str, message: str) -> None:
    from uvfs._mount_command import parse_options
    from uvfs._user_error import UserError

    assert parse_options("isolate,driver_timeout=2.5").driver_timeout == 2.5
    with pytest.raises(UserError, match=message):
        parse_options(options)


def test_a_driver_that_dies_on_every_open_is_given_up(mount, crashy) -> None:
    mnt = _mount_crashy(mount, crashy, "ro,isolate,cache_size=0")
    assert (mnt / "calm").read_bytes() == DATA
    # Each open kills the driver twice (it is asked once more); the sixth death in a minute
    # ends the restarts: every later request fails at once.
    started = time.monotonic()
    seen = [_errno_of((mnt / "poison").read_bytes) for _ in range(5)]
    assert seen == [errno.EIO] * 5
    assert _errno_of(os.lstat, mnt / "never-looked-up") == errno.EIO
    assert time.monotonic() - started < 60
    assert _driver(mnt)[1] == 5
    assert _server_log(mnt).count(GIVE_UP) == 1


def test_a_death_is_seen_while_a_forked_process_holds_the_socket(mount, crashy) -> None:
    (crashy / "fork-on-open").touch()
    try:
        mnt = _mount_crashy(mount, crashy, "ro,isolate,cache_size=0")
        _kill_driver(mnt)  # no request in flight: nobody is reading
        _wait_for_restarts(mnt, 1)
        assert (mnt / "calm").read_bytes() == DATA
        # A request in flight: the task waiting for its reply reads.
        assert _errno_of((mnt / "crash").read_bytes) == errno.EIO
        _wait_for_restarts(mnt, 5)
        assert (mnt / "calm").read_bytes() == DATA
    finally:
        for pid in map(int, (crashy / "holders").read_text().split()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_driver_that_dies_while_reopening_its_images_is_given_up(mount, crashy) -> None:
    mnt = _mount_crashy(mount, crashy, "ro,isolate,cache_size=0")
    (crashy / "die-on-open").touch()
    assert _errno_of((mnt / "crash").read_bytes) == errno.EIO
    assert _errno_of(os.lstat, mnt / "never-looked-up") == errno.EIO
    log = _server_log(mnt)
    assert log.count("exited while opening the images") == 5
    assert log.count(GIVE_UP) == 1
    assert _driver(mnt)[1] == 0


@pytest.mark.parametrize("options", ["ro", "ro,isolate"])
def test_what_a_driver_warns_of_at_open_mount_prints_and_stats_shows(
    tmp_path: Path, crashy: Path, options: str
) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    path = os.pathsep.join(filter(None, [str(crashy), os.environ.get("PYTHONPATH")]))
    try:
        done = run_uvfs("mount", "-t", "crashy_driver:DRIVER", "-o", options,
                        str(crashy / "empty.img"), str(mnt),
                        env={**os.environ, "PYTHONPATH": path})  # fmt: skip
        assert done.stderr == f"uvfs: {WARNING}\n"
        assert _stats(mnt)["warnings"] == [WARNING]
        assert f"warning: {WARNING}" in run_uvfs("stats", str(mnt)).stdout.splitlines()
        assert _server_log(mnt).count(WARNING) == 1
    finally:
        force_unmount(mnt)


def test_an_isolated_driver_shares_the_users_one_cache_budget(mount, crashy) -> None:
    from uvfs._budget import BudgetTable
    from uvfs._runtime import runtime_dir

    shared = _mount_crashy(mount, crashy, "ro,isolate")
    alone = _mount_crashy(mount, crashy, "ro,isolate,cache_size=0")  # caches nothing at all
    with BudgetTable(runtime_dir() / "cache-budget") as table:
        members = set(table.pid.tolist())
    assert {_server_pid(shared), _driver(shared)[0]} <= members
    assert not {_server_pid(alone), _driver(alone)[0]} & members


# --- ext2: a reader and a writer while the driver is killed ------------------------------------

READER = textwrap.dedent("""
    import hashlib, json, os, select, sys
    root, expected = sys.argv[1], json.loads(sys.argv[2])
    errors, rounds = [], 0
    while not select.select([sys.stdin], [], [], 0)[0]:
        for name, digest in expected.items():
            try:
                fd = os.open(os.path.join(root, name), os.O_RDONLY)
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # reads reach the driver
                    h = hashlib.sha256()
                    while chunk := os.read(fd, 1 << 16):
                        h.update(chunk)
                finally:
                    os.close(fd)
                if h.hexdigest() != digest:
                    errors.append(f"{name}: wrong bytes")
            except OSError as e:
                errors.append(f"{name}: {e}")
        try:
            if sorted(os.listdir(root)) != sorted([*expected, "lost+found"]):
                errors.append("wrong listing")
        except OSError as e:
            errors.append(f"listing: {e}")
        rounds += 1
        print(rounds, flush=True)
    print(json.dumps(errors), flush=True)
""")

WRITER = textwrap.dedent("""
    import json, os, select, sys
    root = sys.argv[1]
    seen = []  # [phase, call, errno] of every failed call

    def content(i):
        return (f"file {i} ".encode() * 10000)[:65536]

    def fsynced_file(i, phase):
        try:
            fd = os.open(f"{root}/f{i}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, content(i))
                os.fsync(fd)
            finally:
                os.close(fd)
            print(f"synced {i}", flush=True)
        except OSError as e:
            seen.append([phase, f"f{i}", e.errno])

    for i in range(5):
        fsynced_file(i, 1)
    g = os.open(f"{root}/g", os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(g, b"g" * 4096)
    os.fsync(g)
    print("streaming", flush=True)
    k = 0
    while not select.select([sys.stdin], [], [], 0)[0]:  # phase 2: until told to go on
        try:
            os.pwrite(g, b"x" * 4096, 4096 * (1 + k % 256))
        except OSError as e:
            seen.append([2, "write", e.errno])
        k += 1
    for k in range(3):  # phase 3: the same open file, then new files
        try:
            os.pwrite(g, b"y" * 4096, (2 << 20) + 4096 * k)
        except OSError as e:
            seen.append([3, "write", e.errno])
    for _ in range(2):
        try:
            os.fsync(g)
        except OSError as e:
            seen.append([3, "fsync", e.errno])
    os.close(g)
    for i in range(5, 10):
        fsynced_file(i, 3)
    print(json.dumps(seen), flush=True)
""")


def _ext2_image(tmp_path: Path, files: dict[str, bytes]) -> Path:
    need("mke2fs", "e2fsck", "debugfs")
    tree = tmp_path / "tree"
    tree.mkdir()
    for name, data in files.items():
        (tree / name).write_bytes(data)
    image = tmp_path / "ext2.img"
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext2", "-b", "4096", "-d", str(tree),
                    str(image), "64M"], check=True, capture_output=True)  # fmt: skip
    return image


def _start(script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip


def _read_until(process: subprocess.Popen, wanted: str) -> list[str]:
    lines = []
    while (line := process.stdout.readline()) != "":
        lines.append(line.strip())
        if lines[-1] == wanted:
            return lines
    pytest.fail(f"the script ended before saying {wanted!r}: {lines}")


def _finish(process: subprocess.Popen) -> tuple[list[str], object]:
    """Tell the script to end: the lines it printed meanwhile, and the JSON it prints last."""
    out, _ = process.communicate("stop\n", timeout=120)
    *lines, last = out.strip().splitlines()
    return lines, json.loads(last)


@pytest.mark.slow
def test_a_reader_of_a_read_only_ext2_mount_sees_nothing_of_a_kill(mount, tmp_path) -> None:
    files = {f"file{i}": os.urandom(4 << 20) for i in range(4)}
    image = _ext2_image(tmp_path, files)
    mnt = mount(image, options="ro,isolate,cache_size=0")  # every read reaches the driver
    expected = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    reader = _start(READER, str(mnt), json.dumps(expected))
    try:
        _read_until(reader, "1")
        first = _kill_driver(mnt)
        second = _wait_for_restarts(mnt, 1)
        line = reader.stdout.readline().strip()
        _read_until(reader, str(int(line) + 2))  # two whole rounds on the new process
        assert _finish(reader)[1] == []
    finally:
        reader.kill()
    assert second != first
    assert _driver(mnt) == (second, 1)


@pytest.mark.slow
def test_a_writer_on_a_read_write_ext2_mount_loses_nothing_fsynced(mount, tmp_path) -> None:
    image = _ext2_image(tmp_path, {"old": b"before the mount\n"})
    mnt = mount(image, options="rw,isolate")
    writer = _start(WRITER, str(mnt))
    try:
        before = _read_until(writer, "streaming")
        time.sleep(0.3)  # writes under way, well before the driver's next write-back
        first = _kill_driver(mnt)
        second = _wait_for_restarts(mnt, 1)
        after, seen = _finish(writer)
    finally:
        writer.kill()
    assert before + after == [*(f"synced {i}" for i in range(5)), "streaming",
                              *(f"synced {i}" for i in range(5, 10))]  # fmt: skip
    # At most the one write in flight failed, with EIO, and the first fsync of the file whose
    # writes died with the process (in memory, never written back) says so; all else worked.
    lost = [3, "fsync", errno.EIO]
    assert seen in ([lost], [[2, "write", errno.EIO], lost])
    assert second != first
    assert _driver(mnt) == (second, 1)
    run_uvfs("umount", str(mnt))
    check = subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    # The restart opened the volume its dead process had marked in use: it stays marked
    # for a check, as after any crash.
    assert (
        "Filesystem state:         not clean"
        in subprocess.run(
            ["dumpe2fs", "-h", str(image)], capture_output=True, text=True, check=True
        ).stdout
    )
    for i in range(10):
        assert debugfs(image, f"cat /f{i}").encode() == (f"file {i} ".encode() * 10000)[:65536]
    g = debugfs(image, "cat /g").encode()
    assert g[:4096] == b"g" * 4096
    assert g[2 << 20 :] == b"y" * 4096 * 3
    assert debugfs(image, "cat /old") == "before the mount\n"


@pytest.mark.slow
def test_an_isolated_ext2_mount_shows_the_same_view(mount, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the test tree has devices and foreign owners: needs root")
    make_tree(tmp_path / "tree", huge=False)
    image = tmp_path / "image"
    make_image(tmp_path / "tree", image, fstype="ext2", block_size=1024, revision=1,
               filetype=True, size_mb=64)  # fmt: skip
    plain = mount(image, options="ro")
    inside = view(plain)
    assert _driver(plain) == (_server_pid(plain), 0)
    isolated = mount(image, options="ro,isolate")
    assert _driver(isolated)[0] != _server_pid(isolated)
    assert view(isolated) == inside


def _server_pid(mountpoint: Path) -> int:
    stats = run_uvfs("stats", str(mountpoint)).stdout
    return int(stats.split("pid ")[1].split(")")[0])


def test_every_operation_of_the_api_crosses_the_process_boundary() -> None:
    import typing

    from uvfs import _api
    from uvfs._isolation import OPERATIONS

    protocols = {
        name: proto
        for name, proto in vars(_api).items()
        if isinstance(proto, type) and getattr(proto, "_is_protocol", False)
        and proto not in (typing.Protocol, _api.FileSystem, _api.DriverType)
    }  # fmt: skip
    forwarded = set(OPERATIONS.values())
    assert {name for name, proto in protocols.items() if proto not in forwarded} == set()
    for operation, proto in OPERATIONS.items():
        assert hasattr(proto, operation)
