"""Cases: seeded damage to a seed's metadata regions, as byte patches.

A case is plain data (JSON): the seed's name, the patches (file index, offset, bytes) and
whether bp checksums are to be ignored. `make_case(seed_number, index)` is a pure function
of its arguments and the seed images, so with the same seed store (kept between runs) a
run of N cases with seed S is the same every time, and one case can be regenerated from
its number alone. (Seeds built afresh differ: mke2fs and zfs-fuse draw UUIDs and GUIDs.)

Damage comes in bursts on one region (a structure whose fields are hit together breaks
the parser's assumptions more often than scattered bytes): 1 to 8 operations, each one of
an interesting value written over 1, 2, 4 or 8 bytes (0, 1, all ones, the sign bit, a
power of two, a random word; either byte order, usually aligned), a flipped bit, a run of
zeros, ones or random bytes, or a piece of the region copied over another (duplicated
records, repeated keys). In a region that is an array of records (an inode table, a
dnode block, an indirect block's block pointers) half the operations aim at a known field
of one record instead: sizes, counts, flags, block numbers, extent and DVA words. A
region with an embedded checksum is usually resealed.

A ZFS block is damaged either as stored (its compressed bytes: the decompressor sees the
damage first, and the case runs with checksums unverified) or, more often, in its logical
contents: the case then carries `logical` patches, keyed by the sha256 of the block as
stored, which the worker applies to the block's decompressed bytes as zio reads it, as
if a crafter had written that block with a matching checksum.
"""

from __future__ import annotations

import hashlib
import random
import struct
from dataclasses import dataclass

from uvfs_fs.ext2.csum import S_CHECKSUM, crc32c_le
from uvfs_fs.zfs.checksum import ZIO_CHECKSUM_LABEL, compute, eck_byteorder
from uvfs_fs.zfs.compress import decompress

from ._corpus import Seed
from ._targets import Region

Patch = tuple[int, int, bytes]  # file index, offset, bytes
SEAL_PROBABILITY = 0.85
LOGICAL_PROBABILITY = 0.7  # of a ZFS block's damage going to its logical contents

Field = tuple[int, int]  # byte offset in the record, width
# ext2_inode: mode, size, links, blocks, flags, i_block words (extent header: magic,
# entries, max, depth; first entry: block, len, start_hi, start_lo), file_acl,
# size_high, blocks_hi, file_acl_high, extra_isize.
INODE_FIELDS: tuple[Field, ...] = (
    (0x00, 2), (0x04, 4), (0x1A, 2), (0x1C, 4), (0x20, 4), (0x28, 2), (0x2A, 2), (0x2C, 2),
    (0x2E, 2), (0x34, 4), (0x38, 2), (0x3A, 2), (0x3C, 4), (0x40, 4), (0x44, 4), (0x48, 4),
    (0x5C, 4), (0x60, 4), (0x64, 4), (0x68, 4), (0x6C, 4), (0x74, 2), (0x76, 2), (0x80, 2),
)  # fmt: skip
# blkptr_t: DVA 0 (asize/vdev word, offset word), prop, phys_birth, birth, fill, cksum[0]
BP_FIELDS: tuple[Field, ...] = ((0, 8), (8, 8), (48, 8), (72, 8), (80, 8), (88, 8), (96, 8))
# dnode_phys_t: type, indblkshift, nlevels, nblkptr, bonustype, checksum, compress, flags,
# datablkszsec, bonuslen, extra_slots, maxblkid, used; then its first block pointer.
DNODE_FIELDS: tuple[Field, ...] = (
    (0, 1), (1, 1), (2, 1), (3, 1), (4, 1), (5, 1), (6, 1), (7, 1), (8, 2), (10, 2), (12, 1),
    (16, 8), (24, 8), *((64 + o, w) for o, w in BP_FIELDS),
)  # fmt: skip
FIELDS: dict[int, tuple[Field, ...]] = {128: BP_FIELDS, 512: DNODE_FIELDS}


@dataclass(frozen=True, slots=True)
class Case:
    """One mutated image: which seed, what changed, how to read it."""

    number: int
    seed: str
    kinds: tuple[str, ...]
    patches: tuple[Patch, ...]
    unverified: bool = False
    # (sha256 of a block as stored, offset in its logical bytes, new bytes)
    logical: tuple[tuple[str, int, bytes], ...] = ()

    def to_json(self) -> dict:
        return {
            "number": self.number, "seed": self.seed, "kinds": list(self.kinds),
            "patches": [[f, o, b.hex()] for f, o, b in self.patches],
            "unverified": self.unverified,
            "logical": [[h, o, b.hex()] for h, o, b in self.logical],
        }  # fmt: skip

    @classmethod
    def from_json(cls, d: dict) -> Case:
        patches = tuple((f, o, bytes.fromhex(b)) for f, o, b in d["patches"])
        logical = tuple((h, o, bytes.fromhex(b)) for h, o, b in d.get("logical", ()))
        return cls(d["number"], d["seed"], tuple(d["kinds"]), patches, d["unverified"], logical)


def _interesting(rng: random.Random, width: int, region_size: int) -> int:
    top = 1 << (8 * width)
    return rng.choice(
        [
            0, 1, top - 1, top >> 1, (top >> 1) - 1, rng.randrange(top), rng.randrange(17),
            1 << rng.randrange(8 * width), region_size % top, (region_size - 1) % top,
            (top - 1) ^ rng.randrange(16),
        ]
    )  # fmt: skip


