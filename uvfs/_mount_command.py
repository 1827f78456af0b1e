"""``uvfs mount`` and ``uvfs info``: the ``-o`` options, opening the sources a user names,
and the serving process's life.

``uvfs mount`` without ``-f`` runs the mount in a child process that detaches from the
terminal; the parent waits on a pipe until the child says the mount is live (exit 0) or
why it failed (exit 1), so the command returns only once the mountpoint is usable.

Kept apart from `uvfs.cli`, which loads it only for these two commands: it needs trio and
pyfuse3, whose import would otherwise slow every ``uvfs umount`` and ``uvfs stats``.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import math
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import trio

from uvfs import _api as api
from uvfs import _registry, _runtime
from uvfs._cache import BufferCache
from uvfs._control import serve_control
from uvfs._image import ImageInUse
from uvfs._isolation import DEFAULT_TIMEOUT, driver_statistics, isolated
from uvfs._memory import DEFAULT_BUDGET, MemoryBudget
from uvfs._mount import MountFailed, serve
from uvfs._source import Source, Survey, choose, open_container, open_source, survey
from uvfs._user_error import UserError, warn
from uvfs._window import BlockDevice

# --- mount options --------------------------------------------------------------------------

_FUSE_FLAGS = ("allow_other", "default_permissions", "debug")
_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
DEFAULT_CACHE_SIZE = DEFAULT_BUDGET


@dataclass(frozen=True, slots=True)
class Options:
    """The parsed ``-o`` list."""

    writable: bool = True  # mount(8) mounts read-write unless told otherwise
    force: bool = False
    isolate: bool = False  # serve the driver from a process of its own
    driver_timeout: float = DEFAULT_TIMEOUT  # seconds before an isolated driver is hung
    fakeroot: bool = False  # the mounting user acts as root inside the image
    fuse: tuple[str, ...] = ()
    cache_size: int = DEFAULT_CACHE_SIZE
    partition: int | None = None  # which partition of a disk; None: see uvfs/_source.py


def parse_size(text: str) -> int:
    """``256M`` -> 268435456. Units K, M, G, T (powers of 1024), optionally with ``iB``/``B``."""
    body = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = body[-1:] if body[-1:] in _SIZE_UNITS else ""
    number = body[: len(body) - len(unit)]
    if not number.isdigit():
        raise UserError(f"bad size '{text}' (expected e.g. 512M or 2G)")
    return int(number) * _SIZE_UNITS[unit]


def _parse_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds < math.inf:
        raise UserError(f"bad driver_timeout '{text}' (expected seconds, e.g. 60)")
    return seconds


def parse_options(text: str | None) -> Options:
    """Parse mount(8)-style ``-o`` options; an unknown one is a `UserError` naming it."""
    writable, fuse, cache_size, partition = True, [], DEFAULT_CACHE_SIZE, None
    driver_timeout: float | None = None
    flags = {"force": False, "isolate": False, "fakeroot": False}
    for item in filter(None, (text or "").split(",")):
        name, _, value = item.partition("=")
        if name in ("ro", "rw") and not value:
            writable = name == "rw"
        elif name in flags and not value:
            flags[name] = True
        elif name in _FUSE_FLAGS and not value:
            fuse.append(name)
        elif name == "cache_size" and value:
            cache_size = parse_size(value)
        elif name == "partition" and value:
            if not value.isdigit() or int(value) < 1:
                raise UserError(f"bad partition number '{value}' (expected 1, 2, ...)")
            partition = int(value)
        elif name == "driver_timeout" and value:
            driver_timeout = _parse_seconds(value)
        else:
            known = (
                "ro, rw, allow_other, default_permissions, debug, force, isolate, fakeroot, "
                "cache_size=SIZE, partition=N, driver_timeout=SECS"
            )
            raise UserError(f"unknown mount option '{item}' (known: {known})")
    if flags["fakeroot"] and "allow_other" in fuse:
        raise UserError(
            "fakeroot cannot be combined with allow_other (nothing would check the other users)"
        )
    if driver_timeout is not None and not flags["isolate"]:
        raise UserError("driver_timeout needs isolate (only a driver process can be restarted)")
    return Options(
        writable=writable,
        force=flags["force"],
        isolate=flags["isolate"],
        driver_timeout=DEFAULT_TIMEOUT if driver_timeout is None else driver_timeout,
        fakeroot=flags["fakeroot"],
        fuse=tuple(fuse),
        cache_size=cache_size,
        partition=partition,
    )


# --- opening images ---------------------------------------------------------------------------


def _check_source(path: str) -> None:
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise UserError(f"{path}: {os.strerror(e.errno or errno.EIO)}") from None
    if stat.S_ISDIR(mode):
        raise UserError(f"{path}: is a directory, not a filesystem image")


def _check_mountpoint(path: str) -> None:
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        if e.errno == errno.ENOTCONN:
            raise UserError(
                f"{path}: a dead mount is still there; run: uvfs umount {path}"
            ) from None
        raise UserError(f"mountpoint {path}: {os.strerror(e.errno or errno.EIO)}") from None
    if not stat.S_ISDIR(mode):
        raise UserError(f"mountpoint {path}: not a directory")
    if os.path.ismount(path):
        raise UserError(f"mountpoint {path}: something is already mounted there")


@contextlib.contextmanager
def _opening(path: str) -> Iterator[None]:
    try:
        yield
    except ImageInUse as e:
        raise UserError(str(e)) from None
    except OSError as e:
        raise UserError(f"{path}: {os.strerror(e.errno or errno.EIO)}") from None


def _open_source(source: Source, writable: bool) -> BlockDevice:
    with _opening(source.path):
        return open_source(source, writable=writable)


@contextlib.contextmanager
def open_sources(sources: Sequence[Source], writable: bool) -> Iterator[list[BlockDevice]]:
    """Open every source, closing those already open if a later one fails."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(_open_source(s, writable)) for s in sources]


