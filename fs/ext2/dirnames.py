"""How a directory's names are looked up: as stored, casefolded, or encrypted without the key.

A parsed `Directory` holds the stored names (bytes as on disk) in on-disk order. A lookup
builds a query from the name asked for, according to the directory's kind:

- `ExactQuery`: a name matches itself, byte for byte (every directory but the two below);
- `FoldQuery`: in a casefolded directory (casefold.py), the first record, in order, whose
  name is the same bytes or folds to the same bytes;
- `encrypt.NoKeyQuery`: in an encrypted directory read without the key (encrypt.py), the
  record whose ciphertext the no-key name stands for.

Each query also says what an htree walk hashes (`hashed`), or the hash itself (`target`)
when only that is known, and tests one stored name (`matches`) for the leaves it reads.
"""

from __future__ import annotations

from typing import Protocol

from uvfs_fs.ext2.casefold import Folding, casefold
from uvfs_fs.ext2.encrypt import NoKeyQuery


class Directory:
    """A directory's (stored name, inode) records in on-disk order, indexed by name.

    Args:
        entries: the records of the blocks that could be read.
        bad_blocks: how many blocks failed their checksum (their names are not in
            `entries`): indexed listings fail on them (EBADMSG).
        cut_blocks: how many blocks a malformed record ended early.
    Lookups in a directory with either are made on its blocks, as the kernel makes them
    (filesystem.py), not in `entries`; so are those in an indexed directory whose
    `listing` differs from `entries` (a damaged index: names it does not lead to).
    """

    __slots__ = (
        "_folds", "bad_blocks", "cut_blocks", "entries", "first_hole", "index", "listing",
        "trusted",
    )  # fmt: skip

    def __init__(
        self, entries: list[tuple[bytes, int]], bad_blocks: int = 0, cut_blocks: int = 0
    ) -> None:
        self.entries = entries
        self.bad_blocks = bad_blocks
        self.cut_blocks = cut_blocks
        # An indexed directory's listing through its index (htree.dx_listing), once made.
        self.listing: list[tuple[bytes, int]] | None = None
        self.trusted = True  # lookups may use `entries`: the listing holds the same names
        self.first_hole = False  # block 0 is a hole: htree listings fail (EUCLEAN)
        self.index: dict[bytes, int] = {}
        for name, ino in entries:
            self.index.setdefault(name, ino)
        self._folds: dict[bytes, int] | None = None

    def first_by_fold(self, key: bytes) -> int | None:
        """The position of the first record whose name folds to `key` (built once)."""
        if self._folds is None:
            self._folds = {}
            for at, (name, _) in enumerate(self.entries):
                folded = casefold(name)
                if folded is not None:
                    self._folds.setdefault(folded, at)
        return self._folds.get(key)


class Query(Protocol):
    """One lookup in one directory."""

    hashed: bytes | None  # what the directory's htree hashes, or None: `target` is the hash
    target: int | None

    def matches(self, stored: bytes) -> bool:
        """Whether the record named `stored` is the one looked up."""
        ...

    def find(self, directory: Directory) -> int | None:
        """The inode the name names in the parsed `directory`, or None."""
        ...


class ExactQuery:
    """A name that matches itself only."""

    __slots__ = ("hashed", "target")

    def __init__(self, name: bytes) -> None:
        self.hashed: bytes | None = name
        self.target: int | None = None

    def matches(self, stored: bytes) -> bool:
        return stored == self.hashed

    def find(self, directory: Directory) -> int | None:
        assert self.hashed is not None
        return directory.index.get(self.hashed)


class FoldQuery:
    """A name looked up in a casefolded directory (generic_ci_match), the index hashing
    its fold (ext4fs_dirhash).

    Raises:
        FSError: EINVAL for invalid UTF-8 on a strict volume.
    """

    __slots__ = ("hashed", "key", "name", "target")

    def __init__(self, folding: Folding, name: bytes) -> None:
        self.name = name
        self.key = folding.key(name)
        self.hashed: bytes | None = name if self.key is None else self.key
        self.target: int | None = None

    def matches(self, stored: bytes) -> bool:
        return Folding.matches(self.name, self.key, stored)

    def find(self, directory: Directory) -> int | None:
        exact = directory.index.get(self.name)
        folded = None if self.key is None else directory.first_by_fold(self.key)
        if folded is None:
            return exact
        if exact is not None:  # the first record matching either way, as a scan finds it
            at = next(i for i, (name, _) in enumerate(directory.entries) if name == self.name)
            if at < folded:
                return exact
        return directory.entries[folded][1]


class NoKeyLookup(NoKeyQuery):
    """A no-key name looked up in an encrypted directory (`encrypt.NoKeyQuery`)."""

    __slots__ = ()

    @property
    def hashed(self) -> bytes | None:
        return self.ciphertext

    @property
    def target(self) -> int | None:
        return None if self.ciphertext is not None else self.major

    def find(self, directory: Directory) -> int | None:
        if self.ciphertext is not None:
            return directory.index.get(self.ciphertext)
        return next((ino for name, ino in directory.entries if self.matches(name)), None)
