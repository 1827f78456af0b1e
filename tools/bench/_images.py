"""The benchmark's data: one tree, the ext2 images and tar built from it, cached on disk.

Everything lives in ``WORKDIR/<size name>/`` and is built once: ``recipe.json`` records what
it was built from (the `Sizes` recipe and `RECIPE_VERSION`), and a different recipe wipes
the directory and builds again. The file contents are half random, half zeros in every
4 KiB, so that each ZFS compression has something to do and none makes the data vanish.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

from ._host import run
from ._sizes import MiB, Sizes

RECIPE_VERSION = 2  # bump when the way the images are built changes
SEED = 20_251_121
BIG_FILE = "big.bin"  # sequential and random reads, and the broker-cache re-read
FILES_DIR = "files"  # the small-file tree: find, du, tar extract, rm -rf


@dataclass(frozen=True, slots=True)
class Images:
    """The built inputs of one size."""

    tree: Path  # holds BIG_FILE and FILES_DIR; ZFS pools are filled from it
    ext2: Path  # the tree as an ext2 image (read workloads)
    empty_ext2: Path  # an empty ext2 image (write workloads)
    empty_ext4: Path  # the same as ext4, with mke2fs's default ext4 features
    tar: Path  # FILES_DIR as a tar archive


def _half_random(rng: random.Random, size: int) -> bytes:
    """`size` bytes whose every 4 KiB is 2 KiB of random bytes then 2 KiB of zeros."""
    parts = []
    for offset in range(0, size, 4096):
        n = min(4096, size - offset)
        parts += [rng.randbytes(n // 2), bytes(n - n // 2)]
    return b"".join(parts)


def _write_big_file(path: Path, size: int, rng: random.Random) -> None:
    with open(path, "wb") as f:
        for offset in range(0, size, MiB):
            f.write(_half_random(rng, min(MiB, size - offset)))


def _make_tree(tree: Path, sizes: Sizes) -> None:
    rng = random.Random(SEED)
    tree.mkdir(parents=True)
    _write_big_file(tree / BIG_FILE, sizes.file_bytes, rng)
    per_dir = -(-sizes.files // sizes.dirs)
    for i in range(sizes.files):
        directory = tree / FILES_DIR / f"d{i // per_dir:04d}"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"f{i:06d}").write_bytes(_half_random(rng, rng.randrange(8192)))


def _mke2fs(image: Path, size: int, inodes: int, tree: Path | None, fstype: str = "ext2") -> None:
    populate = ["-d", tree] if tree else []
    run(["mke2fs", "-q", "-F", "-t", fstype, "-b", "4096", "-N", inodes, *populate, image,
         f"{size // 1024}k"])  # fmt: skip


def prepare(workdir: Path, sizes: Sizes) -> Images:
    """The images of `sizes` under `workdir`, built now unless a matching build is there."""
    base = workdir / sizes.name
    images = Images(base / "tree", base / "ext2.img", base / "empty-ext2.img",
                    base / "empty-ext4.img", base / "files.tar")  # fmt: skip
    recipe = {"version": RECIPE_VERSION, **sizes.recipe()}
    marker = base / "recipe.json"
    if marker.exists() and json.loads(marker.read_text()) == recipe:
        return images
    if base.exists():
        shutil.rmtree(base)
    print(f"bench: building the {sizes.name} images in {base} (once)", flush=True)
    _make_tree(images.tree, sizes)
    _mke2fs(images.ext2, sizes.image_bytes, sizes.files + sizes.dirs + 64, images.tree)
    # Room for the tree, its copy (cp -a) and the small fsynced files.
    write_inodes = 2 * (sizes.files + sizes.dirs) + sizes.fsync_files + 64
    write_bytes = sizes.write_image_bytes or sizes.image_bytes
    _mke2fs(images.empty_ext2, write_bytes, write_inodes, None)
    _mke2fs(images.empty_ext4, write_bytes, write_inodes, None, "ext4")
    run(["tar", "-cf", images.tar, "-C", images.tree, FILES_DIR])
    marker.write_text(json.dumps(recipe))
    return images


def prepare_memory_image(workdir: Path, sizes: Sizes) -> Path:
    """An ext2 image holding only BIG_FILE of `sizes.memory_file_bytes`, built once.

    Apart from the other images (and their recipe), so that neither the read suites nor
    the ZFS pools, which copy the tree, carry a file of that size.
    """
    size = sizes.memory_file_bytes or 0
    base = workdir / sizes.name / "memory"
    image, marker = base / "ext2.img", base / "recipe.json"
    recipe = {"version": RECIPE_VERSION, "file_bytes": size}
    if marker.exists() and json.loads(marker.read_text()) == recipe:
        return image
    shutil.rmtree(base, ignore_errors=True)
    print(f"bench: building the {size // MiB} MiB file's image in {base} (once)", flush=True)
    tree = base / "tree"
    tree.mkdir(parents=True)
    _write_big_file(tree / BIG_FILE, size, random.Random(SEED))
    image_bytes = size + size // 16 + 64 * MiB  # the file, its block maps, the metadata
    _mke2fs(image, image_bytes, 64, tree)
    shutil.rmtree(tree)
    marker.write_text(json.dumps(recipe))
    return image
