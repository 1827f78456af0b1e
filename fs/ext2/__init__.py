"""The ext2/ext3/ext4 driver, read-only: `DRIVER` is what the ``uvfs.drivers`` entry point names.

Layered like e2fsprogs' lib/ext2fs, one module per on-disk structure (`superblock`,
`group_desc`, `inode`, `dirent`, `blockmap`, `extents`, `xattr`), all sans-I/O, and
`filesystem`, the async layer that reads an image through them.
"""

from __future__ import annotations

from collections.abc import Sequence

from uvfs import ImageFile, MountOptions, Refusal
from uvfs_fs.ext2.filesystem import Ext2FileSystem, read_superblock
from uvfs_fs.ext2.superblock import EXT2_SUPER_MAGIC, SUPERBLOCK_OFFSET, describe, ext_generation

_MAGIC_OFFSET = SUPERBLOCK_OFFSET + 0x38  # s_magic


class Ext2Driver:
    """The ext2 driver type: also opens ext3 and ext4 volumes."""

    name = "ext2"

    def probe(self, head: bytes) -> bool:
        """Whether `head` has the ext2 magic 0xEF53 at byte 1080."""
        return head[_MAGIC_OFFSET : _MAGIC_OFFSET + 2] == EXT2_SUPER_MAGIC.to_bytes(2, "little")

    def identify(self, head: bytes) -> str:
        """``ext2``, ``ext3`` or ``ext4``, as blkid tells them apart: a feature beyond
        ext3's makes an ext4, a journal an ext3."""
        return ext_generation(head[SUPERBLOCK_OFFSET:])

    async def open(self, sources: Sequence[ImageFile], options: MountOptions) -> Ext2FileSystem:
        """Open the one image in `sources` read-only; `Refusal` when it cannot be read."""
        if len(sources) != 1:
            raise Refusal(f"ext2 takes exactly one image, not {len(sources)}")
        return await Ext2FileSystem.load(sources[0], options)

    async def describe(self, sources: Sequence[ImageFile]) -> str:
        """The superblock summarised like ``dumpe2fs -h``."""
        if len(sources) != 1:
            raise Refusal(f"ext2 takes exactly one image, not {len(sources)}")
        return describe(await read_superblock(sources[0]))


DRIVER = Ext2Driver()

__all__ = ["DRIVER", "Ext2Driver", "Ext2FileSystem"]
