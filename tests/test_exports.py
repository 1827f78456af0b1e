"""The public surface of `uvfs` is exactly this list: changing it is a decision, not an accident."""

import uvfs

PUBLIC = [
    "serve",
    "Timeouts",
    "MountFailed",
    "BlockDevice",
    "RENAME_EXCHANGE",
    "RENAME_NOREPLACE",
    "Attr",
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
    "LRU",
    "Layout",
    "Link",
    "ListXattr",
    "MemoryBudget",
    "MkDir",
    "MkNod",
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
    "Unlink",
    "Write",
]


def test_public_names_are_pinned() -> None:
    assert sorted(uvfs.__all__) == sorted(PUBLIC)
    for name in PUBLIC:
        assert hasattr(uvfs, name)
