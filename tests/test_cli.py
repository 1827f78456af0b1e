"""Every user error of the command line gives one clear line and a non-zero exit status."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.conftest import force_unmount, run_uvfs
from uvfs._mount_command import parse_options, parse_size
from uvfs._user_error import UserError


def one_line_error(done, pattern: str) -> None:
    """The command failed with exit status 1 and exactly one `uvfs: ...` line matching."""
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert re.fullmatch(f"uvfs: {pattern}", lines[0]), lines[0]


def test_missing_source(tmp_path: Path) -> None:
    (tmp_path / "mnt").mkdir()
    done = run_uvfs("mount", str(tmp_path / "nope.img"), str(tmp_path / "mnt"), check=False)
    one_line_error(done, r".*/nope\.img: No such file or directory")


def test_directory_as_source(tmp_path: Path) -> None:
    (tmp_path / "mnt").mkdir()
    done = run_uvfs("mount", str(tmp_path), str(tmp_path / "mnt"), check=False)
    one_line_error(done, r".*: is a directory, not a filesystem image")


def test_source_that_is_no_image(tmp_path: Path) -> None:
    junk = tmp_path / "junk.img"
    junk.write_bytes(b"\x42" * 1_000_000)
    (tmp_path / "mnt").mkdir()
    done = run_uvfs("mount", str(junk), str(tmp_path / "mnt"), check=False)
    one_line_error(done, r".*/junk\.img: no known filesystem found \(known types: .*ext2.*\)")
    done = run_uvfs("info", str(junk), check=False)
    one_line_error(done, r".*/junk\.img: no known filesystem found \(known types: .*\)")


def test_unknown_type(tmp_path: Path) -> None:
    img = tmp_path / "x.img"
    img.write_bytes(bytes(4096))
    (tmp_path / "mnt").mkdir()
    done = run_uvfs("mount", "-t", "nosuchfs", str(img), str(tmp_path / "mnt"), check=False)
    one_line_error(done, r"unknown filesystem type 'nosuchfs' \(known: .*ext2.*\)")


def test_missing_mountpoint(tmp_path: Path) -> None:
    img = tmp_path / "x.img"
    img.write_bytes(bytes(4096))
    done = run_uvfs("mount", "-t", "ext2", str(img), str(tmp_path / "nope"), check=False)
    one_line_error(done, r"mountpoint .*/nope: No such file or directory")


def test_mountpoint_that_is_a_file(tmp_path: Path) -> None:
    img = tmp_path / "x.img"
    img.write_bytes(bytes(4096))
    done = run_uvfs("mount", "-t", "ext2", str(img), str(img), check=False)
    one_line_error(done, r"mountpoint .*/x\.img: not a directory")


def test_bad_option(tmp_path: Path) -> None:
    img = tmp_path / "x.img"
    img.write_bytes(bytes(4096))
    (tmp_path / "mnt").mkdir()
    done = run_uvfs("mount", "-o", "ro,bogus", str(img), str(tmp_path / "mnt"), check=False)
    one_line_error(done, r"unknown mount option 'bogus' \(known: .*\)")
    assert os.listdir(tmp_path / "mnt") == []


def test_mountpoint_already_mounted(mount, hello_dir: Path) -> None:
    image = hello_dir / "empty.img"
    mnt = mount(image, fstype="hello_driver:DRIVER", options=None, cwd=hello_dir)
    env = {**os.environ, "PYTHONPATH": str(hello_dir)}
    done = run_uvfs(
        "mount", "-t", "hello_driver:DRIVER", str(image), str(mnt), env=env, check=False
    )
    one_line_error(done, r"mountpoint .*: something is already mounted there")


def test_umount_of_what_is_not_mounted(tmp_path: Path) -> None:
    done = run_uvfs("umount", str(tmp_path), check=False)
    one_line_error(done, r".*: not mounted")


def test_stats_of_what_is_not_a_uvfs_mount(tmp_path: Path) -> None:
    done = run_uvfs("stats", str(tmp_path), check=False)
    one_line_error(done, r".*: not a uvfs mount of this user")


def test_usage_errors_exit_2() -> None:
    done = run_uvfs("mount", check=False)
    assert done.returncode == 2
    assert "usage: uvfs mount" in done.stderr


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0", 0),
        ("4096", 4096),
        ("512K", 512 << 10),
        ("256M", 256 << 20),
        ("2G", 2 << 30),
        ("1GiB", 1 << 30),
        ("3mb", 3 << 20),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "M", "-1G", "1.5G", "12Q"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(UserError, match="bad size"):
        parse_size(text)


def test_parse_options() -> None:
    options = parse_options("ro,allow_other,cache_size=64M,default_permissions,force")
    assert options.writable is False
    assert options.force is True
    assert options.fuse == ("allow_other", "default_permissions")
    assert options.cache_size == 64 << 20
    assert parse_options(None).writable is True
    assert parse_options("ro,rw").writable is True  # the last one wins, as in mount(8)


def test_an_image_mounted_read_only_cannot_be_mounted_writable(mount, tmp_path: Path) -> None:
    import subprocess

    image = tmp_path / "x.img"
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext2", str(image), "4M"], check=True)
    mount(image, options="ro")
    (tmp_path / "second").mkdir()
    done = run_uvfs("mount", "-o", "rw", str(image), str(tmp_path / "second"), check=False)
    one_line_error(done, r".*/x\.img: image is in use by another uvfs mount")


def test_a_driver_that_cannot_write_is_mounted_read_only_with_a_message(
    tmp_path: Path, hello_dir: Path
) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    image = hello_dir / "empty.img"
    env = {**os.environ, "PYTHONPATH": str(hello_dir)}
    try:
        done = run_uvfs("mount", "-t", "hello_driver:DRIVER", str(image), str(mnt), env=env)
        assert done.stderr == f"uvfs: the hello driver cannot write, mounting {image} read-only\n"
        with open("/proc/self/mounts") as f:
            options = next(line.split()[3] for line in f if line.split()[1] == str(mnt))
        assert options.split(",")[0] == "ro"
    finally:
        force_unmount(mnt)


def test_what_a_driver_warns_of_while_opening_reaches_the_user(tmp_path: Path) -> None:
    import subprocess

    image = tmp_path / "errors.img"
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext2", str(image), "4M"], check=True)
    subprocess.run(["debugfs", "-w", "-R", "ssv state 2", str(image)], check=True,
                   capture_output=True)  # fmt: skip
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        done = run_uvfs("mount", "-o", "ro", str(image), str(mnt))
        assert done.stderr == (
            f"uvfs: {image}: ext2 filesystem has errors or was not cleanly unmounted; "
            "reading it as it is (run e2fsck)\n"
        )
    finally:
        force_unmount(mnt)
