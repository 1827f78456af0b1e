"""A command under ``uvfs audit --enforce`` cannot reach a hidden file by any route.

Each test audits Debian's python3 with nothing declared, so the headers of libfuse3-dev
(`HIDDEN_DIR`, a directory holding only that package's files) are hidden; the command tries
one route to them and prints what each attempt gave as JSON: ``read`` or ``listed`` when it
reached the hidden content, else the errno's name. Every test runs as root and as nobody
(where root can become nobody), and expects the same outcomes from both; only the IDs the
last test sees differ.
"""

from __future__ import annotations

import ctypes
import json
import os
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

PYTHON = "/usr/bin/python3"
HIDDEN_DIR = "/usr/include/fuse3"  # libfuse3-dev, installed by `make setup`
HIDDEN = f"{HIDDEN_DIR}/fuse.h"

# Run first by every command: how an attempt is reported.
PRELUDE = f"""\
import ctypes, errno, json, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
HIDDEN_DIR, HIDDEN = {HIDDEN_DIR!r}, {HIDDEN!r}
MS_BIND, MS_MOVE, MS_REC, MNT_DETACH, CLONE_NEWNS = 0x1000, 0x2000, 0x4000, 2, 0x20000

def outcome(fn, *args):
    try:
        return fn(*args)
    except OSError as e:
        return errno.errorcode[e.errno]

def read(path, dir_fd=None):
    fd = os.open(path, os.O_RDONLY, dir_fd=dir_fd)
    os.close(fd)
    return "read"

def listed(path):
    return "listed" if "fuse.h" in os.listdir(path) else "other"

def call(name, *args):
    if getattr(libc, name)(*args) < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return "ok"

def mount(source, target, fstype, flags):
    return call("mount", source, target, fstype, flags, None)
"""


@pytest.fixture(params=["root", "nobody"])
def auditor(request: pytest.FixtureRequest) -> list[str]:
    """The interpreter that runs ``uvfs audit``: this one as root, or Debian's as nobody."""
    if request.param == "root":
        if os.geteuid() != 0:
            pytest.skip("the root case needs root")
        return [sys.executable]
    return request.getfixturevalue("as_nobody")


