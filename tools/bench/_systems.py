"""The systems under comparison, each as a mount that unmounts itself when left.

Every mount is a context manager whose exit unmounts, whatever happened inside (an error,
Ctrl-C), and `unmount` is also callable on its own so write workloads can time it: a
write only counts once it is on the image, and unmounting is when every system must have
put it there (the kernel flushes its page cache, FUSE servers write back and exit).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path
from types import TracebackType

from uvfs import _runtime
from uvfs._broker import Timeouts
from uvfs._runtime import query

from ._bare_ram import read_requests
from ._host import BenchError, is_mounted, mount_options, run, wait_mounted
from ._results import BARE

UVFS = [sys.executable, "-m", "uvfs.cli"]


def _uvfs(command: str, *args: str | Path) -> str:
    """Run ``uvfs COMMAND ARGS...``; its failure reads ``uvfs mount: <its one-line reason>``."""
    try:
        return run([*UVFS, command, *args], label=f"uvfs {command}")
    except BenchError as e:
        raise BenchError(str(e).replace(": uvfs: ", ": ", 1)) from None


class Mount:
    """A mounted filesystem at `root`; unmounted on leaving the ``with`` block."""

    system = ""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._mounted = True

    def __enter__(self) -> Mount:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if kind is None:
            self.unmount()
            return
        # Leaving on an error or Ctrl-C: unmount, but never let a failure to do so (a
        # probe still holding the mount busy) replace the reason we are leaving.
        with contextlib.suppress(BenchError):
            self.unmount()

    def unmount(self) -> None:
        """Unmount and wait until the server is done; does nothing the second time."""
        if self._mounted:
            self._mounted = False
            try:
                self._unmount()
            except BaseException:
                if is_mounted(self.root):
                    subprocess.run(["umount", "-l", self.root], capture_output=True, check=False)
                raise

    def _unmount(self) -> None:
        run(["umount", self.root])

    def server(self) -> int | None:
        """The process answering this mount's requests; None for the kernel's own."""
        return None

    def requests(self) -> int | None:
        """The requests the server has answered so far; None when it does not count them."""
        return None


class KernelMount(Mount):
    """The kernel's own ext2 (or ext4) driver on a loop device (which ``umount`` detaches)."""

    system = "kernel"

    def __init__(self, image: Path, root: Path, *, writable: bool, fstype: str = "ext2") -> None:
        run(["mount", "-t", fstype, "-o", "loop," + ("rw" if writable else "ro"), image, root])
        super().__init__(root)


class ForegroundMount(Mount):
    """A FUSE server run in the foreground, so that unmounting can wait for it to exit."""

    def __init__(self, command: list[str], root: Path) -> None:
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches us, and we unmount it in order
        )
        try:
            wait_mounted(root, self._process)
        except BaseException:
            self._process.kill()
            self._process.wait()
            raise
        super().__init__(root)

    def server(self) -> int:
        return self._process.pid

    def _unmount(self) -> None:
        try:
            run(["umount", self.root])
            self._process.wait(timeout=120)
        finally:
            if self._process.poll() is None:
                self._process.kill()
                self._process.wait()


class Fuse2fsMount(ForegroundMount):
    """e2fsprogs' fuse2fs."""

    system = "fuse2fs"

    def __init__(self, image: Path, root: Path, *, writable: bool) -> None:
        mode = "rw" if writable else "ro"
        super().__init__(["fuse2fs", str(image), str(root), "-f", "-o", mode], root)


class BareMount(ForegroundMount):
    """The null tree served by bare pyfuse3 (``_bare.py``), told uvfs's `timeouts`."""

    system = BARE

    def __init__(self, spec: Path, root: Path, timeouts: Timeouts) -> None:
        told = [str(t) for t in (timeouts.entry, timeouts.attr, timeouts.negative)]
        command = [sys.executable, "-m", "tools.bench._bare", str(spec), str(root)]
        super().__init__([*command, "--timeouts", *told], root)


class BareRamMount(ForegroundMount):
    """The in-memory tree served by bare pyfuse3 (``_bare_ram.py``), told what uvfs tells
    the kernel for a writable mount: its `timeouts`, and `acl` when it enables ACLs."""

    system = BARE

    def __init__(
        self, spec: Path, root: Path, timeouts: Timeouts, *, acl: bool, counter: Path
    ) -> None:
        self.counter = counter
        told = [str(t) for t in (timeouts.entry, timeouts.attr, timeouts.negative)]
        command = [sys.executable, "-m", "tools.bench._bare_ram", str(spec), str(root),
                   "--timeouts", *told, "--requests", str(counter), *(["--acl"] * acl)]  # fmt: skip
        super().__init__(command, root)

    def requests(self) -> int:
        return read_requests(self.counter)


class UvfsMount(Mount):
    """``uvfs mount``, which returns once the mount is live; ``uvfs umount`` waits for it."""

    system = "uvfs"

    def __init__(
        self, sources: list[Path], root: Path, *, writable: bool, fstype: str, options: str = ""
    ) -> None:
        mode = "rw" if writable else "ro"
        _uvfs("mount", "-t", fstype, "-o", f"{mode}{options}", *sources, root)
        super().__init__(root)

    @property
    def read_only(self) -> bool:
        """Whether the mount ended up read-only (uvfs says why only in its log)."""
        return "ro" in mount_options(self.root)

    def stats(self) -> dict[str, int]:
        """The counters ``uvfs stats`` shows, e.g. ``cache.bytes_from_driver``, and ``pid``.

        Asked on the server's control socket, as ``uvfs stats`` does, but without touching
        the mountpoint: the answer adds no FUSE request to the counts.
        """
        record = _runtime.find(str(self.root))
        if record is None:
            raise BenchError(f"{self.root}: no uvfs server is registered for it")
        try:
            reply = query(Path(record.socket))
        except OSError as e:
            raise BenchError(f"{self.root}: control socket: {e}") from None
        counters = {"pid": record.pid}
        for section in ("broker", "cache"):
            for name, value in reply.get(section, {}).items():
                if isinstance(value, int):
                    counters[f"{section}.{name}"] = value
        return counters

    def server(self) -> int:
        return self.stats()["pid"]

    def requests(self) -> int:
        return self.stats()["broker.requests"]

    def _unmount(self) -> None:
        _uvfs("umount", self.root)
