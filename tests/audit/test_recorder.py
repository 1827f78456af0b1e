"""The recorder: open flags classified, counts kept, plain-data round trip."""

from __future__ import annotations

import os

import pytest

from uvfs_fs.audit.recorder import (
    FMODE_EXEC,
    Access,
    Kind,
    Recorder,
    RecorderStatistics,
    classify_open,
)


@pytest.mark.parametrize(
    ("flags", "access"),
    [
        (os.O_RDONLY, Access.OPEN_READ),
        (os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW, Access.OPEN_READ),
        (os.O_WRONLY, Access.OPEN_WRITE),
        (os.O_RDWR, Access.OPEN_WRITE),
        (os.O_RDONLY | os.O_TRUNC, Access.OPEN_WRITE),
        (os.O_RDONLY | os.O_LARGEFILE | FMODE_EXEC, Access.EXEC),
    ],
)
def test_classify_open(flags: int, access: Access) -> None:
    assert classify_open(flags) is access


def test_counts_and_kinds() -> None:
    r = Recorder()
    r.record("/a", Access.MISS, Kind.ABSENT)
    r.record("/a", Access.LOOKUP, Kind.FILE)  # created since: the kind follows
    r.record("/a", Access.MISS, Kind.ABSENT)  # a miss does not forget what it was
    r.record("/d", Access.READDIR, Kind.DIRECTORY)
    assert [p for p, _ in r] == ["/a", "/d"]
    assert r["/a"].kind is Kind.FILE
    assert dict(r["/a"].counts) == {Access.MISS: 2, Access.LOOKUP: 1}
    assert r["/a"].total == 3
    assert "/d" in r and "/x" not in r
    assert r.statistics() == RecorderStatistics(paths=2, accesses=4)


def test_json_round_trip() -> None:
    r = Recorder()
    r.record("/usr/bin/true", Access.EXEC, Kind.FILE)
    r.record("/usr/bin/true", Access.GETATTR, Kind.FILE)
    r.record("/nope", Access.MISS, Kind.ABSENT)
    data = r.to_json()
    assert data == {
        "/usr/bin/true": {"kind": "file", "counts": {"exec": 1, "getattr": 1}},
        "/nope": {"kind": "absent", "counts": {"miss": 1}},
    }
    back = Recorder.from_json(data)
    assert back.to_json() == data