def _audit(auditor: list[str], code: str, *args: str, **kwargs: object) -> dict:
    """What the command `code` printed, run under ``uvfs audit --enforce``."""
    audit = [*auditor, "-m", "uvfs_fs.audit", "--quiet", "--python", PYTHON, "--enforce"]
    command = [PYTHON, "-S", "-c", PRELUDE + code + "\nprint(json.dumps(seen))\n", *args]
    done = subprocess.run(
        [*audit, "--", *command],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        **kwargs,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_hidden_file_is_there_and_hidden(auditor: list[str]) -> None:
    assert Path(HIDDEN).is_file()
    seen = _audit(auditor, "seen = [outcome(read, HIDDEN), outcome(listed, HIDDEN_DIR)]")
    assert seen == ["ENOENT", "ENOENT"]


def test_umount_of_the_overlay(auditor: list[str]) -> None:
    code = """\
seen = {
    "umount": outcome(call, "umount2", b"/usr", 0),
    "detach": outcome(call, "umount2", b"/usr", MNT_DETACH),
    "then": outcome(read, HIDDEN),
}
"""
    assert _audit(auditor, code) == {"umount": "EINVAL", "detach": "EINVAL", "then": "ENOENT"}


def test_bind_and_move_mounts_of_its_own(auditor: list[str]) -> None:
    # Binding / alone would show what the overlay covers; moving the overlay away would
    # uncover it; binding / with everything mounted on it shows the overlay again.
    code = """\
seen = {"tmpfs": mount(b"tmpfs", b"/tmp", b"tmpfs", 0)}
for name in ("flat", "rec", "moved"):
    os.mkdir("/tmp/" + name)
seen["flat"] = outcome(mount, b"/", b"/tmp/flat", None, MS_BIND)
seen["flat read"] = outcome(read, "/tmp/flat" + HIDDEN)
seen["rec"] = outcome(mount, b"/", b"/tmp/rec", None, MS_BIND | MS_REC)
seen["rec read"] = outcome(read, "/tmp/rec" + HIDDEN)
seen["rec umount"] = outcome(call, "umount2", b"/tmp/rec/usr", MNT_DETACH)
seen["move"] = outcome(mount, b"/usr", b"/tmp/moved", None, MS_MOVE)
seen["move read"] = outcome(read, HIDDEN)
"""
    assert _audit(auditor, code) == {
        "tmpfs": "ok",
        "flat": "EINVAL",
        "flat read": "ENOENT",
        "rec": "ok",
        "rec read": "ENOENT",
        "rec umount": "EINVAL",
        "move": "EINVAL",
        "move read": "ENOENT",
    }


def _filesystem_of(path: str) -> tuple[str, str]:
    done = subprocess.run(
        ["findmnt", "-n", "-o", "SOURCE,FSTYPE", "--target", path],
        capture_output=True,
        text=True,
        check=True,
    )
    source, fstype = done.stdout.split()
    return source, fstype


def test_mounting_the_device_again(auditor: list[str]) -> None:
    source, fstype = _filesystem_of(HIDDEN_DIR)
    if not source.startswith("/dev/"):
        pytest.skip(f"{HIDDEN_DIR} is on {source}, not a block device")
    code = """\
seen = {"tmpfs": mount(b"tmpfs", b"/tmp", b"tmpfs", 0)}
source, fstype = sys.argv[1:]
seen["mount"] = outcome(mount, source.encode(), b"/tmp", fstype.encode(), 1)  # MS_RDONLY
seen["read"] = outcome(read, "/tmp" + HIDDEN)
"""
    seen = _audit(auditor, code, source, fstype)
    assert seen == {"tmpfs": "ok", "mount": "EPERM", "read": "ENOENT"}


@pytest.mark.parametrize("cwd", ["/usr", HIDDEN_DIR])
def test_dotdot_and_the_working_directory(auditor: list[str], cwd: str) -> None:
    # Started in HIDDEN_DIR, the command must not keep the real directory as its cwd.
    code = """\
start = sys.argv[1]
seen = {"cwd": os.getcwd(), "relative": outcome(read, os.path.relpath(HIDDEN, start))}
seen["dotdot"] = outcome(read, "../" + os.path.relpath(HIDDEN, os.path.dirname(start)))
seen["in the view"] = outcome(read, HIDDEN_DIR + "/../fuse3/fuse.h")
os.chdir("/usr/..")
seen["above the view"] = [os.getcwd(), outcome(read, "usr/include/../include/fuse3/fuse.h")]
"""
    seen = _audit(auditor, code, cwd, cwd=cwd)
    assert seen == {
        "cwd": "/usr" if cwd == "/usr" else "/",
        "relative": "ENOENT",
        "dotdot": "ENOENT",
        "in the view": "ENOENT",
        "above the view": ["/", "ENOENT"],
    }


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory anyone may read (pytest's are private to root)."""
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        yield Path(tmp)


def test_symlinks_are_followed_in_the_view(auditor: list[str], public_dir: Path) -> None:
    up = "/".join([".."] * len(public_dir.parts))  # from public_dir to /
    links = {
        "absolute": HIDDEN,
        "relative": f"{up}{HIDDEN}",
        "directory": HIDDEN_DIR,
    }
    for name, target in links.items():
        (public_dir / name).symlink_to(target)
    code = """\
here = sys.argv[1]
seen = {
    name: outcome(read, f"{here}/{name}") for name in ("absolute", "relative")
}
seen["directory"] = outcome(read, f"{here}/directory/fuse.h")
seen["proc root"] = outcome(read, "/proc/self/root" + HIDDEN)
seen["proc cwd"] = outcome(read, "/proc/self/cwd/../usr/include/fuse3/fuse.h")
"""
    assert _audit(auditor, code, str(public_dir), cwd="/usr") == {
        "absolute": "ENOENT",
        "relative": "ENOENT",
        "directory": "ENOENT",
        "proc root": "ENOENT",
        "proc cwd": "ENOENT",
    }


def test_no_descriptor_is_inherited(auditor: list[str]) -> None:
    # A descriptor of the hidden directory given to `uvfs audit` does not reach the command,
    # nor does any the server holds: the command has its standard streams and nothing else.
    code = """\
seen = {}
for fd in os.listdir("/proc/self/fd"):
    target = outcome(os.readlink, f"/proc/self/fd/{fd}")
    if target != "ENOENT":  # the listing's own descriptor, closed by now
        seen[fd] = target.partition(":")[0]
"""
    given = os.open(HIDDEN_DIR, os.O_PATH | os.O_DIRECTORY)
    try:
        seen = _audit(auditor, code, pass_fds=[given])
    finally:
        os.close(given)
    assert seen == {"0": "/dev/null", "1": "pipe", "2": "pipe"}


def test_other_processes_are_out_of_reach(auditor: list[str]) -> None:
    # /proc/PID/root, /proc/PID/fd/N (the server holds the real tree open) and setns into
    # another process's mount namespace: the command sees only its own PID namespace.
    code = """\
def through_proc(pid):
    reached = []
    if outcome(read, f"/proc/{pid}/root" + HIDDEN) == "read":
        reached.append("root")
    fds = outcome(os.listdir, f"/proc/{pid}/fd")
    for fd in fds if isinstance(fds, list) else []:
        target = outcome(os.readlink, f"/proc/{pid}/fd/{fd}")
        if HIDDEN.startswith(target.rstrip("/") + "/"):
            rest = HIDDEN[len(target.rstrip("/")):]
            if outcome(read, f"/proc/{pid}/fd/{fd}{rest}") == "read":
                reached.append("fd")
    child = os.fork()
    if child == 0:
        fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY)
        entered = outcome(call, "setns", fd, CLONE_NEWNS) == "ok"
        os._exit(entered and outcome(read, HIDDEN) == "read")
    if os.waitpid(child, 0)[1] == 1 << 8:
        reached.append("setns")
    return reached

pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
seen = {"pids": pids, "reached": {pid: r for pid in pids if (r := through_proc(pid))}}
"""
    assert _audit(auditor, code) == {"pids": [1, 2], "reached": {}}


def _file_handle(path: str) -> tuple[int, bytes]:
    """name_to_handle_at(2): the handle type and bytes naming `path` on its filesystem."""
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(struct.pack("Ii", 128, 0) + bytes(128))
    mount_id = ctypes.c_int()
    if libc.name_to_handle_at(-100, os.fsencode(path), buf, ctypes.byref(mount_id), 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    size, kind = struct.unpack_from("Ii", buf.raw)
    return kind, buf.raw[8 : 8 + size]


def test_open_by_handle(auditor: list[str], public_dir: Path) -> None:
    # The real directory, by its handle obtained outside, decoded against: / (the hidden
    # tree's filesystem here, with the overlay mounted below: EPERM), a directory of that
    # filesystem with nothing mounted below (decodes only what lies beneath it: ESTALE), and
    # the view (which decodes no handle of another filesystem: ESTALE).
    kind, handle = _file_handle(HIDDEN_DIR)
    code = """\
kind, handle = int(sys.argv[1]), bytes.fromhex(sys.argv[2])
buf = ctypes.create_string_buffer(struct.pack("Ii", len(handle), kind) + handle)

def by_handle(mount_path):
    mount_fd = os.open(mount_path, os.O_RDONLY | os.O_DIRECTORY)
    fd = libc.open_by_handle_at(mount_fd, buf, os.O_RDONLY | os.O_DIRECTORY)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return listed(fd)

seen = {path: outcome(by_handle, path) for path in ("/", sys.argv[3], "/usr")}
"""
    seen = _audit(auditor, code, str(kind), handle.hex(), str(public_dir))
    assert seen == {"/": "EPERM", str(public_dir): "ESTALE", "/usr": "ESTALE"}


def test_the_audit_s_own_files_are_out_of_reach(auditor: list[str], public_dir: Path) -> None:
    # The runner's scratch directory (in TMPDIR) holds the plan and, later, the result that
    # the server writes as root: the command finds an empty read-only directory there, so
    # it cannot plant a symlink that would make the server write elsewhere.
    os.chmod(public_dir, 0o1777)
    victim = public_dir / "victim"
    victim.write_text("untouched\n")
    code = """\
top, victim = sys.argv[1:]
[scratch] = [name for name in os.listdir(top) if name.startswith("uvfs-audit-")]
path = f"{top}/{scratch}"
seen = {
    "listing": outcome(os.listdir, path),
    "plant": outcome(os.symlink, victim, f"{path}/result.json"),
}
"""
    env = {**os.environ, "TMPDIR": str(public_dir)}
    seen = _audit(auditor, code, str(public_dir), str(victim), env=env)
    assert seen == {"listing": [], "plant": "EROFS"}
    assert victim.read_text() == "untouched\n"


def test_ids_and_owners_are_seen_as_before(auditor: list[str], public_dir: Path) -> None:
    # The command's user namespace maps every ID the audit has to itself: root stays root
    # with every owner as it is; nobody's audit was root of its own namespace already,
    # where only its own ID is mapped (to 0) and other owners show as the overflow ID.
    for name, owner in (("root's", 0), ("nobody's", 65534), ("other", 1234)):
        (public_dir / name).touch()
        os.chown(public_dir / name, owner, owner)
    code = """\
here = sys.argv[1]
seen = {"me": [os.getuid(), os.getgid()]}
for name in ("root's", "nobody's", "other"):
    st = os.stat(f"{here}/{name}")
    seen[name] = [st.st_uid, st.st_gid]
"""
    as_root = auditor[0] == sys.executable
    owners = {"root's": 0, "nobody's": 65534, "other": 1234} if as_root else {"nobody's": 0}
    expected = {name: [owners.get(name, 65534)] * 2 for name in ("root's", "nobody's", "other")}
    assert _audit(auditor, code, str(public_dir)) == {"me": [0, 0], **expected}
