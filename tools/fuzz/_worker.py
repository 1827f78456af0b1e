"""The worker process: runs cases sent as JSON lines on stdin, one answer line per case.

It keeps a private working copy of every seed (sparse, in the runner's scratch directory),
patches it for a case, hashes the files, walks them in-process (`walk_images`), hashes
again and undoes the patches. It is a process of its own so that the runner can time a
case out, or see it kill the process, without losing the run: a Python loop that never
awaits cannot be cancelled from inside.

A case with `unverified` set runs with block-pointer checksums accepted as they are
(zio's comparison replaced for that case), as if the damage had been resealed; one with
`logical` patches runs with zio's decompression wrapped to apply them to the blocks they
name (by the sha256 of their stored bytes).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import traceback
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import trio

from uvfs_fs.zfs import zio

from ._corpus import Seed, seeds
from ._mutate import Case
from ._walk import FuzzImage, Written, walk_images

_CHUNK = 1 << 20
_ZERO_CHUNK = hashlib.sha256(bytes(_CHUNK)).digest()


def sparse_sha256(path: Path) -> str:
    """sha256 over the sha256 of each MiB of the file, holes read as zeros without reading
    them: a function of the bytes alone (not of where the filesystem keeps holes), fast
    on sparse vdevs."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        fd, size = f.fileno(), os.fstat(f.fileno()).st_size
        for at in range(0, size, _CHUNK):
            length = min(_CHUNK, size - at)
            try:
                hole = os.lseek(fd, at, os.SEEK_DATA) >= at + length
            except OSError:  # ENXIO: nothing but a hole from here on
                hole = True
            if hole and length == _CHUNK:
                h.update(_ZERO_CHUNK)
                continue
            data = os.pread(fd, length, at)
            h.update(_ZERO_CHUNK if data.count(0) == _CHUNK else hashlib.sha256(data).digest())
    return h.hexdigest()


def copy_seed(seed: Seed, dest: Path) -> list[Path]:
    """A sparse copy of `seed`'s files in `dest`, same order."""
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for i, src in enumerate(seed.files):
        target = dest / f"{i}-{src.name}"
        subprocess.run(["cp", "--sparse=always", str(src), str(target)], check=True)
        out.append(target)
    return out


def apply(
    files: list[Path], patches: tuple[tuple[int, int, bytes], ...]
) -> list[tuple[int, int, bytes]]:
    """Write `patches` into `files`; returns the patches that undo them."""
    undo = []
    for index, offset, data in patches:
        with open(files[index], "r+b") as f:
            f.seek(offset)
            undo.append((index, offset, f.read(len(data))))
            f.seek(offset)
            f.write(data)
    return undo[::-1]


@contextmanager
def checksums_accepted(on: bool) -> Iterator[None]:
    """While inside, every block's checksum counts as matching (when `on`)."""
    if not on:
        yield
        return
    saved = zio._matches
    zio._matches = lambda bp, got: True
    try:
        yield
    finally:
        zio._matches = saved


@contextmanager
def logical_damage(patches: tuple[tuple[str, int, bytes], ...]) -> Iterator[None]:
    """While inside, a block whose stored bytes hash to a key of `patches` decompresses
    to its bytes with those patches applied."""
    if not patches:
        yield
        return
    by_block: dict[str, list[tuple[int, bytes]]] = {}
    for key, offset, data in patches:
        by_block.setdefault(key, []).append((offset, data))
    real = zio.decompress

    def damaged(compress: int, src: bytes, lsize: int) -> bytes:
        out = real(compress, src, lsize)
        edits = by_block.get(hashlib.sha256(src).hexdigest())
        if edits:
            buf = bytearray(out)
            for offset, data in edits:
                buf[offset : offset + len(data)] = data
            out = bytes(buf[:lsize])
        return out

    zio.decompress = damaged
    try:
        yield
    finally:
        zio.decompress = real


def driver_named(name: str) -> object:
    if name == "ext2":
        from uvfs_fs.ext2 import DRIVER
    else:
        from uvfs_fs.zfs import DRIVER
    return DRIVER


def run_case(driver: str, files: list[Path], case: Case) -> dict:
    """Patch `files`, walk them, undo: the verdict as a JSON-able dict."""
    undo = apply(files, case.patches)
    try:
        before = [sparse_sha256(p) for p in files]
        result: dict = {"number": case.number, "failure": None, "answers": 0}
        try:
            with (
                ExitStack() as stack,
                checksums_accepted(case.unverified),
                logical_damage(case.logical),
            ):
                images = [stack.enter_context(FuzzImage(str(p))) for p in files]
                result["answers"] = trio.run(walk_images, driver_named(driver), images)
        except Written as e:
            result["failure"] = "write"
            result["detail"] = str(e)
        except BaseException as e:
            if isinstance(e, KeyboardInterrupt):
                raise
            result["failure"] = "exception"
            result["detail"] = f"{type(e).__name__}: {e}"[:300]
            result["traceback"] = traceback.format_exc()
        after = [sparse_sha256(p) for p in files]
        if after != before and result["failure"] is None:
            result["failure"] = "write"
            result["detail"] = "the image's sha256 changed"
        return result
    finally:
        apply(files, tuple(undo))


def main() -> None:
    """``python -m tools.fuzz._worker DRIVER WORKDIR SCRATCH``: SCRATCH (the runner's, which
    removes it) holds the working copies of the seeds."""
    driver, workdir, scratch = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    logging.disable(logging.CRITICAL)  # damaged images log by the thousand: keep it quiet
    by_name = {s.name: s for s in seeds(driver, workdir)}
    copies: dict[str, list[Path]] = {}
    for line in sys.stdin:
        case = Case.from_json(json.loads(line))
        if case.seed not in copies:
            copies[case.seed] = copy_seed(by_name[case.seed], scratch / case.seed)
        result = run_case(driver, copies[case.seed], case)
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
