"""The report: owners used against declared, unowned files, missing paths; table and JSON."""

from __future__ import annotations

import json

from uvfs_fs.audit.owners import BASELINE_PYTHON, Owners
from uvfs_fs.audit.recorder import Access, Kind, Recorder
from uvfs_fs.audit.report import build_report

OWNERS = Owners(
    files={
        "/sp/six.py": "python:six",
        "/sp/app/__init__.py": "python:app",
        "/sp/app/data.json": "python:app",
        "/usr/lib/libyaml.so.2": "deb:libyaml-0-2",
        "/usr/lib/libc.so.6": "deb:libc6",
        "/usr/lib": "deb:libc6",
    },
    stdlib=("/py/lib",),
    site_packages=("/sp",),
    baseline=frozenset({"deb:libc6", BASELINE_PYTHON}),
)


def _recorder() -> Recorder:
    r = Recorder()
    for path, access, kind in [
        ("/sp/app/__init__.py", Access.LOOKUP, Kind.FILE),
        ("/sp/app/__init__.py", Access.OPEN_READ, Kind.FILE),
        ("/sp/app/data.json", Access.GETATTR, Kind.FILE),
        ("/sp/six.py", Access.LOOKUP, Kind.FILE),
        ("/sp/six.py", Access.OPEN_READ, Kind.FILE),
        ("/sp/six.py", Access.GETATTR, Kind.FILE),
        ("/usr/lib/libyaml.so.2", Access.OPEN_READ, Kind.FILE),
        ("/usr/lib/libc.so.6", Access.OPEN_READ, Kind.FILE),
        ("/usr/lib", Access.READDIR, Kind.DIRECTORY),
        ("/py/lib/os.py", Access.OPEN_READ, Kind.FILE),
        ("/sp/local.py", Access.OPEN_READ, Kind.FILE),
        ("/sp/sitecustomize.py", Access.MISS, Kind.ABSENT),
        ("/sp/sitecustomize.py", Access.MISS, Kind.ABSENT),
        ("/usr/lib/tls", Access.MISS, Kind.ABSENT),
        ("/", Access.LOOKUP, Kind.DIRECTORY),
        ("/etc/ld.so.cache", Access.OPEN_READ, Kind.FILE),  # not watched
        ("/etc/nope", Access.MISS, Kind.ABSENT),
    ]:
        r.record(path, access, kind)
    return r


def _report(declared: set[str], exit_status: int = 0):
    return build_report(
        ["python", "-c", "import app"],
        exit_status,
        _recorder(),
        OWNERS,
        declared,
        ["/sp", "/usr", "/py"],
    )


def test_json_has_exactly_the_issues_keys() -> None:
    report = _report({"python:app", "python:requests", "deb:libc6"}, exit_status=1)
    assert report.to_json() == {
        "command": ["python", "-c", "import app"],
        "exit_status": 1,
        "declared": ["python:app", "python:requests"],
        "undeclared": [
            {"owner": "deb:libyaml-0-2", "files": ["/usr/lib/libyaml.so.2"], "accesses": 1},
            {"owner": "python:six", "files": ["/sp/six.py"], "accesses": 3},
        ],
        "declared_unused": ["python:requests"],
        "unowned": ["/sp/local.py"],
        "missing": ["/sp/sitecustomize.py", "/usr/lib/tls"],
    }
    assert json.loads(report.dumps()) == report.to_json()
    assert report.undeclared == ["deb:libyaml-0-2", "python:six"]


def test_complete_declaration() -> None:
    report = _report({"python:app", "python:six", "deb:libyaml-0-2"})
    assert report.undeclared == []
    assert report.declared_unused == []
    assert report.used["python:app"].files == ["/sp/app/__init__.py", "/sp/app/data.json"]
    assert report.used["python:app"].accesses == 3


def test_table() -> None:
    report = _report({"python:app", "python:requests"})
    assert report.table(max_files=1) == (
        "command: python -c import app  (exit status 0)\n"
        "OWNER            STATUS      FILES  ACCESSES\n"
        "deb:libyaml-0-2  UNDECLARED      1         1\n"
        "    /usr/lib/libyaml.so.2\n"
        "python:six       UNDECLARED      1         3\n"
        "    /sp/six.py\n"
        "python:app       used            2         3\n"
        "python:requests  unused          -         -\n"
        "2 undeclared, 1 declared but unused, 1 unowned files, 2 missing paths\n"
    )


def test_table_elides_long_file_lists() -> None:
    r = Recorder()
    for i in range(4):
        r.record(f"/sp/six{i}.py", Access.OPEN_READ, Kind.FILE)
    owners = Owners(files={f"/sp/six{i}.py": "python:six" for i in range(4)})
    report = build_report(["x"], 0, r, owners, [], ["/sp"])
    assert report.table(max_files=2).splitlines()[2:6] == [
        "python:six  UNDECLARED      4         4",
        "    /sp/six0.py",
        "    /sp/six1.py",
        "    ... and 2 more",
    ]