def resolve_sources(
    paths: Sequence[str], partition: int | None, tell: Callable[[str], None]
) -> tuple[list[Source], str | None]:
    """Which partition of each path to open (see uvfs/_source.py), telling the user what
    was chosen or worked around; and why the mount must be read-only, if it must."""
    sources, read_only = [], None
    for path in paths:
        with _opening(path), open_container(path, writable=False) as device:
            found = survey(device)
        for warning in found.warnings:
            tell(warning)
        source, note = choose(path, found, partition)
        if note is not None:
            tell(note)
        if found.container == "qcow2" and read_only is None:
            read_only = f"{path} is a qcow2 image, which uvfs only reads: mounting read-only"
        sources.append(source)
    return sources, read_only


def _driver_for(fstype: str | None, image: BlockDevice) -> api.DriverType:
    return _registry.driver_named(fstype) if fstype else _registry.detect(image)


def _writable(path: str) -> bool:
    return os.access(path, os.W_OK)


# --- mount ------------------------------------------------------------------------------------


class _Progress:
    """What the serving process tells its user: on stderr in the foreground, else through
    the pipe to the ``uvfs mount`` that waits for it (lines "warning: ...", then "ok" or
    "error: ..."). The warnings are kept for ``uvfs stats``."""

    def __init__(self, fd: int | None) -> None:
        self._pipe = os.fdopen(fd, "w", buffering=1) if fd is not None else None
        self.warnings: list[str] = []

    @property
    def detached(self) -> bool:
        return self._pipe is not None

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        if self._pipe is None:
            warn(message)
        elif not self._pipe.closed:
            self._pipe.write(f"warning: {message}\n")

    def logged(self, message: str) -> None:
        """A warning the server logged: `warn` it, unless the log is the user's stderr."""
        if self.detached:
            self.warn(message)
        else:
            self.warnings.append(message)

    def finish(self, outcome: str) -> None:
        """Say "ok" or "error: ..." and let the waiting parent go."""
        if self._pipe is not None and not self._pipe.closed:
            self._pipe.write(outcome + "\n")
            self._pipe.close()


