"""Sources: the block-device stack below the drivers, and which partition of a disk to use.

A source given on the command line opens as a stack, each layer with `ImageFile`'s surface:

    file or block device (`ImageFile`) -> container (raw, or `Qcow2Image`)
        -> partition (`Window`, when the disk has a table and one is chosen) -> driver

Drivers see only the top and never know what lies below. Choosing the partition follows
what a careful user of udisks or guestmount expects: a device that holds a filesystem
itself is used whole; otherwise ``partition=N`` names one, or, without it, the one
partition that holds a filesystem a driver recognises is used (and the user told which).
Several such partitions, or none, is a one-line refusal naming them.
"""

from __future__ import annotations

from dataclasses import dataclass

from uvfs._api import Refusal
from uvfs._image import ImageFile
from uvfs._partitions import PartitionTable, read_partition_table
from uvfs._qcow2 import is_qcow2
from uvfs._qcow2_image import Qcow2Image, open_image
from uvfs._registry import identify, probe_head
from uvfs._window import BlockDevice, Window


@dataclass(frozen=True, slots=True)
class Source:
    """What to open: a path, and the partition in it (None: the whole device)."""

    path: str
    partition: int | None = None


def open_container(path: str, *, writable: bool) -> BlockDevice:
    """The disk that `path` holds: the file or device itself, or a qcow2 image's guest disk
    (read-only: a writable open of one is a `Refusal`)."""
    if not writable:
        return open_image(path)
    image = ImageFile(path, writable=True)
    if image.size >= 4 and is_qcow2(image.read_sync(0, 4)):
        image.close()
        raise Refusal(f"{path}: qcow2 images are read-only; mount with -o ro")
    return image


def open_source(source: Source, *, writable: bool) -> BlockDevice:
    """The top of `source`'s stack; closing it closes every layer."""
    device = open_container(source.path, writable=writable)
    if source.partition is None:
        return device
    try:
        return partition_window(device, source.path, source.partition)
    except BaseException:
        device.close()
        raise


def partition_window(device: BlockDevice, path: str, number: int) -> Window:
    """Partition `number` of `device`; `Refusal` when there is no such partition."""
    table = read_partition_table(device)
    if table is None:
        raise Refusal(f"{path}: no partition table, so no partition {number}")
    partition = table.get(number)
    if partition is None:
        have = ", ".join(str(p.number) for p in table.partitions) or "none"
        raise Refusal(f"{path}: no partition {number} (partitions: {have})")
    if partition.container:
        raise Refusal(f"{path}: partition {number} is an extended partition (it holds 5 and up)")
    return Window(device, partition.start, partition.size, f"{path} partition {number}")


@dataclass(frozen=True, slots=True)
class Survey:
    """What a disk holds: its container, a filesystem on the whole of it, its partitions
    and the filesystem in each (partition number -> name, as `identify` names them)."""

    container: str  # "raw" or "qcow2"
    filesystem: str | None
    table: PartitionTable | None
    found: dict[int, str]

    @property
    def warnings(self) -> tuple[str, ...]:
        return self.table.warnings if self.table else ()


def survey(device: BlockDevice) -> Survey:
    """Look at `device`: whole-disk filesystem, partition table, each partition's content."""
    container = "qcow2" if isinstance(device, Qcow2Image) else "raw"
    whole = identify(probe_head(device))
    table = read_partition_table(device) if whole is None else None
    found: dict[int, str] = {}
    for p in table.partitions if table else ():
        if not p.container:
            kind = identify(probe_head(Window(device, p.start, p.size, device.path)))
            if kind is not None:
                found[p.number] = kind
    return Survey(container, whole, table, found)


def choose(path: str, found: Survey, partition: int | None) -> tuple[Source, str | None]:
    """The source to open for `path`, and what to tell the user about the choice.

    Raises:
        Refusal: ``partition=`` names no usable partition, or none was given and the disk
            has no single partition holding a filesystem.
    """
    if partition is not None or found.table is None:
        return Source(path, partition), None
    if len(found.found) == 1:
        ((number, kind),) = found.found.items()
        return Source(path, number), f"{path}: using partition {number} ({kind})"
    if found.found:
        names = ", ".join(f"{n} ({kind})" for n, kind in found.found.items())
        raise Refusal(
            f"{path}: several partitions hold filesystems: {names}; choose one with -o partition=N"
        )
    raise Refusal(f"{path}: no partition holds a known filesystem")
