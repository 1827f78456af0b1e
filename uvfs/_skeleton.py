"""Write a new driver's package: pyproject.toml, a working driver module, tests and a README.

``uvfs new-driver NAME [DIR]`` (DIR defaults to NAME) writes a package that installs with
``pip install -e DIR`` and registers its driver under the ``uvfs.drivers`` entry-point
group. The driver module is the hello driver of docs/writing-a-driver.md (the test suite
keeps the two equal), with TODOs where a real format goes. Its tests mount it straight from
the package directory and run the conformance kit's read checks (`uvfs.testing`) with every
check it does not pass yet listed as a strict xfail: a to-do list that shrinks as the
driver grows.
"""

from __future__ import annotations

import argparse
import keyword
import sys
from pathlib import Path
from string import Template

# What the generated driver passes of the kit's read checks, as it comes: everything else
# is listed in its NOT_YET (tests/test_skeleton.py runs the generated suite to keep it so).
PASSING = {"readonly_statfs", "statfs_tree", "tree_readdir_types"}

DRIVER = '''\
"""${name}: one read-only file, to show the shape of a uvfs driver."""

import errno
import stat

import uvfs

TEXT = b"Hello, world!\\n"
ROOT, HELLO = 1, 2


class ${Camel}FS:
    root = ROOT

    async def getattr(self, ino: int) -> uvfs.Attr:
        if ino == ROOT:
            return uvfs.Attr(ino=ROOT, mode=stat.S_IFDIR | 0o755, nlink=2, uid=0, gid=0, size=0)
        if ino == HELLO:
            return uvfs.Attr(
                ino=HELLO, mode=stat.S_IFREG | 0o444, nlink=1, uid=0, gid=0, size=len(TEXT)
            )
        raise uvfs.FSError(errno.ENOENT)

    async def lookup(self, parent: int, name: bytes) -> uvfs.Attr:
        if parent == ROOT and name == b"hello.txt":
            return await self.getattr(HELLO)
        raise uvfs.FSError(errno.ENOENT)

    async def readdir(self, ino: int) -> list[uvfs.DirEntry]:
        return [uvfs.DirEntry(b"hello.txt", await self.getattr(HELLO))]

    async def read(self, ino: int, handle: int, offset: int, size: int) -> bytes:
        return TEXT[offset : offset + size]


class ${Camel}Driver:
    name = "${name}"

    def probe(self, head: bytes) -> bool:
        return False  # TODO: recognise your images; until then, select the driver with -t

    async def open(self, sources, options) -> ${Camel}FS:
        return ${Camel}FS()  # TODO: read sources[0]; raise uvfs.Refusal if it is not yours

    async def describe(self, sources) -> str:
        return "a single file, hello.txt"


DRIVER = ${Camel}Driver()
'''

PYPROJECT = """\
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "uvfs-${name}"
version = "0.1.0"
description = "A uvfs driver: ${name}"
requires-python = ">=3.11"
dependencies = ["uvfs"]

[project.optional-dependencies]
test = ["pytest>=8"]

# uvfs finds drivers through this group: once installed, `uvfs mount -t ${name}` selects it.
[project.entry-points."uvfs.drivers"]
${name} = "${module}:DRIVER"

[tool.setuptools]
py-modules = ["${module}"]

[tool.pytest.ini_options]
testpaths = ["tests"]
"""

CONFTEST = '''\
"""Mounts for the tests: the driver straight from this package's directory, no install."""

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from uvfs.testing import make_tree

pytest_plugins = ["uvfs.testing.plugin"]

PACKAGE = Path(__file__).resolve().parent.parent
UVFS = [sys.executable, "-m", "uvfs.cli"]
# As root the kit also acts as another user (uid 65534), who must be let into the mount.
OPTIONS = "ro,allow_other" if os.geteuid() == 0 else "ro"


def make_image(tree: Path, image: Path) -> None:
    """Write an image of your format holding `tree`, the kit's reference tree.

    TODO: the hello driver reads no image, so an empty file does.
    """
    image.touch()


@contextlib.contextmanager
def mounted(image: Path, mountpoint: Path) -> Iterator[Path]:
    """`image` mounted read-only at `mountpoint` by this driver; unmounted even on failure."""
    mountpoint.mkdir()
    path = os.pathsep.join(filter(None, [str(PACKAGE), os.environ.get("PYTHONPATH")]))
    subprocess.run(
        [*UVFS, "mount", "-t", "${module}:DRIVER", "-o", OPTIONS, str(image), str(mountpoint)],
        check=True,
        env={**os.environ, "PYTHONPATH": path},
    )
    try:
        yield mountpoint
    finally:
        if subprocess.run([*UVFS, "umount", str(mountpoint)]).returncode != 0:
            subprocess.run(["fusermount3", "-uz", str(mountpoint)])


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[Callable[[Path], Path]]:
    """``mount(image) -> mountpoint``, unmounted after the test."""
    with contextlib.ExitStack() as stack:
        yield lambda image: stack.enter_context(mounted(image, tmp_path / "mnt"))


@pytest.fixture(scope="session")
def uvfs_mountpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The kit's mount: an image of the reference tree (run as root: one file is uid 1234)."""
    work = tmp_path_factory.mktemp("conformance")
    make_tree(work / "tree")
    make_image(work / "tree", work / "image")
    with mounted(work / "image", work / "mnt") as mountpoint:
        yield mountpoint
'''

