"""Run filesystem operations as whoever runs this script and print what each one gave.

Standard library only: the permission tests run it with Debian's python3 under setpriv, as
users that cannot read this project's virtual environment. Usage:
``python3 permissions_probe.py ROOT '[["read", "a/b"], ...]'`` prints a JSON list with one
outcome per operation: ``"ok"``, ``["ok", value]`` or the errno's name. Paths are relative
to ROOT; ``umask`` changes the umask for the operations after it.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import struct
import subprocess
import sys
from pathlib import Path


def acl(entries: list[list[int]]) -> bytes:
    """The kernel's xattr form of a POSIX ACL: version 2, then (tag, perm, id) entries."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


def describe(path: str) -> list:
    st = os.lstat(path)
    return [oct(st.st_mode), st.st_uid, st.st_gid]


def run(op: str, *args):
    if op == "read":
        with open(args[0], "rb") as f:
            return f.read().decode()
    if op == "write":
        with open(args[0], "r+b") as f:
            f.write(args[1].encode())
        return None
    if op == "create":
        os.close(os.open(args[0], os.O_CREAT | os.O_EXCL | os.O_WRONLY, int(args[1], 8)))
        return describe(args[0])
    if op == "mkdir":
        os.mkdir(args[0], int(args[1], 8))
        return describe(args[0])
    if op == "mknod":
        os.mknod(args[0], stat.S_IFIFO | int(args[1], 8))
        return describe(args[0])
    if op == "symlink":
        os.symlink(args[1], args[0])
        return describe(args[0])
    if op == "link":
        os.link(args[0], args[1])
        return None
    if op == "listdir":
        return sorted(os.listdir(args[0]))
    if op == "stat":
        return describe(args[0])
    if op == "unlink":
        os.unlink(args[0])
        return None
    if op == "rmdir":
        os.rmdir(args[0])
        return None
    if op == "rename":
        os.rename(args[0], args[1])
        return None
    if op == "chmod":
        os.chmod(args[0], int(args[1], 8))
        return describe(args[0])
    if op == "chown":
        os.chown(args[0], args[1], args[2])
        return describe(args[0])
    if op == "truncate":
        os.truncate(args[0], args[1])
        return describe(args[0])
    if op == "utime":
        os.utime(args[0], None if args[1] is None else (args[1], args[1]))
        return None
    if op == "noatime":
        os.close(os.open(args[0], os.O_RDONLY | os.O_NOATIME))
        return None
    if op == "access":
        return os.access(args[0], int(args[1], 8))
    if op == "chdir":
        here = os.getcwd()
        os.chdir(args[0])
        os.chdir(here)
        return None
    if op == "setacl":
        os.setxattr(args[0], args[1], acl(args[2]))
        return describe(args[0])
    if op == "getacl":
        value = os.getxattr(args[0], args[1])
        return [list(e) for e in struct.iter_unpack("<HHI", value[4:])]
    if op == "setxattr":
        os.setxattr(args[0], args[1], args[2].encode())
        return None
    if op == "removexattr":
        os.removexattr(args[0], args[1])
        return describe(args[0])
    if op == "umask":
        os.umask(int(args[0], 8))
        return None
    raise ValueError(f"unknown operation {op}")


def probe(root: Path, user: list[str], ops: list) -> list:
    """Run `ops` in `root` as `user` (setpriv's options) and return their outcomes."""
    done = subprocess.run(
        ["setpriv", *user, "/usr/bin/python3", __file__, str(root), json.dumps(ops)],
        capture_output=True, text=True, timeout=60, check=False, cwd="/",
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"probe failed: {done.stderr}")
    return json.loads(done.stdout)


def main() -> None:
    outcomes = []
    for op, *args in json.loads(sys.argv[2]):
        try:
            value = run(op, *args)
        except OSError as e:
            outcomes.append(errno.errorcode.get(e.errno or 0, str(e.errno)))
        else:
            outcomes.append("ok" if value is None else ["ok", value])
    print(json.dumps(outcomes))


if __name__ == "__main__":
    os.chdir(sys.argv[1])
    main()