async def _mount(args: argparse.Namespace, options: Options, progress: _Progress) -> None:
    """Open, mount and serve until unmounted, telling `progress` how it went."""
    for source in args.sources:
        _check_source(source)
    _check_mountpoint(args.mountpoint)
    # Resolved now: once mounted, resolving it from this process would wait on itself.
    args.mountpoint = os.path.realpath(args.mountpoint)
    sources, read_only = resolve_sources(args.sources, options.partition, progress.warn)
    writable = options.writable
    if writable and not all(_writable(s) for s in args.sources):
        writable = False
        progress.warn(f"{args.sources[0]} is write-protected, mounting read-only")
    if writable and read_only:
        writable = False
        progress.warn(read_only)
    with open_sources(sources, writable=False) as images:
        driver = _driver_for(args.type, images[0])
    spec = args.type or driver.name
    memory = MemoryBudget(options.cache_size)  # the broker's cache and the driver's share it
    async with contextlib.AsyncExitStack() as stack:
        with _driver_warnings(progress):
            fs = await _open_filesystem(stack, spec, driver, sources, writable, options, memory)
            if writable and not isinstance(fs, api.Write):
                progress.warn(
                    f"the {driver.name} driver cannot write, mounting {args.sources[0]} read-only"
                )
                writable = False
                await stack.aclose()  # reopen read-only, so the image's bytes cannot change
                fs = await _open_filesystem(stack, spec, driver, sources, writable, options, memory)
        await _serve_mount(args, options, driver, fs, writable, progress, memory)


class _ProgressHandler(logging.Handler):
    def __init__(self, progress: _Progress) -> None:
        super().__init__(logging.WARNING)
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        self.progress.logged(record.getMessage())


@contextlib.contextmanager
def _driver_warnings(progress: _Progress) -> Iterator[None]:
    """What a driver logs as a warning while it opens the image (a journal replayed in
    memory, an error state read as it is ...) reaches the user who runs ``uvfs mount``,
    not only the server's log (in the foreground the log is already on stderr), and
    ``uvfs stats``."""
    handler = _ProgressHandler(progress)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)


async def _open_filesystem(
    stack: contextlib.AsyncExitStack,
    spec: str,
    driver: api.DriverType,
    sources: Sequence[Source],
    writable: bool,
    options: Options,
    memory: MemoryBudget,
) -> api.FileSystem:
    """Open the images and the driver, here or (``isolate``) in a process of their own."""
    mount_options = api.MountOptions(writable=writable, force=options.force, memory=memory)
    if options.isolate:
        opened = isolated(spec, sources, mount_options, timeout=options.driver_timeout)
        return await stack.enter_async_context(opened)
    images = [stack.enter_context(_open_source(s, writable)) for s in sources]
    return await driver.open(images, mount_options)


async def _serve_mount(
    args: argparse.Namespace,
    options: Options,
    driver: api.DriverType,
    fs: api.FileSystem,
    writable: bool,
    progress: _Progress,
    memory: MemoryBudget,
) -> None:
    cache = BufferCache(memory) if options.cache_size else None
    _, socket_path, log_path = _runtime.paths_for(args.mountpoint)
    async with trio.open_nursery() as nursery:
        if cache is not None:  # one budget for all the user's mounts: see uvfs/_budget.py
            # Imported only here: the shared table needs numpy, which would add a tenth of a
            # second to every `uvfs umount` and `uvfs stats` (unmounting is timed in benches).
            from uvfs._budget import share_budget

            await nursery.start(share_budget, memory)

        async def serve_then_stop(task_status: trio.TaskStatus[Any]) -> None:
            await serve(
                fs,
                args.mountpoint,
                read_only=not writable,
                fuse_options=options.fuse,
                fsname=os.path.abspath(args.sources[0]),
                subtype=driver.name,
                cache=cache,
                fakeroot=options.fakeroot,
                task_status=task_status,
            )
            nursery.cancel_scope.cancel()

        broker = await nursery.start(serve_then_stop)

        def report() -> dict[str, Any]:
            stats: dict[str, Any] = {
                "mountpoint": args.mountpoint,
                "type": driver.name,
                "read_only": not writable,
                "driver": asdict(driver_statistics(fs)),
                "broker": asdict(broker.statistics()),
            }
            if cache is not None:
                stats["cache"] = asdict(cache.statistics(broker.mount_id))
            stats["memory"] = asdict(memory.statistics())  # the driver's caches too
            stats["warnings"] = progress.warnings  # what `uvfs mount` said
            return stats

        await nursery.start(serve_control, socket_path, report)
        _runtime.register(
            _runtime.MountRecord(
                pid=os.getpid(),
                mountpoint=args.mountpoint,
                fstype=driver.name,
                sources=[os.path.abspath(s) for s in args.sources],
                socket=str(socket_path),
                log=str(log_path),
            )
        )
        nursery.start_soon(_stop_on_signal, nursery.cancel_scope)
        progress.finish("ok")
    _runtime.unregister(args.mountpoint)