TEST_DRIVER = '''\
"""The driver's own behaviour, through a real mount. TODO: your format's files."""

import os
from pathlib import Path


def test_hello_txt(mount, tmp_path: Path) -> None:
    """The root lists hello.txt, which reads back its text."""
    image = tmp_path / "empty.img"
    image.touch()
    mountpoint = mount(image)
    assert os.listdir(mountpoint) == ["hello.txt"]
    assert (mountpoint / "hello.txt").read_bytes() == b"Hello, world!\\n"
'''

TEST_CONFORMANCE = '''\
"""The conformance kit's read checks on a read-only mount of the reference tree."""

import pytest

from uvfs.testing import params

# Checks the driver does not pass yet. The marks are strict: a check that starts passing
# fails until its name goes from this list. TODO: shrink it as the driver grows.
NOT_YET = dict.fromkeys(
    [
${not_yet}
    ],
    "the skeleton serves hello.txt, not the reference tree",
)


@pytest.mark.parametrize("check", params(readonly=True, xfail=NOT_YET))
def test_conformance(check, uvfs_run) -> None:
    uvfs_run(check)
'''

README = """\
# uvfs-${name}

A uvfs driver, `${name}`, as `uvfs new-driver` wrote it. So far it shows one file,
`hello.txt`, whatever the image holds: replace the TODOs in `${module}.py` with your
format (uvfs's docs/writing-a-driver.md builds a zip archive driver step by step).

## Install

```console
$$ pip install -e .            # registers the driver: uvfs mount -t ${name} now finds it
```

## Mount

```console
$$ uvfs mount -t ${name} IMAGE /tmp/mnt
$$ ls /tmp/mnt
$$ uvfs umount /tmp/mnt
$$ PYTHONPATH=. uvfs mount -t ${module}:DRIVER IMAGE /tmp/mnt   # without installing
```

## Test

```console
$$ pip install -e '.[test]'
$$ pytest                                # as root: the kit's checks then run in full
```

`tests/test_${module}.py` mounts the driver and reads it back. `tests/test_conformance.py`
runs the read checks of uvfs's conformance kit (`uvfs.testing`) on a mount of its
reference tree: write `make_image` in `tests/conftest.py` so it builds your format's
image from that tree, then take each check your driver passes off `NOT_YET`.
"""


def render(name: str) -> dict[str, str]:
    """The package's files for driver `name`, by path relative to its directory."""
    from uvfs.testing import params  # imports pytest: only when a package is written

    module = f"{name}_driver"
    names = [p.id for p in params(readonly=True) if p.id not in PASSING]
    fields = {
        "name": name,
        "module": module,
        "Camel": "".join(part.capitalize() for part in name.split("_")),
        "not_yet": "\n".join(f'        "{n}",' for n in names),
    }
    templates = {
        "pyproject.toml": PYPROJECT,
        "README.md": README,
        f"{module}.py": DRIVER,
        "tests/conftest.py": CONFTEST,
        f"tests/test_{module}.py": TEST_DRIVER,
        "tests/test_conformance.py": TEST_CONFORMANCE,
    }
    return {path: Template(text).substitute(fields) for path, text in templates.items()}


def main(argv: list[str]) -> int:
    """``uvfs new-driver NAME [DIR]``: write the package, or refuse with one line."""
    parser = argparse.ArgumentParser(
        prog="uvfs new-driver",
        description="Write a package holding a new read-only uvfs driver (a working hello "
        "driver with TODOs), its entry point, tests using the conformance kit and a README.",
    )
    parser.add_argument("name", metavar="NAME", help="the driver's name: a Python identifier")
    parser.add_argument("dir", metavar="DIR", nargs="?", type=Path, help="default: ./NAME")
    args = parser.parse_args(argv)
    directory: Path = args.dir or Path(args.name)
    if not args.name.isidentifier() or keyword.iskeyword(args.name):
        print(f"uvfs: '{args.name}' is not a Python identifier", file=sys.stderr)
        return 2
    if directory.exists():
        print(f"uvfs: {directory} already exists", file=sys.stderr)
        return 1
    files = render(args.name)
    try:
        for path, text in files.items():
            (directory / path).parent.mkdir(parents=True, exist_ok=True)
            (directory / path).write_text(text)
    except OSError as e:
        print(f"uvfs: cannot write {directory}: {e.strerror}", file=sys.stderr)
        return 1
    print(f"wrote {directory}/: pip install -e {directory}, then uvfs mount -t {args.name} ...")
    return 0
