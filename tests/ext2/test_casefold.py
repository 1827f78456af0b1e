"""Casefolded directories: lookups of any case variant, as the kernel folds names.

The kernel on this machine is built without CONFIG_UNICODE (it refuses casefold volumes),
so the oracle is e2fsprogs, which carries the kernel's own utf8-12.1 tables: debugfs's
`dx_hash -c -e utf8` hashes a name's fold, and an htree that `e2fsck -D` indexed by those
hashes must be found by uvfs's folded lookups (and pass `e2fsck -fn`). Images are made
with `mke2fs -O casefold` and debugfs (a directory flagged EXT4_CASEFOLD_FL while empty,
then filled).
"""

from __future__ import annotations

import errno
import os
import subprocess
import unicodedata
import uuid
from pathlib import Path

import pytest

from tests.conftest import need
from tests.ext2.conftest import open_image
from uvfs import FSError, Refusal
from uvfs_fs.ext2.casefold import TABLES_UNICODE, Folding, casefold
from uvfs_fs.ext2.htree import dx_hash_pair

EXT4_CASEFOLD_FL, EXT4_EXTENTS_FL = 0x40000000, 0x00080000

# Names that fold in every way the tables can: full foldings (ß, ligatures, ΐ), final
# sigma, decompositions and mark reordering, Hangul, ignorables, characters Unicode added
# after 12.1 (left alone by the kernel), compatibility forms (not folded: NFD, not NFKD).
NAMES = [
    "Straße", "STRASSE", "ΣΊΣΥΦΟΣ", "σίσυφος", "ﬃle", "FFILE", "Ångström", "ÅNGSTRÖM",
    "ΐ", "ᾈ", "İstanbul", "ǅungla", "한국어", "ZERO\u200bWIDTH", "zero\u200dwidth",
    "a\u0301\u0316", "a\u0316\u0301", "Ꟈ-newer", "ꟈ-newer", "Ⅻ", "①", "\uff21\uff22\uff23",
    "e\u0345\u0301",
]  # fmt: skip


def test_unicodedata_is_the_version_the_tables_were_made_for() -> None:
    """Characters a later Unicode adds must be listed in casefold._NEWER first."""
    assert unicodedata.unidata_version == TABLES_UNICODE


def test_folds_as_the_kernel_tables() -> None:
    assert casefold("Straße".encode()) == b"strasse"
    assert casefold("ΣΊΣΥΦΟΣ".encode()) == casefold("σίσυφος".encode())
    assert casefold("ΣΊΣΥΦΟΣ".encode()) == unicodedata.normalize("NFD", "σίσυφοσ").encode()
    assert casefold("ﬃ".encode()) == b"ffi"
    assert casefold("한".encode()) == unicodedata.normalize("NFD", "한").encode()
    assert casefold("a\u200db".encode()) == b"ab"  # Default_Ignorable_Code_Point: dropped
    assert casefold("a\u0316\u0301".encode()) == casefold("a\u0301\u0316".encode())
    assert casefold("Ꟈ".encode()) == "Ꟈ".encode()  # Unicode 13: newer than the tables
    assert casefold("Ⅻ".encode()) == "ⅻ".encode()
    fullwidth = "\uff21\uff22\uff23".encode()
    assert casefold(fullwidth) == "\uff41\uff42\uff43".encode()  # no compatibility folding


def test_ignorables_bound_mark_reordering() -> None:
    """U+0316 (class 220) does not move before U+0301 (230) across an ignorable."""
    assert casefold("a\u0301\u200b\u0316".encode()) == "a\u0301\u0316".encode()
    assert casefold("a\u0301\u0316".encode()) == "a\u0316\u0301".encode()


def test_invalid_utf8() -> None:
    assert casefold(b"\xff") is None
    assert casefold(b"\x80abc") is None  # a continuation byte first
    assert casefold(b"A\xe7\x96") is None  # a cut sequence
    # A stray continuation byte after a character is kept by the kernel's cursor, and
    # copied again on each pass over the combining marks around it.
    assert casefold(b"Q\x98") == b"q\x98"
    assert casefold("é".encode() + b"\xbf") == b"e\xbf\xcc\x81\xbf"


def test_strict_mode_refuses_invalid_lookups() -> None:
    strict, relaxed = Folding(1, 1), Folding(1, 0)
    with pytest.raises(FSError) as e:
        strict.key(b"bad\xff")
    assert e.value.errno == errno.EINVAL
    assert relaxed.key(b"bad\xff") is None
    assert Folding.matches(b"bad\xff", None, b"bad\xff")
    assert not Folding.matches(b"BAD\xff", None, b"bad\xff")
    with pytest.raises(Refusal):
        Folding(2, 0)


@pytest.fixture(scope="module")
def casefold_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need("mke2fs", "debugfs")
    image = tmp_path_factory.mktemp("casefold") / "cf.img"
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-O", "casefold", str(image), "8M"],
                   check=True, capture_output=True)  # fmt: skip
    return image


ALGORITHMS = ["legacy", "half_md4", "tea"]  # debugfs names no unsigned flavour


