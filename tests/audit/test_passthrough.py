"""The passthrough FileSystem, driven directly: no mount."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from uvfs._api import Caller, FSError, SetAttr
from uvfs_fs.audit.passthrough import ROOT_INO, Passthrough
from uvfs_fs.audit.recorder import Access, Kind, Recorder

CALLER = Caller(uid=0, gid=0)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "mod.py").write_text("x = 1\n")
    (root / "pkg" / "secret.py").write_text("hidden\n")
    (root / "link").symlink_to("pkg/mod.py")
    (root / "escape").symlink_to("../outside")
    (tmp_path / "outside").write_text("not for the driver\n")
    os.link(root / "pkg" / "mod.py", root / "hard")
    return root


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def fs(tree: Path, recorder: Recorder):
    fs = Passthrough.from_path(str(tree), recorder, {str(tree / "pkg" / "secret.py")}.__contains__)
    yield fs
    await fs.close()


async def test_lookup_getattr_open_read_are_recorded(fs: Passthrough, tree: Path, recorder) -> None:
    pkg = await fs.lookup(ROOT_INO, b"pkg")
    assert stat.S_ISDIR(pkg.mode)
    mod = await fs.lookup(pkg.ino, b"mod.py")
    real = os.stat(tree / "pkg" / "mod.py")
    assert (mod.size, mod.mode, mod.mtime_ns) == (6, real.st_mode, real.st_mtime_ns)
    assert mod.ino & ((1 << 56) - 1) == real.st_ino
    assert (await fs.getattr(mod.ino)) == mod
    handle = await fs.open(mod.ino, os.O_RDONLY, CALLER)
    assert await fs.read(mod.ino, handle, 4, 100) == b"1\n"
    await fs.release(mod.ino, handle)
    path = str(tree / "pkg" / "mod.py")
    assert recorder[path].kind is Kind.FILE
    assert dict(recorder[path].counts) == {Access.LOOKUP: 1, Access.GETATTR: 1, Access.OPEN_READ: 1}
    assert dict(recorder[str(tree / "pkg")].counts) == {Access.LOOKUP: 1}


async def test_miss_is_recorded_every_time(fs: Passthrough, tree: Path, recorder) -> None:
    for _ in range(3):
        with pytest.raises(FSError) as e:
            await fs.lookup(ROOT_INO, b"absent")
        assert e.value.errno == errno.ENOENT
    entry = recorder[str(tree / "absent")]
    assert (entry.kind, dict(entry.counts)) == (Kind.ABSENT, {Access.MISS: 3})


async def test_hidden_names_are_enoent_and_unlisted(fs: Passthrough, tree: Path, recorder) -> None:
    pkg = await fs.lookup(ROOT_INO, b"pkg")
    with pytest.raises(FSError) as e:
        await fs.lookup(pkg.ino, b"secret.py")
    assert e.value.errno == errno.ENOENT
    assert sorted(d.name for d in await fs.readdir(pkg.ino)) == [b"mod.py"]
    assert dict(recorder[str(tree / "pkg" / "secret.py")].counts) == {Access.HIDDEN: 1}
    assert recorder[str(tree / "pkg")].counts[Access.READDIR] == 1


async def test_readdir_gives_attributes_and_usable_inodes(fs: Passthrough, tree: Path) -> None:
    entries = {d.name: d.attr for d in await fs.readdir(ROOT_INO)}
    assert sorted(entries) == [b"escape", b"hard", b"link", b"pkg"]
    assert stat.S_ISLNK(entries[b"link"].mode)
    assert entries[b"hard"].ino == (await fs.lookup(ROOT_INO, b"hard")).ino
    # a node met only through readdir answers getattr (readdirplus counts as a lookup)
    assert (await fs.getattr(entries[b"pkg"].ino)).ino == entries[b"pkg"].ino


async def test_symlinks_are_read_not_followed(fs: Passthrough, tree: Path, recorder) -> None:
    escape = await fs.lookup(ROOT_INO, b"escape")
    assert stat.S_ISLNK(escape.mode)
    assert await fs.readlink(escape.ino) == b"../outside"
    with pytest.raises(FSError) as e:  # opening the link itself: O_NOFOLLOW refuses
        await fs.open(escape.ino, os.O_RDONLY, CALLER)
    assert e.value.errno == errno.ELOOP
    assert recorder[str(tree / "escape")].counts[Access.READLINK] == 1


@pytest.mark.parametrize("name", [b"..", b".", b"pkg/mod.py", b""])
async def test_names_cannot_walk(fs: Passthrough, name: bytes) -> None:
    with pytest.raises(FSError) as e:
        await fs.lookup(ROOT_INO, name)
    assert e.value.errno == errno.EINVAL


async def test_writes_are_refused_and_recorded(fs: Passthrough, tree: Path, recorder) -> None:
    mod = await fs.lookup(ROOT_INO, b"link")
    for flags in (os.O_WRONLY, os.O_RDWR, os.O_RDONLY | os.O_TRUNC):
        with pytest.raises(FSError) as e:
            await fs.open(mod.ino, flags, CALLER)
        assert e.value.errno == errno.EROFS
    with pytest.raises(FSError) as e:
        await fs.setattr(mod.ino, SetAttr(size=0), CALLER)
    assert e.value.errno == errno.EROFS
    assert recorder[str(tree / "link")].counts[Access.OPEN_WRITE] == 4
    with pytest.raises(FSError) as e:
        await fs.create(ROOT_INO, b"new", 0o644, os.O_WRONLY | os.O_CREAT, CALLER)
    assert e.value.errno == errno.EROFS
    new = recorder[str(tree / "new")]
    assert (new.kind, dict(new.counts)) == (Kind.ABSENT, {Access.OPEN_WRITE: 1})
    assert not (tree / "new").exists()


async def test_every_change_of_a_name_is_refused_and_recorded(
    fs: Passthrough, tree: Path, recorder: Recorder
) -> None:
    pkg = await fs.lookup(ROOT_INO, b"pkg")
    mod = await fs.lookup(pkg.ino, b"mod.py")
    attempts = [
        fs.mknod(ROOT_INO, b"fifo", stat.S_IFIFO | 0o644, 0, CALLER),
        fs.mkdir(ROOT_INO, b"dir", 0o755, CALLER),
        fs.symlink(ROOT_INO, b"sym", b"pkg", CALLER),
        fs.link(mod.ino, ROOT_INO, b"hard2"),
        fs.unlink(pkg.ino, b"mod.py"),
        fs.rmdir(ROOT_INO, b"pkg"),
        fs.rename(ROOT_INO, b"hard", pkg.ino, b"moved", 0),
    ]
    for attempt in attempts:
        with pytest.raises(FSError) as e:
            await attempt
        assert e.value.errno == errno.EROFS
    changed = {p: e.kind for p, e in recorder if e.counts[Access.OPEN_WRITE]}
    assert changed == {
        str(tree / "fifo"): Kind.ABSENT,
        str(tree / "dir"): Kind.ABSENT,
        str(tree / "sym"): Kind.ABSENT,
        str(tree / "hard2"): Kind.ABSENT,
        str(tree / "pkg" / "mod.py"): Kind.FILE,
        str(tree / "pkg"): Kind.DIRECTORY,
        str(tree / "hard"): Kind.FILE,
        str(tree / "pkg" / "moved"): Kind.ABSENT,
    }
    assert sorted(os.listdir(tree)) == ["escape", "hard", "link", "pkg"]


async def test_hard_link_is_one_node_named_by_its_latest_path(fs: Passthrough, tree: Path) -> None:
    pkg = await fs.lookup(ROOT_INO, b"pkg")
    a = await fs.lookup(pkg.ino, b"mod.py")
    b = await fs.lookup(ROOT_INO, b"hard")
    assert a.ino == b.ino and a.nlink == 2
    recorder = Recorder()
    fs.recorder = recorder
    await fs.getattr(a.ino)
    assert [p for p, _ in recorder] == [str(tree / "hard")]


async def test_replaced_directory_is_stale(fs: Passthrough, tree: Path) -> None:
    pkg = await fs.lookup(ROOT_INO, b"pkg")
    fs.forget(pkg.ino)  # the kernel let go: the directory descriptor is dropped
    pkg = await fs.lookup(ROOT_INO, b"pkg")
    os.rename(tree / "pkg", tree / "old")
    (tree / "pkg").mkdir()
    with pytest.raises(FSError) as e:
        await fs.lookup(pkg.ino, b"mod.py")
    assert e.value.errno == errno.ESTALE


async def test_forget_keeps_parents_of_live_children(fs: Passthrough, tree: Path) -> None:
    pkg = await fs.lookup(ROOT_INO, b"pkg")
    mod = await fs.lookup(pkg.ino, b"mod.py")
    fs.forget(pkg.ino)
    assert (await fs.getattr(mod.ino)).size == 6  # reached through the forgotten parent
    fs.forget(mod.ino)
    with pytest.raises(FSError) as e:
        await fs.getattr(pkg.ino)
    assert e.value.errno == errno.ESTALE


async def test_statfs_is_the_real_filesystems(fs: Passthrough, tree: Path) -> None:
    real = os.statvfs(tree)
    st = await fs.statfs()
    assert (st.block_size, st.blocks, st.name_max) == (real.f_frsize, real.f_blocks, real.f_namemax)


def test_root_must_be_a_directory(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(NotADirectoryError):
        Passthrough.from_path(str(tmp_path / "f"), Recorder())


NAMES = st.sampled_from(["a", "b", "c.py", "é", "x y", "\udcff"])  # one not UTF-8


@st.composite
def trees(draw: st.DrawFn) -> dict[tuple[str, ...], str | bytes | None]:
    """Paths -> file contents (bytes), symlink targets (str) or None for directories."""
    tree: dict[tuple[str, ...], str | bytes | None] = {}
    for _ in range(draw(st.integers(0, 12))):
        parents = [p for p, v in tree.items() if v is None] + [()]
        path = (*draw(st.sampled_from(parents)), draw(NAMES))
        if path not in tree:
            tree[path] = draw(st.one_of(st.none(), st.binary(max_size=64), NAMES))
    return tree


@settings(max_examples=40, deadline=None)
@given(tree=trees(), probes=st.lists(st.lists(NAMES, min_size=1, max_size=3), max_size=6))
def test_the_view_is_the_real_tree(
    tmp_path_factory: pytest.TempPathFactory, tree: dict, probes: list[list[str]]
) -> None:
    root = tmp_path_factory.mktemp("tree")
    for path, value in tree.items():
        real = root.joinpath(*path)
        if value is None:
            real.mkdir()
        elif isinstance(value, bytes):
            real.write_bytes(value)
        else:
            real.symlink_to(value)
    trio.run(_compare, root, probes)


async def _walk(fs: Passthrough, ino: int, names: list[str]) -> int | None:
    for name in names:
        try:
            attr = await fs.lookup(ino, os.fsencode(name))
        except FSError as e:
            assert e.errno in (errno.ENOENT, errno.ENOTDIR)
            return None
        ino = attr.ino
    return ino


async def _compare(root: Path, probes: list[list[str]]) -> None:
    recorder = Recorder()
    fs = Passthrough.from_path(str(root), recorder)
    try:
        for directory, dirs, files in os.walk(root):
            names = [n for n in os.path.relpath(directory, root).split("/") if n != "."]
            ino = await _walk(fs, ROOT_INO, names)
            assert ino is not None
            listing = {os.fsdecode(e.name): e.attr for e in await fs.readdir(ino)}
            assert sorted(listing) == sorted(dirs + files)
            for name, attr in listing.items():
                real = os.lstat(os.path.join(directory, name))
                assert (attr.mode, attr.size, attr.mtime_ns) == (
                    real.st_mode, real.st_size, real.st_mtime_ns
                )  # fmt: skip
                if stat.S_ISLNK(attr.mode):
                    assert os.fsdecode(await fs.readlink(attr.ino)) == os.readlink(
                        os.path.join(directory, name)
                    )
                elif stat.S_ISREG(attr.mode):
                    handle = await fs.open(attr.ino, os.O_RDONLY, CALLER)
                    data = await fs.read(attr.ino, handle, 0, 1 << 16)
                    await fs.release(attr.ino, handle)
                    assert data == Path(directory, name).read_bytes()
        for names in probes:
            found = await _walk(fs, ROOT_INO, names)
            real = root.joinpath(*names)
            # the view never follows a symlink itself: only real directories are walked
            walkable = all(
                root.joinpath(*names[:i]).is_dir() and not root.joinpath(*names[:i]).is_symlink()
                for i in range(1, len(names))
            )
            assert (found is not None) == (walkable and os.path.lexists(real))
            if found is None and walkable and not os.path.lexists(real):
                assert recorder[str(real)].counts[Access.MISS] >= 1
    finally:
        await fs.close()