def _hit_field(buf: bytearray, rng: random.Random, record: int, fields: tuple[Field, ...]) -> None:
    slot = rng.randrange(len(buf) // record) * record
    offset, width = rng.choice([f for f in fields if f[0] + f[1] <= record])
    value = _interesting(rng, width, record)
    buf[slot + offset : slot + offset + width] = value.to_bytes(width, "little")


def mutate(buf: bytearray, rng: random.Random, record: int = 0) -> None:
    """1 to 8 random operations on `buf` in place; `record`: see `Region`."""
    n = len(buf)
    fields = FIELDS.get(record, INODE_FIELDS) if record and n >= record else ()
    for _ in range(min(1 + int(rng.expovariate(0.5)), 8)):
        if fields and rng.random() < 0.5:
            _hit_field(buf, rng, record, fields)
            continue
        op = rng.randrange(6)
        if op <= 1:
            width = rng.choice((1, 2, 4, 8))
            if n < width:
                continue
            at = rng.randrange(n - width + 1)
            if rng.random() < 0.7:
                at -= at % width
            order = "<" if rng.random() < 0.8 else ">"
            value = _interesting(rng, width, n)
            buf[at : at + width] = value.to_bytes(width, "little" if order == "<" else "big")
        elif op == 2:
            at = rng.randrange(n)
            buf[at] ^= 1 << rng.randrange(8)
        elif op == 3:
            length = min(rng.randint(1, 64), n)
            at = rng.randrange(n - length + 1)
            fill = rng.choice((b"\0", b"\xff"))
            buf[at : at + length] = fill * length
        elif op == 4:
            length = min(rng.randint(1, 32), n)
            at = rng.randrange(n - length + 1)
            buf[at : at + length] = rng.randbytes(length)
        else:
            length = min(rng.randint(4, 256), n)
            src = rng.randrange(n - length + 1)
            dst = rng.randrange(n - length + 1)
            buf[dst : dst + length] = buf[src : src + length]


def seal_eck(buf: bytearray, offset: int) -> None:
    """Recompute the embedded label checksum (zio_eck_t) of `buf`, which lies at device
    `offset`; left alone when the damage hit its magic."""
    order = eck_byteorder(bytes(buf))
    if order is None:
        return
    fmt = order + "4Q"
    seeded = bytes(buf[:-32]) + struct.pack(fmt, offset, 0, 0, 0)
    words = compute(ZIO_CHECKSUM_LABEL, seeded, order)
    assert words is not None
    buf[-32:] = struct.pack(fmt, *words)


def seal_ext4_superblock(buf: bytearray, offset: int) -> None:
    """Recompute a metadata_csum superblock's s_checksum (crc32c of what precedes it)."""
    buf[S_CHECKSUM:] = crc32c_le(0xFFFFFFFF, bytes(buf[:S_CHECKSUM])).to_bytes(4, "little")


SEALS = {"eck": seal_eck, "ext4_sb": seal_ext4_superblock}


def _diff(file: int, start: int, old: bytes, new: bytes) -> list[Patch]:
    """The changed runs of `new` against `old`, as patches (gaps under 16 bytes merged)."""
    patches: list[Patch] = []
    i, n = 0, len(old)
    while i < n:
        if old[i] == new[i]:
            i += 1
            continue
        j = i + 1
        while j < n and (old[j] != new[j] or old[j : j + 16] != new[j : j + 16]):
            j += 1
        patches.append((file, start + i, bytes(new[i:j])))
        i = j
    return patches


class Mutator:
    """Makes the cases of one driver from its seeds and their regions."""

    def __init__(self, seeds: list[Seed], regions: dict[str, list[Region]]) -> None:
        self.seeds = [s for s in seeds if regions.get(s.name)]
        self.regions = regions
        self._bytes: dict[tuple[str, Region], bytes] = {}

    def _pristine(self, seed: Seed, region: Region) -> bytes:
        key = (seed.name, region)
        data = self._bytes.get(key)
        if data is None:
            with open(seed.files[region.file], "rb") as f:
                f.seek(region.start)
                data = f.read(region.end - region.start)
            if len(self._bytes) > 4096:
                self._bytes.clear()
            self._bytes[key] = data
        return data

    def make_case(self, run_seed: int, number: int) -> Case:
        """Case `number` of the run seeded `run_seed`: one or two damaged regions."""
        rng = random.Random(f"{run_seed}:{number}")
        seed = rng.choice(self.seeds)
        by_kind: dict[str, list[Region]] = {}
        for r in self.regions[seed.name]:
            by_kind.setdefault(r.kind, []).append(r)
        patches: list[Patch] = []
        logical: list[tuple[str, int, bytes]] = []
        kinds: list[str] = []
        unverified = False
        for _ in range(1 if rng.random() < 0.75 else 2):
            region = rng.choice(by_kind[rng.choice(sorted(by_kind))])
            old = self._pristine(seed, region)
            if region.compress >= 0 and rng.random() < LOGICAL_PROBABILITY:
                key = hashlib.sha256(old).hexdigest()
                plain = decompress(region.compress, old, region.lsize)
                buf = bytearray(plain)
                mutate(buf, rng, region.record)
                logical += [(key, o, b) for _, o, b in _diff(0, 0, plain, bytes(buf))]
                kinds.append(region.kind + "/logical")
                continue
            buf = bytearray(old)
            mutate(buf, rng, region.record)
            if region.seal and rng.random() < SEAL_PROBABILITY:
                SEALS[region.seal](buf, region.start)
            patches += _diff(region.file, region.start, old, bytes(buf))
            kinds.append(region.kind)
            unverified |= region.unverified
        return Case(number, seed.name, tuple(kinds), tuple(patches), unverified, tuple(logical))