async def _stop_on_signal(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for _ in signals:
            scope.cancel()
            return


def _mount_foreground(args: argparse.Namespace) -> int:
    """Serve in this process; with --ready-fd, report to the waiting parent."""
    progress = _Progress(args.ready_fd)
    try:
        trio.run(_mount, args, parse_options(args.options), progress)
    except BaseException as e:
        failure = user_failure(e)
        if failure is None:
            progress.finish("error: the server failed; see its log")
            raise
        if not progress.detached:
            raise UserError(failure) from None
        progress.finish(f"error: {failure}")
        return 1
    return 0


def user_failure(error: BaseException) -> str | None:
    """The one-line message for a failure the user caused, or None for a bug."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    if isinstance(error, (UserError, api.Refusal, ImageInUse, MountFailed)):
        return str(error)
    if isinstance(error, api.FSError):
        return f"cannot read image: {error}"
    return None


def _mount_background(args: argparse.Namespace) -> int:
    """Start a detached server and wait until it says the mount is live or why not."""
    parse_options(args.options)  # a bad option fails here, before anything starts
    read_fd, write_fd = os.pipe()
    _, _, log_path = _runtime.paths_for(os.path.realpath(args.mountpoint))
    command = [sys.executable, "-m", "uvfs.cli", "mount", "-f", "--ready-fd", str(write_fd)]
    if args.type:
        command += ["-t", args.type]
    if args.options:
        command += ["-o", args.options]
    command += [*args.sources, args.mountpoint]
    with open(log_path, "a") as log_file:
        subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            pass_fds=(write_fd,),
            start_new_session=True,
        )
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        for line in pipe:
            kind, _, message = line.rstrip("\n").partition(": ")
            if kind == "warning":
                warn(message)
            elif kind == "error":
                raise UserError(message)
            elif kind == "ok":
                return 0
    raise UserError(f"the mount failed; its log is {log_path}")


def cmd_mount(args: argparse.Namespace) -> int:
    if args.foreground:
        logging.basicConfig(
            level=logging.DEBUG if "debug" in (args.options or "") else logging.INFO,
            format="%(asctime)s %(name)s %(levelname)s: %(message)s",
        )
        return _mount_foreground(args)
    return _mount_background(args)


# --- info ---------------------------------------------------------------------------------------


def _human(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{size} B"
        size /= 1024
    raise AssertionError


def _partition_listing(found: Survey, disk_size: int) -> str:
    """A disk's partitions as ``uvfs info`` shows them: one line each, numbered as the
    kernel numbers /dev/sdaN, with the filesystem found in each."""
    table = found.table
    assert table is not None
    ss = table.sector_size
    container = " (qcow2 image)" if found.container == "qcow2" else ""
    lines = [
        f"type: {table.scheme} partition table, {ss}-byte sectors, "
        f"{_human(disk_size)} disk{container}",
        f"{'number':<7} {'start':>10} {'sectors':>10} {'size':>10}  {'type':<24} filesystem",
    ]
    for p in table.partitions:
        kind = "(logical partitions)" if p.container else found.found.get(p.number, "none")
        lines.append(
            f"{p.number:<7} {p.start // ss:>10} {p.size // ss:>10} {_human(p.size):>10}  "
            f"{p.type_name:<24} {kind}"
        )
    return "\n".join(lines)


def cmd_info(args: argparse.Namespace) -> int:
    for source in args.sources:
        _check_source(source)
    if len(args.sources) == 1 and args.partition is None:
        path = args.sources[0]
        with _opening(path), open_container(path, writable=False) as device:
            found, disk_size = survey(device), device.size
        if found.table is not None:
            for warning in found.warnings:
                warn(warning)
            print(_partition_listing(found, disk_size))
            return 0
    sources, _ = resolve_sources(args.sources, args.partition, warn)
    with open_sources(sources, writable=False) as images:
        driver = _driver_for(args.type, images[0])
        print(f"type: {driver.name}")
        print(trio.run(driver.describe, images))
    return 0
