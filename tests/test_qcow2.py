"""qcow2 images made by qemu-img and qemu-io read byte for byte as ``qemu-img convert -O raw``
reads them: versions 2 and 3, zlib and zstd compression, backing chains with relative names,
zero clusters, small backing files. Encrypted images, unknown incompatible features, and
tables pointing past the end are refused with one line or fail the read with EIO."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import need
from tests.disks import MiB
from uvfs import FSError, ImageFile, Refusal, _qcow2
from uvfs._qcow2_image import Qcow2Image, open_image
from uvfs._source import open_container

CHUNK = 1 << 20


def _qemu_img(*args: str | os.PathLike) -> None:
    need("qemu-img")
    subprocess.run(["qemu-img", *map(str, args)], check=True, capture_output=True)


def _qemu_io(image: Path, *commands: str, fmt: str = "qcow2") -> None:
    need("qemu-io")
    args = [a for c in commands for a in ("-c", c)]
    subprocess.run(["qemu-io", "-f", fmt, *args, str(image)], check=True, capture_output=True)


def _guest(path: Path) -> bytes:
    """What qemu reads as the guest disk of `path`."""
    raw = path.with_suffix(".raw-oracle")
    _qemu_img("convert", "-O", "raw", path, raw)
    data = raw.read_bytes()
    raw.unlink()
    return data


def _ours(path: Path) -> bytes:
    with open_image(str(path)) as image:
        assert isinstance(image, Qcow2Image)
        return b"".join(
            image.read_sync(o, min(CHUNK, image.size - o)) for o in range(0, image.size, CHUNK)
        )


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    """12 MiB that compress unevenly: text, random bytes, zeros, a repeated pattern."""
    path = tmp_path / "disk.raw"
    text = b"".join(b"line %d of the disk\n" % i for i in range(100_000))[: 3 * MiB]
    data = text + os.urandom(2 * MiB) + bytes(3 * MiB) + b"pattern!" * (MiB // 2)
    path.write_bytes(data + bytes(12 * MiB - len(data)))
    return path


@pytest.mark.parametrize(
    "options",
    [
        ["-o", "compat=0.10"],
        ["-o", "compat=1.1"],
        ["-c", "-o", "compat=0.10"],
        ["-c", "-o", "compression_type=zlib,cluster_size=4096"],
        ["-c", "-o", "compression_type=zstd"],
        ["-o", "cluster_size=2M"],
    ],
    ids=["v2", "v3", "v2-zlib", "v3-zlib-4k", "v3-zstd", "2M-clusters"],
)
def test_converted_images_read_as_qemu_reads_them(raw: Path, options: list[str]) -> None:
    image = raw.with_suffix(".qcow2")
    _qemu_img("convert", "-O", "qcow2", *options, raw, image)
    assert _ours(image) == raw.read_bytes() == _guest(image)


def test_backing_chains_and_zero_clusters(
    tmp_path: Path, raw: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """base (raw, 12 MiB) <- mid (qcow2 v2, names it relatively) <- top (qcow2 v3, 16 MiB,
    names mid relatively), with writes at each level and zeroed clusters in top."""
    monkeypatch.chdir(tmp_path)
    _qemu_img("create", "-f", "qcow2", "-o", "compat=0.10", "-b", "disk.raw", "-F", "raw",
              "mid.qcow2")  # fmt: skip
    _qemu_io(tmp_path / "mid.qcow2", "write -P 0xaa 1M 64k", "write -P 0xbb 5000k 8k")
    _qemu_img("create", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", "top.qcow2", "16M")
    _qemu_io(tmp_path / "top.qcow2", "write -P 0xcc 2M 4k", "write -z 3M 128k",
             "write -z 1M 64k", "write -P 0xdd 15M 64k")  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative names resolve against the image's directory, not ours
    ours = _ours(tmp_path / "top.qcow2")
    assert len(ours) == 16 * MiB
    assert ours[1 * MiB : 1 * MiB + 64 * 1024] == bytes(64 * 1024)  # zeroed over mid's 0xaa
    assert ours[5000 * 1024 : 5008 * 1024] == b"\xbb" * 8192  # from mid
    assert ours[13 * MiB : 14 * MiB] == bytes(MiB)  # past the end of base
    assert ours == _guest(tmp_path / "top.qcow2")


@pytest.mark.parametrize(("method", "name"), [("aes", "AES"), ("luks", "LUKS")])
def test_encrypted_images_are_refused(tmp_path: Path, method: str, name: str) -> None:
    image = tmp_path / "secret.qcow2"
    create = ["qemu-img", "create", "-f", "qcow2", "--object", "secret,id=s0,data=123456",
              "-o", f"encrypt.format={method},encrypt.key-secret=s0", str(image), "4M"]  # fmt: skip
    need("qemu-img")
    for _ in range(5):  # LUKS times its key derivation; on a busy machine that can fail
        done = subprocess.run(create, capture_output=True, text=True, check=False)
        if "Unable to get accurate CPU usage" not in done.stderr:
            break
    assert done.returncode == 0, done.stderr
    with pytest.raises(Refusal) as refused:
        open_image(str(image))
    assert str(refused.value) == f"{image}: encrypted ({name}) qcow2 image"


def test_unknown_incompatible_features_are_refused(tmp_path: Path) -> None:
    extl2 = tmp_path / "extl2.qcow2"
    _qemu_img("create", "-f", "qcow2", "-o", "extended_l2=on", extl2, "4M")
    with pytest.raises(Refusal, match=r": qcow2 incompatible features not supported: extended L2$"):
        open_image(str(extl2))
    future = tmp_path / "future.qcow2"
    _qemu_img("create", "-f", "qcow2", future, "4M")
    with open(future, "r+b") as f:
        f.seek(72 + 7)  # the low byte of incompatible_features
        f.write(bytes([1 << 6]))
    with pytest.raises(Refusal, match=r": qcow2 incompatible features not supported: bit 6$"):
        open_image(str(future))


def _entry(image: Path, offset: int) -> int:
    with open(image, "rb") as f:
        f.seek(offset)
        return int.from_bytes(f.read(8), "big")


def _set_entry(image: Path, offset: int, value: int) -> None:
    with open(image, "r+b") as f:
        f.seek(offset)
        f.write(value.to_bytes(8, "big"))


def test_tables_past_the_end(raw: Path) -> None:
    """An L1 entry pointing past the end refuses the image; an L2 entry doing so fails the
    reads of its cluster with EIO (and no other)."""
    image = raw.with_suffix(".qcow2")
    _qemu_img("convert", "-O", "qcow2", raw, image)
    size = image.stat().st_size
    l1_offset = _entry(image, 40)
    l2_offset = _entry(image, l1_offset) & 0x00FF_FFFF_FFFF_FE00
    _set_entry(image, l2_offset, (size + (1 << 20)) | (1 << 63))  # cluster 0 past the end
    with open_image(str(image)) as opened:
        with pytest.raises(FSError) as failed:
            opened.read_sync(100, 10)
        assert failed.value.errno == errno.EIO
        assert str(failed.value).endswith("guest offset 100 maps past the end of the image")
        assert opened.read_sync(64 * 1024, 10) == raw.read_bytes()[64 * 1024 : 64 * 1024 + 10]
    _set_entry(image, l1_offset, (size + (4 << 20)) | (1 << 63))
    with pytest.raises(Refusal, match=r": qcow2 L2 table 0 at byte \d+ lies past the end"):
        open_image(str(image))


def test_a_missing_backing_file_is_refused(tmp_path: Path) -> None:
    base = tmp_path / "base.raw"
    base.write_bytes(bytes(MiB))
    top = tmp_path / "top.qcow2"
    _qemu_img("create", "-f", "qcow2", "-b", str(base), "-F", "raw", top)
    base.unlink()
    with pytest.raises(Refusal) as refused:
        open_image(str(top))
    assert str(refused.value) == f"{top}: backing file {base}: No such file or directory"


def test_raw_files_stay_raw(raw: Path) -> None:
    with open_image(str(raw)) as image:
        assert isinstance(image, ImageFile)


async def test_async_reads_equal_qemus(tmp_path: Path, raw: Path) -> None:
    """`read` (data clusters through the page cache, the rest in a thread) at odd offsets
    and sizes, before and after the L2 tables are cached, over a compressed image with a
    backing file, zero clusters and plain data clusters."""
    base = tmp_path / "base.qcow2"
    _qemu_img("convert", "-c", "-O", "qcow2", "-o", "compression_type=zstd", raw, base)
    top = tmp_path / "top.qcow2"
    _qemu_img("create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top, "16M")
    _qemu_io(top, "write -P 0x11 0 3M", "write -z 5M 1M", "write -P 0x22 9000k 100k")
    expected = _guest(top)
    with open_image(str(top)) as image:
        for _ in range(2):
            for offset in range(0, 16 * MiB - 300_000, 777_777):
                size = 1 + offset % 300_000
                assert await image.read(offset, size) == expected[offset : offset + size]


def test_header_layout() -> None:
    """QCowHeader: the v2 fields end at byte 72, v3's at 104 (compression_type follows)."""
    assert (_qcow2._HEADER_V2.size, _qcow2._HEADER_V2.size + _qcow2._HEADER_V3.size) == (72, 104)


def test_a_writable_open_of_qcow2_is_refused(raw: Path) -> None:
    image = raw.with_suffix(".qcow2")
    _qemu_img("convert", "-O", "qcow2", raw, image)
    with pytest.raises(Refusal) as refused:
        open_container(str(image), writable=True)
    assert str(refused.value) == f"{image}: qcow2 images are read-only; mount with -o ro"
