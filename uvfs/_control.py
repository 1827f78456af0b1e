"""The control socket of a serving process: ``uvfs stats`` asks, the process answers in JSON.

The protocol is one request line (``stats``) and one JSON reply, then the connection closes.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

_MAX_REQUEST = 64


async def serve_control(
    path: Path,
    report: Callable[[], dict[str, Any]],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Answer ``stats`` requests on a unix socket at `path` until cancelled."""
    path.unlink(missing_ok=True)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(str(path))
    sock.listen()
    listener = trio.SocketListener(sock)

    async def answer(stream: trio.SocketStream) -> None:
        async with stream:
            request = (await stream.receive_some(_MAX_REQUEST)).strip()
            reply = report() if request == b"stats" else {"error": "unknown request"}
            await stream.send_all(json.dumps(reply).encode())

    try:
        task_status.started()
        await trio.serve_listeners(answer, [listener])
    finally:
        path.unlink(missing_ok=True)
