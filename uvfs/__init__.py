"""uvfs: a userland VFS framework. A trio broker in front of pluggable filesystem servers.

The public surface is re-exported here, name by name; `tests/test_exports.py` pins it.
The names that need trio or pyfuse3 load on first use, so that importing `uvfs` (every
``uvfs umount`` does) stays cheap.
"""

from typing import TYPE_CHECKING

from uvfs._api import (
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    Attr,
    Caller,
    Close,
    Create,
    DirEntry,
    DriverType,
    Extent,
    FileSystem,
    Forget,
    FSError,
    Fsync,
    GetXattr,
    Layout,
    Link,
    ListXattr,
    MkDir,
    MkNod,
    MountOptions,
    Open,
    Read,
    ReadDir,
    ReadLayout,
    ReadLink,
    Refusal,
    Release,
    RemoveXattr,
    Rename,
    RmDir,
    SetAttr,
    SetAttrs,
    SetXattr,
    StatFS,
    StatFs,
    SymLink,
    Sync,
    Unlink,
    Write,
)
from uvfs._broker import Timeouts
from uvfs._lru import LRU
from uvfs._memory import ChargedLRU, MemoryBudget
from uvfs._window import BlockDevice

__all__ = [
    "LRU",
    "RENAME_EXCHANGE",
    "RENAME_NOREPLACE",
    "Attr",
    "BlockDevice",
    "Caller",
    "ChargedLRU",
    "Close",
    "Create",
    "DirEntry",
    "DriverType",
    "Extent",
    "FSError",
    "FileSystem",
    "Forget",
    "Fsync",
    "GetXattr",
    "ImageFile",
    "ImageInUse",
    "Layout",
    "Link",
    "ListXattr",
    "MemoryBudget",
    "MkDir",
    "MkNod",
    "MountFailed",
    "MountOptions",
    "Open",
    "Read",
    "ReadDir",
    "ReadLayout",
    "ReadLink",
    "Refusal",
    "Release",
    "RemoveXattr",
    "Rename",
    "RmDir",
    "SetAttr",
    "SetAttrs",
    "SetXattr",
    "StatFS",
    "StatFs",
    "SymLink",
    "Sync",
    "Timeouts",
    "Unlink",
    "Write",
    "serve",
]

_LOADED_ON_USE = {
    "ImageFile": "uvfs._image",
    "ImageInUse": "uvfs._image",
    "MountFailed": "uvfs._mount",
    "serve": "uvfs._mount",
}

if TYPE_CHECKING:
    from uvfs._image import ImageFile, ImageInUse
    from uvfs._mount import MountFailed, serve


def __getattr__(name: str) -> object:
    home = _LOADED_ON_USE.get(name)
    if home is None:
        raise AttributeError(f"module 'uvfs' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
