"""``uvfs new-driver NAME [DIR]`` writes a package that installs, mounts and tests itself, or
refuses with one line; its driver module is the hello driver of docs/writing-a-driver.md."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import documented, run_uvfs
from uvfs._skeleton import PASSING, render
from uvfs.testing import params

FILES = {
    "pyproject.toml",
    "README.md",
    "demo_driver.py",
    "tests/conftest.py",
    "tests/test_demo_driver.py",
    "tests/test_conformance.py",
}


def _files(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file()}


@pytest.fixture
def package(tmp_path: Path) -> Path:
    """The package ``uvfs new-driver demo`` writes, in a fresh directory."""
    done = run_uvfs("new-driver", "demo", str(tmp_path / "demo"))
    assert done.stdout == f"wrote {tmp_path}/demo/: pip install -e {tmp_path}/demo, then " + (
        "uvfs mount -t demo ...\n"
    )
    return tmp_path / "demo"


def test_it_writes_the_package(package: Path) -> None:
    """The package holds its pyproject, README, driver module and tests, nothing else."""
    assert _files(package) == FILES
    pyproject = (package / "pyproject.toml").read_text()
    assert '[project.entry-points."uvfs.drivers"]\ndemo = "demo_driver:DRIVER"\n' in pyproject


def test_dir_defaults_to_the_name(tmp_path: Path) -> None:
    run_uvfs("new-driver", "demo", cwd=tmp_path)
    assert _files(tmp_path / "demo") == FILES


def test_its_driver_is_the_documented_hello_driver() -> None:
    """Generated for the name hello, the driver module is step 1 of the tutorial, exactly."""
    assert render("hello")["hello_driver.py"] == documented("hello_driver.py")


@pytest.mark.parametrize("name", ["my-fs", "1st", "class", "two words", ""])
def test_it_refuses_a_name_that_is_no_identifier(tmp_path: Path, name: str) -> None:
    done = run_uvfs("new-driver", name, str(tmp_path / "out"), check=False)
    assert (done.returncode, done.stderr) == (2, f"uvfs: '{name}' is not a Python identifier\n")
    assert not (tmp_path / "out").exists()


def test_it_refuses_an_existing_directory(tmp_path: Path) -> None:
    (tmp_path / "demo").mkdir()
    done = run_uvfs("new-driver", "demo", str(tmp_path / "demo"), check=False)
    assert (done.returncode, done.stderr) == (1, f"uvfs: {tmp_path}/demo already exists\n")
    assert list((tmp_path / "demo").iterdir()) == []


@pytest.mark.slow
def test_installed_it_mounts_by_its_name(package: Path, tmp_path: Path, mount) -> None:
    """Installed (into a directory of its own, on PYTHONPATH: nothing global), the driver is
    found through its entry point: ``-t demo`` mounts it and it answers."""
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps",
         "--target", str(target), str(package)],
        check=True, capture_output=True,
    )  # fmt: skip
    (tmp_path / "empty.img").touch()
    mnt = mount(tmp_path / "empty.img", fstype="demo", cwd=target)
    assert os.listdir(mnt) == ["hello.txt"]
    assert (mnt / "hello.txt").read_bytes() == b"Hello, world!\n"


@pytest.mark.slow
def test_its_own_tests_pass(package: Path) -> None:
    """The generated suite mounts the driver from its directory and runs the conformance
    kit: its test passes, and so do the kit's checks but those on its NOT_YET list."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=package, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]
    xfailed = len(params(readonly=True)) - len(PASSING)
    closing = done.stdout.strip().splitlines()[-1]
    assert closing.startswith(f"{1 + len(PASSING)} passed, {xfailed} xfailed in "), closing