def test_folded_hashes_equal_debugfs(casefold_image: Path, tmp_path: Path) -> None:
    """dx_hash of the fold, for the three hashes, equals debugfs's ``dx_hash -c -e utf8``."""
    seed = uuid.UUID("85e0fa91-516d-469e-af6e-4c40d21151c6")
    words = [int.from_bytes(seed.bytes[i : i + 4], "little") for i in range(0, 16, 4)]
    script = tmp_path / "cmds"
    script.write_text(
        "".join(
            f"dx_hash -c -e utf8 -h {alg} -s {seed} {name}\n"
            for alg in ALGORITHMS
            for name in NAMES
        )
    )
    done = subprocess.run(
        ["debugfs", "-f", str(script), str(casefold_image)], capture_output=True, check=True
    )
    answers = [line for line in done.stdout.decode().splitlines() if line.startswith("Hash of")]
    assert len(answers) == len(ALGORITHMS) * len(NAMES)
    at = 0
    for version, _ in enumerate(ALGORITHMS):
        for name in NAMES:
            major, minor = dx_hash_pair(Folding.hash_name(name.encode()), version, words)
            assert answers[at] == f"Hash of {name} is {major:#x} (minor {minor:#x})", name
            at += 1


def _variants(name: str) -> set[str]:
    return {
        name.upper(),
        name.lower(),
        name.swapcase(),
        unicodedata.normalize("NFD", name),
        unicodedata.normalize("NFC", name.upper()),
        name[:1] + "\u200b" + name[1:],  # an ignorable inside
    }


def _make(image: Path, *, strict: bool, tmp_path: Path) -> None:
    options = ["-E", "encoding=utf8,encoding_flags=strict"] if strict else []
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-O", "casefold", *options, "-b", "1024",
                    str(image), "16M"], check=True, capture_output=True)  # fmt: skip
    source = tmp_path / "content"
    source.write_bytes(b"content\n")
    flags = f"{EXT4_CASEFOLD_FL | EXT4_EXTENTS_FL:#x}"
    lines = [f"mkdir cf\nsif cf flags {flags}\nmkdir big\nsif big flags {flags}\nmkdir plain\n"]
    lines += [f"write {source} cf/{name}\n" for name in NAMES[::2]]
    lines += [f"write {source} big/File-{i:04d}-ÄÖÜ-ß\n" for i in range(700)]
    lines += [f"write {source} plain/Readme\n"]
    script = tmp_path / "cmds"
    script.write_bytes(
        "".join(lines).encode() + (b"" if strict else b"write %s cf/Bad\xffName\n" % bytes(source))
    )
    subprocess.run(
        ["debugfs", "-w", "-f", str(script), str(image)], check=True, capture_output=True
    )
    subprocess.run(["e2fsck", "-fyD", str(image)], capture_output=True)  # index big by folds
    checked = subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout
    index = subprocess.run(
        ["debugfs", "-R", "htree big", str(image)], capture_output=True, text=True
    )
    assert "Root node dump" in index.stdout


@pytest.mark.parametrize("strict", [False, True], ids=["relaxed", "strict"])
def test_case_variants_find_the_same_node(tmp_path: Path, mount, strict: bool) -> None:
    need("mke2fs", "debugfs", "e2fsck")
    image = tmp_path / "cf.img"
    _make(image, strict=strict, tmp_path=tmp_path)
    root = mount(image)
    stored = NAMES[::2]
    # Lookups first: the indexed directory is searched through its hash index.
    for i in range(0, 700, 7):
        name = f"File-{i:04d}-ÄÖÜ-ß"
        inode = os.lstat(root / "big" / name).st_ino
        for variant in _variants(name) | {f"file-{i:04d}-äöü-SS"}:
            assert os.lstat(root / "big" / variant).st_ino == inode, variant
    assert not (root / "big" / "File-0001-AOU-ss").exists()
    # Every spelling finds the stored name it folds like (names of the same fold were
    # not stored twice), or nothing.
    inodes = {casefold(n.encode()): os.lstat(root / "cf" / n).st_ino for n in stored}
    assert len(inodes) == len(stored)
    for name in {v for n in NAMES for v in _variants(n)} | set(NAMES):
        inode = inodes.get(casefold(name.encode()))
        if inode is None:
            assert not os.path.lexists(root / "cf" / name), name
        else:
            assert os.lstat(root / "cf" / name).st_ino == inode, name
    # Listings show the names as stored; a directory without the flag is case-sensitive.
    expected = {os.fsencode(n) for n in stored} | (set() if strict else {b"Bad\xffName"})
    assert set(os.listdir(os.fsencode(root / "cf"))) == expected
    assert len(os.listdir(root / "big")) == 700
    assert (root / "plain" / "Readme").exists() and not (root / "plain" / "README").exists()
    bad = os.fsencode(root / "cf") + b"/bad\xffname"
    if strict:
        with pytest.raises(OSError) as e:
            os.lstat(bad)
        assert e.value.errno == errno.EINVAL
    else:  # invalid UTF-8 matches itself only
        assert os.lstat(os.fsencode(root / "cf") + b"/Bad\xffName").st_size == 8
        assert not os.path.lexists(bad)


async def test_indexed_lookups_go_through_the_folded_index(tmp_path: Path) -> None:
    """Each variant is found by hashing its fold into the index e2fsck built: the
    directory is never read whole (a damaged index would fall back to a full scan)."""
    need("mke2fs", "debugfs", "e2fsck")
    image = tmp_path / "cf.img"
    _make(image, strict=False, tmp_path=tmp_path)
    handle, fs = await open_image(image)
    try:
        big = await fs.lookup(fs.root, b"big")
        for i in range(0, 700, 3):
            name = f"File-{i:04d}-ÄÖÜ-ß"
            inode = (await fs.lookup(big.ino, name.encode())).ino
            for variant in _variants(name):
                assert (await fs.lookup(big.ino, variant.encode())).ino == inode
        assert fs._dirs.get(big.ino) is None
    finally:
        handle.close()
