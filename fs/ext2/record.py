"""Fast decoding of fixed on-disk records: a struct.Struct and a namedtuple derived from construct.

Each on-disk record is declared once, as a construct `Struct` (which also builds it back).
Parsing through construct costs tens of microseconds per record, too much for records read
on every request (inodes, extent nodes, directory and attribute entries), so `FastRecord`
derives from the same declaration a `struct.Struct` format and a namedtuple with the same
field names: one C-level unpack per record, fields read as tuple attributes.
"""

from __future__ import annotations

import struct
from collections import namedtuple
from typing import Any

from construct import Bytes, FormatField


class FastRecord:
    """A construct record of integer and fixed-length bytes fields, decoded with `struct`.

    Args:
        record: a (compiled) construct `Struct` of FormatField and Bytes fields only.
        name: the namedtuple's name, usually the record's upstream name.
    """

    def __init__(self, record: Any, name: str) -> None:
        fmt, names = "<", []
        for field in getattr(record, "defersubcon", record).subcons:
            sub = field.subcon
            if isinstance(sub, FormatField) and sub.fmtstr[0] == "<":
                fmt += sub.fmtstr[1:]
            elif isinstance(sub, Bytes) and isinstance(sub.length, int):
                fmt += f"{sub.length}s"
            else:
                raise TypeError(f"{name}.{field.name}: not a fixed-size scalar field")
            names.append(field.name)
        self.struct = struct.Struct(fmt)
        self.size = self.struct.size
        self.tuple = namedtuple(name, names)

    def unpack(self, buffer: bytes, offset: int = 0) -> Any:
        """The record at `offset` in `buffer`, as a namedtuple of its fields."""
        return self.tuple._make(self.struct.unpack_from(buffer, offset))

    def iter_unpack(self, buffer: bytes, offset: int, count: int) -> list[Any]:
        """`count` consecutive records from `offset`, as namedtuples."""
        end = offset + count * self.size
        return [self.tuple._make(t) for t in self.struct.iter_unpack(buffer[offset:end])]
