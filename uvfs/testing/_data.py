"""Checks on file data: create and open flags, offsets, truncate, holes, mmap, open unlinked."""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from uvfs.testing._helpers import in_child, pattern, raises, write_file
from uvfs.testing._registry import check

GiB = 1 << 30


def _pread_all(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


@check("write")
def check_write_read(d: Path) -> None:
    """Bytes written are read back exactly, across block boundaries, and set st_size."""
    data = pattern(300_001)
    write_file(d / "f", data)
    assert os.stat(d / "f").st_size == len(data)
    assert _pread_all(d / "f") == data
    fd = os.open(d / "f", os.O_RDONLY)
    try:
        for offset, size in [(0, 1), (4095, 2), (65535, 70000), (299_990, 100)]:
            assert os.pread(fd, size, offset) == data[offset : offset + size]
    finally:
        os.close(fd)


@check("write")
def check_overwrite_middle(d: Path) -> None:
    """pwrite inside a file changes those bytes only; the size stays."""
    data = bytearray(pattern(20_000))
    write_file(d / "f", bytes(data))
    fd = os.open(d / "f", os.O_WRONLY)
    try:
        assert os.pwrite(fd, b"X" * 5000, 4000) == 5000
    finally:
        os.close(fd)
    data[4000:9000] = b"X" * 5000
    assert _pread_all(d / "f") == bytes(data)


@check("write")
def check_empty_file(d: Path) -> None:
    """A new file is empty: size 0, read returns b''."""
    write_file(d / "f", b"")
    assert os.stat(d / "f").st_size == 0
    assert _pread_all(d / "f") == b""


@check("write")
def check_read_at_eof(d: Path) -> None:
    """Reads at or past the end return b''; a read across the end is short."""
    write_file(d / "f", b"0123456789")
    fd = os.open(d / "f", os.O_RDONLY)
    try:
        assert os.pread(fd, 100, 10) == b""
        assert os.pread(fd, 100, 1 << 20) == b""
        assert os.pread(fd, 100, 7) == b"789"
    finally:
        os.close(fd)


@check("write")
def check_o_excl(d: Path) -> None:
    """O_CREAT|O_EXCL fails with EEXIST on a file, a directory and a dangling symlink."""
    write_file(d / "f", b"keep")
    (d / "sub").mkdir()
    os.symlink("nowhere", d / "dangling")
    for name in ["f", "sub", "dangling"]:
        raises(errno.EEXIST, os.open, d / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    assert (d / "f").read_bytes() == b"keep"
    assert not os.path.lexists(d / "nowhere")


@check("write")
def check_o_creat_existing(d: Path) -> None:
    """O_CREAT without O_EXCL opens an existing file as it is."""
    write_file(d / "f", b"keep")
    fd = os.open(d / "f", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        assert os.read(fd, 10) == b"keep"
    finally:
        os.close(fd)


@check("write")
def check_o_trunc(d: Path) -> None:
    """O_TRUNC empties an existing file; later reads see none of the old bytes."""
    write_file(d / "f", pattern(50_000))
    fd = os.open(d / "f", os.O_WRONLY | os.O_TRUNC)
    try:
        assert os.fstat(fd).st_size == 0
        os.pwrite(fd, b"new", 0)
    finally:
        os.close(fd)
    assert _pread_all(d / "f") == b"new"


@check("write")
def check_o_append(d: Path) -> None:
    """O_APPEND writes at the end whatever the offset, through two descriptors in turn."""
    write_file(d / "f", b"start|")
    a = os.open(d / "f", os.O_WRONLY | os.O_APPEND)
    b = os.open(d / "f", os.O_WRONLY | os.O_APPEND)
    try:
        os.lseek(a, 0, os.SEEK_SET)
        os.write(a, b"a1|")
        os.write(b, b"b1|")
        os.write(a, b"a2|")
        assert os.lseek(a, 0, os.SEEK_CUR) == len(b"start|a1|b1|a2|")
    finally:
        os.close(a)
        os.close(b)
    assert _pread_all(d / "f") == b"start|a1|b1|a2|"


@check("write")
def check_umask_applies(d: Path) -> None:
    """A new file's and directory's mode is the requested mode less the umask."""
    old = os.umask(0o027)
    try:
        os.close(os.open(d / "f", os.O_CREAT | os.O_WRONLY, 0o777))
        os.mkdir(d / "sub", 0o777)
    finally:
        os.umask(old)
    assert oct(os.stat(d / "f").st_mode) == oct(0o100750)
    assert oct(os.stat(d / "sub").st_mode) == oct(0o040750)


@check("write")
def check_ebadf(d: Path) -> None:
    """Writing a read-only descriptor or reading a write-only one fails with EBADF."""
    write_file(d / "f", b"data")
    ro = os.open(d / "f", os.O_RDONLY)
    wo = os.open(d / "f", os.O_WRONLY)
    try:
        raises(errno.EBADF, os.write, ro, b"x")
        raises(errno.EBADF, os.read, wo, 1)
        raises(errno.EINVAL, os.ftruncate, ro, 0)
    finally:
        os.close(ro)
        os.close(wo)
    raises(errno.EBADF, os.fstat, ro)
    assert _pread_all(d / "f") == b"data"


@check("write")
def check_open_dir_flags(d: Path) -> None:
    """A directory opened for writing gives EISDIR; a file with O_DIRECTORY gives ENOTDIR."""
    (d / "sub").mkdir()
    write_file(d / "f", b"")
    raises(errno.EISDIR, os.open, d / "sub", os.O_WRONLY)
    raises(errno.EISDIR, os.open, d / "sub", os.O_RDWR)
    raises(errno.ENOTDIR, os.open, d / "f", os.O_RDONLY | os.O_DIRECTORY)
    os.close(os.open(d / "sub", os.O_RDONLY | os.O_DIRECTORY))


@check("write")
def check_truncate_down(d: Path) -> None:
    """truncate to a smaller size drops the tail; extending again reads zeros, not old bytes."""
    data = pattern(100_000)
    write_file(d / "f", data)
    os.truncate(d / "f", 5000)
    assert os.stat(d / "f").st_size == 5000
    assert _pread_all(d / "f") == data[:5000]
    os.truncate(d / "f", 100_000)
    assert _pread_all(d / "f") == data[:5000] + bytes(95_000)


@check("write")
def check_truncate_up(d: Path) -> None:
    """truncate to a larger size reads zeros after the old end."""
    write_file(d / "f", b"abc")
    os.truncate(d / "f", 1_000_000)
    assert os.stat(d / "f").st_size == 1_000_000
    assert _pread_all(d / "f") == b"abc" + bytes(999_997)


@check("write")
def check_truncate_unaligned_tail(d: Path) -> None:
    """Truncating inside a block then writing past it leaves zeros where the tail was."""
    write_file(d / "f", b"\xaa" * 8192)
    fd = os.open(d / "f", os.O_RDWR)
    try:
        os.ftruncate(fd, 1000)
        os.pwrite(fd, b"\xbb", 8191)
        assert os.pread(fd, 8192, 0) == b"\xaa" * 1000 + bytes(7191) + b"\xbb"
    finally:
        os.close(fd)


@check("write")
def check_truncate_errors(d: Path) -> None:
    """truncate: EISDIR on a directory, ENOENT on a missing name, EINVAL on a negative size."""
    (d / "sub").mkdir()
    write_file(d / "f", b"x")
    raises(errno.EISDIR, os.truncate, d / "sub", 0)
    raises(errno.ENOENT, os.truncate, d / "missing", 0)
    raises(errno.EINVAL, os.truncate, d / "f", -1)
    assert _pread_all(d / "f") == b"x"


@check("write")
def check_write_past_end(d: Path) -> None:
    """A write past the end leaves a hole that reads as zeros."""
    fd = os.open(d / "f", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.pwrite(fd, b"head", 0)
        os.pwrite(fd, b"tail", 3 << 20)
        assert os.fstat(fd).st_size == (3 << 20) + 4
        assert os.pread(fd, (3 << 20) + 4, 0) == b"head" + bytes((3 << 20) - 4) + b"tail"
    finally:
        os.close(fd)


@check("write")
def check_sparse_allocation(d: Path) -> None:
    """A file written only at its two ends allocates far fewer blocks than its size."""
    fd = os.open(d / "f", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.pwrite(fd, b"a" * 4096, 0)
        os.pwrite(fd, b"z" * 4096, 64 << 20)
        os.fsync(fd)
        st = os.fstat(fd)
    finally:
        os.close(fd)
    assert st.st_size == (64 << 20) + 4096
    assert st.st_blocks * 512 < 1 << 20, f"{st.st_blocks} blocks for two written pages"


@check("write")
def check_seek_hole_data(d: Path) -> None:
    """SEEK_HOLE finds the end of a file without holes; SEEK_DATA past the end gives ENXIO."""
    write_file(d / "f", pattern(10_000))
    fd = os.open(d / "f", os.O_RDONLY)
    try:
        assert os.lseek(fd, 0, os.SEEK_HOLE) == 10_000
        assert os.lseek(fd, 0, os.SEEK_DATA) == 0
        raises(errno.ENXIO, os.lseek, fd, 10_001, os.SEEK_DATA)
        assert os.lseek(fd, 0, os.SEEK_END) == 10_000
    finally:
        os.close(fd)


@check("write")
def check_large_offset_write(d: Path) -> None:
    """Bytes written past 4 GiB read back there; the size counts them; below reads zeros."""
    fd = os.open(d / "f", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.pwrite(fd, b"beyond", 5 * GiB)
        os.pwrite(fd, b"edge", 4 * GiB - 2)
        assert os.fstat(fd).st_size == 5 * GiB + 6
        assert os.pread(fd, 6, 5 * GiB) == b"beyond"
        assert os.pread(fd, 4, 4 * GiB - 2) == b"edge"
        assert os.pread(fd, 4096, 4 * GiB + 4096) == bytes(4096)
        assert os.pread(fd, 4096, 1 * GiB) == bytes(4096)
    finally:
        os.close(fd)


@check("write")
def check_large_truncate(d: Path) -> None:
    """truncate to 6 GiB and back to 4 GiB + 1 sets those sizes; the end reads zeros."""
    write_file(d / "f", b"x")
    os.truncate(d / "f", 6 * GiB)
    assert os.stat(d / "f").st_size == 6 * GiB
    os.truncate(d / "f", 4 * GiB + 1)
    fd = os.open(d / "f", os.O_RDONLY)
    try:
        assert os.fstat(fd).st_size == 4 * GiB + 1
        assert os.pread(fd, 100, 4 * GiB - 50) == bytes(51)
        assert os.pread(fd, 1, 0) == b"x"
    finally:
        os.close(fd)


@check("write")
def check_mmap_read(d: Path) -> None:
    """A read-only shared mapping shows the file's bytes exactly."""
    data = pattern(10_000)
    write_file(d / "f", data)
    with open(d / "f", "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
        assert len(m) == 10_000
        assert m[:] == data


@check("write")
def check_mmap_write(d: Path) -> None:
    """Stores through a shared mapping, after msync, are what read() returns."""
    data = bytearray(pattern(3 * mmap.PAGESIZE + 100))
    write_file(d / "f", bytes(data))
    with open(d / "f", "r+b") as f, mmap.mmap(f.fileno(), 0) as m:
        m[10:20] = b"0123456789"
        m[mmap.PAGESIZE * 2 : mmap.PAGESIZE * 2 + 5] = b"HELLO"
        m.flush()
        data[10:20] = b"0123456789"
        data[mmap.PAGESIZE * 2 : mmap.PAGESIZE * 2 + 5] = b"HELLO"
        assert _pread_all(d / "f") == bytes(data)
    assert os.stat(d / "f").st_size == len(data)
    assert _pread_all(d / "f") == bytes(data)


@check("write")
def check_mmap_write_sees_write(d: Path) -> None:
    """A mapping sees a later write() to the same file at once."""
    write_file(d / "f", bytes(8192))
    with open(d / "f", "r+b") as f, mmap.mmap(f.fileno(), 0) as m:
        os.pwrite(f.fileno(), b"written", 4096)
        assert m[4096:4103] == b"written"


@check("write")
def check_mmap_extended_file(d: Path) -> None:
    """A file extended by ftruncate is mapped whole; stores there reach the file."""
    write_file(d / "f", b"head")
    with open(d / "f", "r+b") as f:
        os.ftruncate(f.fileno(), 2 * mmap.PAGESIZE)
        with mmap.mmap(f.fileno(), 0) as m:
            assert m[:4] == b"head"
            assert m[4:] == bytes(2 * mmap.PAGESIZE - 4)
            m[-4:] = b"tail"
            m.flush()
    assert _pread_all(d / "f") == b"head" + bytes(2 * mmap.PAGESIZE - 8) + b"tail"


@check("write")
def check_unlink_open_file(d: Path) -> None:
    """An unlinked open file keeps its data, readable and writable through the descriptor."""
    write_file(d / "f", b"still here")
    fd = os.open(d / "f", os.O_RDWR)
    try:
        os.unlink(d / "f")
        assert os.listdir(d) == []
        raises(errno.ENOENT, os.stat, d / "f")
        assert os.fstat(fd).st_nlink == 0
        assert os.pread(fd, 100, 0) == b"still here"
        os.pwrite(fd, b"and more", 10)
        assert os.pread(fd, 100, 0) == b"still hereand more"
        assert os.fstat(fd).st_size == 18
    finally:
        os.close(fd)


@check("write")
def check_unlink_open_then_recreate(d: Path) -> None:
    """A new file under an unlinked open file's name is another file."""
    write_file(d / "f", b"old")
    fd = os.open(d / "f", os.O_RDONLY)
    try:
        os.unlink(d / "f")
        write_file(d / "f", b"new file")
        assert os.pread(fd, 100, 0) == b"old"
        assert (d / "f").read_bytes() == b"new file"
        assert os.fstat(fd).st_ino != os.stat(d / "f").st_ino
    finally:
        os.close(fd)


@check("write")
def check_fsync(d: Path) -> None:
    """fsync and fdatasync succeed on a written file, fsync on its directory."""
    fd = os.open(d / "f", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(fd, b"durable")
        os.fsync(fd)
        os.fdatasync(fd)
    finally:
        os.close(fd)
    dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    assert (d / "f").read_bytes() == b"durable"


@check("write")
def check_posix_fallocate(d: Path) -> None:
    """posix_fallocate extends the size, the new range reading as zeros."""
    write_file(d / "f", b"abc")
    fd = os.open(d / "f", os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, 100_000)
        assert os.fstat(fd).st_size == 100_000
        assert os.pread(fd, 100_000, 0) == b"abc" + bytes(99_997)
    finally:
        os.close(fd)


@check("write")
def check_copy_file_range(d: Path) -> None:
    """copy_file_range copies the bytes asked for, from and to the offsets given."""
    data = pattern(200_000)
    write_file(d / "src", data)
    write_file(d / "dst", b"")
    src = os.open(d / "src", os.O_RDONLY)
    dst = os.open(d / "dst", os.O_WRONLY)
    try:
        done = 0
        while done < 150_000:
            n = os.copy_file_range(src, dst, 150_000 - done, 1000 + done, 10 + done)
            assert n > 0
            done += n
    finally:
        os.close(src)
        os.close(dst)
    assert _pread_all(d / "dst") == bytes(10) + data[1000:151_000]


@check("write")
def check_flock(d: Path) -> None:
    """An exclusive flock blocks another open file description's (EWOULDBLOCK), until unlocked."""
    write_file(d / "f", b"")
    with open(d / "f", "rb") as a, open(d / "f", "rb") as b:
        fcntl.flock(a, fcntl.LOCK_EX | fcntl.LOCK_NB)
        raises(errno.EWOULDBLOCK, fcntl.flock, b, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(a, fcntl.LOCK_UN)
        fcntl.flock(b, fcntl.LOCK_EX | fcntl.LOCK_NB)


@check("write")
def check_many_files(d: Path) -> None:
    """200 files are created, each read back, then all removed."""
    for i in range(200):
        write_file(d / f"file{i}", str(i).encode() * (i + 1))
    assert sorted(os.listdir(d)) == sorted(f"file{i}" for i in range(200))
    for i in range(200):
        assert (d / f"file{i}").read_bytes() == str(i).encode() * (i + 1)
        os.unlink(d / f"file{i}")
    assert os.listdir(d) == []


@check("write")
def check_seek_offsets(d: Path) -> None:
    """lseek SEEK_SET/SEEK_CUR/SEEK_END place reads and writes; EINVAL before the start."""
    fd = os.open(d / "f", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.write(fd, b"0123456789")
        assert os.lseek(fd, -4, os.SEEK_END) == 6
        assert os.read(fd, 2) == b"67"
        assert os.lseek(fd, -5, os.SEEK_CUR) == 3
        os.write(fd, b"abc")
        assert os.lseek(fd, 0, os.SEEK_CUR) == 6
        assert os.lseek(fd, 20, os.SEEK_END) == 30
        os.write(fd, b"!")
        raises(errno.EINVAL, os.lseek, fd, -1, os.SEEK_SET)
        assert os.pread(fd, 100, 0) == b"012abc6789" + bytes(20) + b"!"
    finally:
        os.close(fd)


@check("write")
def check_many_opens(d: Path) -> None:
    """A file opened and closed 1000 times, 100 descriptors at once, reads the same each time."""
    write_file(d / "f", b"same")
    for _ in range(10):
        fds = [os.open(d / "f", os.O_RDONLY) for _ in range(100)]
        try:
            assert {os.pread(fd, 10, 0) for fd in fds} == {b"same"}
        finally:
            for fd in fds:
                os.close(fd)


@check("write")
def check_two_descriptors_see_each_other(d: Path) -> None:
    """A write through one descriptor is read at once through another of the same file."""
    fd_w = os.open(d / "f", os.O_CREAT | os.O_WRONLY, 0o644)
    fd_r = os.open(d / "f", os.O_RDONLY)
    try:
        for i in range(20):
            os.pwrite(fd_w, pattern(1000, seed=i), i * 777)
            assert os.pread(fd_r, 1000, i * 777) == pattern(1000, seed=i)
        assert os.fstat(fd_r).st_size == 19 * 777 + 1000
    finally:
        os.close(fd_w)
        os.close(fd_r)


@check("write")
def check_fstat_unlinked_many(d: Path) -> None:
    """Ten open, unlinked files each fstat as before the unlink, but for nlink 0 and ctime."""
    fds: dict[int, os.stat_result] = {}
    try:
        for i in range(10):
            write_file(d / str(i), bytes(i))
            fd = os.open(d / str(i), os.O_RDONLY)
            fds[fd] = os.fstat(fd)
            os.unlink(d / str(i))
        for fd, before in reversed(fds.items()):
            after = os.fstat(fd)
            assert after.st_nlink == 0
            fields = ("st_ino", "st_mode", "st_size", "st_uid", "st_gid", "st_mtime_ns")
            assert [getattr(after, f) for f in fields] == [getattr(before, f) for f in fields]
    finally:
        for fd in fds:
            os.close(fd)


@check("write")
def check_parallel_writers(d: Path) -> None:
    """Eight threads writing disjoint ranges of a file, each through its own fd, lose nothing."""
    write_file(d / "f", b"")

    def writer(i: int) -> None:
        fd = os.open(d / "f", os.O_WRONLY)
        try:
            for j in range(16):
                os.pwrite(fd, pattern(4096, seed=i), (j * 8 + i) * 4096)
        finally:
            os.close(fd)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(writer, range(8)))
    data = _pread_all(d / "f")
    assert len(data) == 128 * 4096
    for block in range(128):
        assert data[block * 4096 : (block + 1) * 4096] == pattern(4096, seed=block % 8), block


@check("write")
def check_posix_locks(d: Path) -> None:
    """A write lock (F_SETLK) held here makes another process's attempt fail (EACCES/EAGAIN)."""
    exclusive = fcntl.LOCK_EX | fcntl.LOCK_NB
    write_file(d / "f", bytes(100))
    with open(d / "f", "r+b") as f:
        fcntl.lockf(f, exclusive, 50, 10)

        def blocked() -> None:
            with open(d / "f", "r+b") as g:
                raises((errno.EACCES, errno.EAGAIN), fcntl.lockf, g, exclusive, 10, 55)
                fcntl.lockf(g, exclusive, 10, 0)  # a range not held

        in_child(blocked)
        fcntl.lockf(f, fcntl.LOCK_UN, 50, 10)

        def free() -> None:
            with open(d / "f", "r+b") as g:
                fcntl.lockf(g, exclusive, 10, 55)

        in_child(free)


@check("write")
def check_block_boundaries(d: Path) -> None:
    """Sizes at and around 512, 1024, 4096 and 65536 bytes read back exactly, also truncated to."""
    for size in [511, 512, 513, 1023, 1024, 1025, 4095, 4096, 4097, 65535, 65536, 65537]:
        data = pattern(size, seed=size % 251)
        write_file(d / "f", data)
        assert os.stat(d / "f").st_size == size
        assert _pread_all(d / "f") == data
    write_file(d / "g", pattern(8192))
    os.truncate(d / "g", 4096)
    os.truncate(d / "g", 4097)
    assert _pread_all(d / "g") == pattern(4096) + b"\0"


@check("write")
def check_o_trunc_seen_by_other_fd(d: Path) -> None:
    """An O_TRUNC open empties the file for a descriptor opened before it too."""
    write_file(d / "f", pattern(9000))
    fd = os.open(d / "f", os.O_RDONLY)
    try:
        os.close(os.open(d / "f", os.O_WRONLY | os.O_TRUNC))
        assert os.fstat(fd).st_size == 0
        assert os.pread(fd, 100, 0) == b""
    finally:
        os.close(fd)


@check("write")
def check_truncate_keeps_xattrs(d: Path) -> None:
    """Truncating a file to zero and rewriting it keeps its extended attributes."""
    write_file(d / "f", pattern(50_000))
    os.setxattr(d / "f", "user.kept", b"still")
    os.truncate(d / "f", 0)
    write_file(d / "f", b"new")
    assert os.getxattr(d / "f", "user.kept") == b"still"
    assert _pread_all(d / "f") == b"new"
