"""Shared trees, images and helpers of the ext2 tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from uvfs import Attr, ImageFile, MountOptions
from uvfs_fs.ext2 import DRIVER, Ext2FileSystem

from .images import debugfs, make_image, make_tree


@pytest.fixture(scope="session")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ext2") / "tree"
    make_tree(root)
    return root


@pytest.fixture(scope="session")
def small_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ext2") / "small_tree"
    make_tree(root, huge=False)
    return root


async def open_image(path: Path) -> tuple[ImageFile, Ext2FileSystem]:
    image = ImageFile(str(path))
    try:
        return image, await DRIVER.open([image], MountOptions())
    except BaseException:
        image.close()
        raise


async def resolve(fs: Ext2FileSystem, rel: str) -> Attr:
    attr = await fs.getattr(fs.root)
    for part in rel.split("/"):
        attr = await fs.lookup(attr.ino, os.fsencode(part))
    return attr


@pytest.fixture(scope="session")
def ext4_image(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    image = tmp_path_factory.mktemp("ext2") / "ext4.img"
    make_image(tree, image, fstype="ext4", block_size=4096, revision=1, filetype=True, size_mb=64)
    return image


@pytest.fixture(scope="session")
def ext4_nocsum_image(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    image = tmp_path_factory.mktemp("ext2") / "ext4-nocsum.img"
    make_image(
        tree,
        image,
        fstype="ext4",
        block_size=4096,
        revision=1,
        filetype=True,
        size_mb=64,
        extra=("-O", "^metadata_csum"),
    )
    return image


@pytest.fixture(scope="session")
def ext2_image(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    image = tmp_path_factory.mktemp("ext2") / "ext2.img"
    make_image(tree, image, fstype="ext2", block_size=1024, revision=1, filetype=True, size_mb=64)
    return image


def debugfs_stat(image: Path, rel: str) -> str:
    return debugfs(image, f"stat /{rel}")


def debugfs_field(text: str, field: str) -> int:
    """The number after `field` in debugfs stat output ("Blockcount:" ...)."""
    return int(text.split(field, 1)[1].split()[0], 0)
