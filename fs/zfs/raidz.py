"""RAID-Z geometry and parity (module/zfs/vdev_raidz.c): where a block's columns lie, and
how to rebuild lost columns from P, Q and R.

Geometry (vdev_raidz_map_alloc): a block of ``s`` sectors at raidz sector ``b`` starts in
child ``f = b % dcols`` at child sector ``b // dcols``; its columns run across the children
from there (wrapping to the next row). With ``nparity`` parity columns and
``q, r = divmod(s, dcols - nparity)``, the first ``bc = r + nparity`` columns (when r > 0)
hold ``q + 1`` sectors, the rest ``q``; when ``q == 0`` only ``bc`` columns exist. The
first ``nparity`` columns are parity, the rest the data, in order. Single-parity maps
whose offset has bit 20 set swap columns 0 and 1, a format quirk kept forever. Skip
sectors (padding allocation to a multiple of nparity + 1) are never read.

Parity, per byte over data columns D_0..D_{n-1} zero-padded to the parity length, in
GF(2^8) with polynomial x^8+x^4+x^3+x^2+1 (0x11d): P = xor of all D_i,
Q = sum 2^(n-1-i) D_i, R = sum 4^(n-1-i) D_i. Rebuilding k <= nparity lost data columns
solves a k x k linear system whose rows are k surviving parities: the syndromes (parity
minus the known columns' contribution) equal the coefficient matrix times the lost
columns; the matrix is inverted once (k <= 3, plain Python) and the columns come out as
table-driven numpy sums, so the cost is linear in the block.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

VDEV_RAIDZ_MAXPARITY = 3
_GENERATORS = (1, 2, 4)  # P, Q, R


def _gf_tables() -> tuple[list[int], list[int], np.ndarray]:
    exp = [0] * 512
    log = [0] * 256
    x = 1
    for i in range(255):
        exp[i] = x
        log[x] = i
        x <<= 1
        if x & 0x100:
            x ^= 0x11D
    for i in range(255, 512):
        exp[i] = exp[i - 255]
    table = np.zeros((256, 256), dtype=np.uint8)
    for a in range(1, 256):
        for b in range(1, 256):
            table[a, b] = exp[log[a] + log[b]]
    return exp, log, table


_EXP, _LOG, _MUL = _gf_tables()


def gf_mul(a: int, b: int) -> int:
    """a * b in GF(2^8)."""
    return 0 if a == 0 or b == 0 else _EXP[_LOG[a] + _LOG[b]]


def gf_pow(a: int, n: int) -> int:
    """a ** n in GF(2^8)."""
    return 1 if n == 0 else 0 if a == 0 else _EXP[(_LOG[a] * n) % 255]


def gf_inv(a: int) -> int:
    """1 / a in GF(2^8), a != 0."""
    return _EXP[255 - _LOG[a]]


@dataclass(frozen=True, slots=True)
class RaidzCol:
    """One column of a raidz map: `size` bytes at `offset` on child `devidx`."""

    devidx: int
    offset: int  # bytes from the child's allocatable start
    size: int


@dataclass(frozen=True, slots=True)
class RaidzMap:
    """The columns of one block: the first `nparity` are parity, the rest data in order."""

    cols: tuple[RaidzCol, ...]
    nparity: int
    nskip: int  # padding sectors allocated after the block, never read


def raidz_map(offset: int, size: int, ashift: int, dcols: int, nparity: int) -> RaidzMap:
    """vdev_raidz_map_alloc for a read of `size` bytes at raidz `offset` (bytes).

    `size` is rounded up to whole sectors here, as zio rounds reads to the vdev's ashift.
    """
    b = offset >> ashift
    s = -(-size >> ashift)
    f = b % dcols
    o = (b // dcols) << ashift
    q, r = divmod(s, dcols - nparity)
    bc = 0 if r == 0 else r + nparity
    tot = s + nparity * (q + (1 if r else 0))
    acols = bc if q == 0 else dcols
    cols = []
    for c in range(acols):
        col = f + c
        coff = o
        if col >= dcols:
            col -= dcols
            coff += 1 << ashift
        cols.append(RaidzCol(col, coff, (q + 1 if c < bc else q) << ashift))
    if nparity == 1 and offset & (1 << 20) and len(cols) >= 2:
        cols[0], cols[1] = (
            RaidzCol(cols[1].devidx, cols[1].offset, cols[0].size),
            RaidzCol(cols[0].devidx, cols[0].offset, cols[1].size),
        )
    nskip = -(-tot // (nparity + 1)) * (nparity + 1) - tot
    return RaidzMap(tuple(cols), nparity, nskip)


def _padded(col: bytes, length: int) -> np.ndarray:
    out = np.zeros(length, dtype=np.uint8)
    out[: len(col)] = np.frombuffer(col, dtype=np.uint8)
    return out


def generate_parity(data: list[bytes], nparity: int, length: int) -> list[bytes]:
    """The parity columns (P, Q, R up to `nparity`) of data columns, each `length` bytes."""
    out = []
    for g in _GENERATORS[:nparity]:
        acc = np.zeros(length, dtype=np.uint8)
        for col in data:
            acc = _MUL[g][acc] ^ _padded(col, length)
        out.append(acc.tobytes())
    return out


def _invert(matrix: list[list[int]]) -> list[list[int]]:
    n = len(matrix)
    a = [row[:] + [int(i == j) for j in range(n)] for i, row in enumerate(matrix)]
    for c in range(n):
        pivot = next((r for r in range(c, n) if a[r][c]), None)
        if pivot is None:
            raise ValueError("singular raidz reconstruction matrix")
        a[c], a[pivot] = a[pivot], a[c]
        inv = gf_inv(a[c][c])
        a[c] = [gf_mul(inv, v) for v in a[c]]
        for r in range(n):
            if r != c and a[r][c]:
                k = a[r][c]
                a[r] = [v ^ gf_mul(k, w) for v, w in zip(a[r], a[c], strict=True)]
    return [row[n:] for row in a]


def reconstruct(
    data: list[bytes | None], parity: list[bytes | None], sizes: list[int]
) -> list[bytes]:
    """Rebuild the data columns that are None from the parity columns that are not.

    Args:
        data: each data column's bytes, or None when lost.
        parity: P, Q, R (as many as the vdev has), or None when lost or unused.
        sizes: each data column's size in bytes.

    Returns:
        All data columns, lost ones rebuilt.

    Raises:
        ValueError: more lost data columns than surviving parity columns.
    """
    lost = [i for i, col in enumerate(data) if col is None]
    if not lost:
        return list(data)  # type: ignore[arg-type]
    rows = [j for j, col in enumerate(parity) if col is not None][: len(lost)]
    if len(rows) < len(lost):
        raise ValueError("more lost raidz columns than parity")
    length = len(parity[rows[0]])  # type: ignore[arg-type]
    n = len(data)
    syndromes = []
    for j in rows:
        g = _GENERATORS[j]
        acc = np.zeros(length, dtype=np.uint8)
        for col in data:
            acc = _MUL[g][acc]
            if col is not None:
                acc ^= _padded(col, length)
        syndromes.append(acc ^ np.frombuffer(parity[j], dtype=np.uint8))  # type: ignore[arg-type]
    matrix = [[gf_pow(_GENERATORS[j], n - 1 - i) for i in lost] for j in rows]
    inverse = _invert(matrix)
    out = list(data)
    for m, i in enumerate(lost):
        col = np.zeros(length, dtype=np.uint8)
        for k, syn in enumerate(syndromes):
            col ^= _MUL[inverse[m][k]][syn]
        out[i] = col[: sizes[i]].tobytes()
    return out  # type: ignore[return-value]
