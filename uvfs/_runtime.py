"""Where live mounts are registered: one JSON record and one control socket per mountpoint.

``uvfs umount`` finds the serving process there (to wait until it has written everything
back), and ``uvfs stats`` finds the control socket. Records live in ``$XDG_RUNTIME_DIR/uvfs``
(else ``/tmp/uvfs-<uid>``), keyed by a hash of the mountpoint's real path. Callers resolve
that path (os.path.realpath) *before* mounting: resolving it afterwards from the serving
process would stat the mount, which waits for that very process to answer.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class MountRecord:
    """What a serving process says about itself."""

    pid: int
    mountpoint: str
    fstype: str
    sources: list[str]
    socket: str
    log: str


def runtime_dir() -> Path:
    base = os.environ.get("XDG_RUNTIME_DIR")
    path = Path(base, "uvfs") if base else Path(f"/tmp/uvfs-{os.getuid()}")
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def _key(mountpoint: str) -> str:
    return hashlib.sha256(mountpoint.encode()).hexdigest()[:16]


def paths_for(mountpoint: str) -> tuple[Path, Path, Path]:
    """The record, control socket and log paths for `mountpoint` (a real path)."""
    base = runtime_dir() / _key(mountpoint)
    return base.with_suffix(".json"), base.with_suffix(".sock"), base.with_suffix(".log")


def register(record: MountRecord) -> None:
    path, _, _ = paths_for(record.mountpoint)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(record)))
    tmp.replace(path)


def unregister(mountpoint: str) -> None:
    for path in paths_for(mountpoint)[:2]:
        path.unlink(missing_ok=True)


def find(mountpoint: str) -> MountRecord | None:
    """The record of the process serving `mountpoint`, if it is still alive."""
    path, _, _ = paths_for(mountpoint)
    try:
        record = MountRecord(**json.loads(path.read_text()))
        os.kill(record.pid, 0)
    except (OSError, ValueError, TypeError):
        return None
    return record


def query(path: Path, request: str = "stats", timeout: float = 10.0) -> dict[str, Any]:
    """Send `request` to the control socket at `path` and return the decoded reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(request.encode() + b"\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return json.loads(b"".join(chunks))


def unescape_mount_field(field: str) -> str:
    """A path as /proc/mounts and mountinfo write it (octal escapes) -> the path."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)
