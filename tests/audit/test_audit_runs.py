"""Real audited runs: a private namespace, the overlay over the venv and /usr, real packages.

Each run mounts in namespaces that die with it; every test checks the host is left
without a mount.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from uvfs_fs.audit.cli import main
from uvfs_fs.audit.recorder import Access
from uvfs_fs.audit.runner import run

pytestmark = pytest.mark.slow

LIBYAML = [
    "/usr/lib/x86_64-linux-gnu/libyaml-0.so.2",
    "/usr/lib/x86_64-linux-gnu/libyaml-0.so.2.0.9",
]


def _host_mounts() -> int:
    with open("/proc/self/mounts") as f:
        return f.read().count("uvfs-audit")


@pytest.fixture(autouse=True)
def no_mounts_left():
    assert _host_mounts() == 0
    yield
    assert _host_mounts() == 0


def _audit(venv: Path, tmp_path: Path, *options: str, code: str) -> tuple[int, dict]:
    """``uvfs audit OPTIONS --json FILE -- VENV/bin/python -c CODE``: status, report."""
    out = tmp_path / "report.json"
    python = str(venv / "bin" / "python")
    status = main([*options, "--quiet", "--json", str(out), "--", python, "-c", code])
    report = json.loads(out.read_text())
    assert report.pop("command") == [python, "-c", code]
    return status, report


def _site(venv: Path) -> Path:
    return venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"


def test_complete_declaration(venv: Path, tmp_path: Path) -> None:
    status, report = _audit(venv, tmp_path, "--dist", "app-declared", code="import app_declared")
    assert status == 0
    assert report == {
        "exit_status": 0,
        "declared": ["python:app-declared", "python:six"],
        "undeclared": [],
        "declared_unused": [],
        "unowned": [],
        "missing": [],
    }


def test_undeclared_import_is_caught_with_its_owner(venv: Path, tmp_path: Path) -> None:
    code = "import app_undeclared, os; os.path.exists('/usr/share/uvfs-probe')"
    status, report = _audit(venv, tmp_path, "--dist", "app-undeclared", "--strict", code=code)
    assert (status, report.pop("exit_status")) == (3, 0)  # --strict; the command's own is 0
    [six] = report.pop("undeclared")
    site = _site(venv)
    assert six["owner"] == "python:six"
    assert six["files"] == [f"{site}/__pycache__/six.cpython-311.pyc", f"{site}/six.py"]
    assert six["accesses"] >= 4  # lookup, getattr, open of each
    assert report == {
        "declared": ["python:app-undeclared"],
        "declared_unused": [],
        "unowned": [],
        "missing": ["/usr/share/uvfs-probe"],
    }


def test_enforce_fails_on_the_import_then_passes_once_declared(
    venv: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    status, report = _audit(
        venv, tmp_path, "--enforce", "--dist", "app-undeclared", code="import app_undeclared"
    )
    assert status == report["exit_status"] == 1
    assert "ModuleNotFoundError: No module named 'six'" in capfd.readouterr().err
    assert report["undeclared"] == []  # hidden from listings: never even looked up
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "app-undeclared"\ndependencies = ["six>=1"]\n')
    status, report = _audit(
        venv,
        tmp_path,
        "--enforce",
        "--dist",
        "app-undeclared",
        "--pyproject",
        str(pyproject),
        code="import app_undeclared",
    )
    assert status == report["exit_status"] == 0
    assert report["undeclared"] == []
    assert report["declared"] == ["python:app-undeclared", "python:six"]


def test_requirements_file_declares(venv: Path, tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("app-undeclared\nsix  # used by app-undeclared\n")
    status, report = _audit(
        venv, tmp_path, "--requirements", str(requirements), code="import app_undeclared"
    )
    assert (status, report["undeclared"], report["declared_unused"]) == (0, [], [])


def test_c_extension_library_maps_to_its_debian_package(
    venv: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    code = "import yamlver; print(yamlver.version())"
    status, report = _audit(venv, tmp_path, "--dist", "yamlver", code=code)
    assert status == report["exit_status"] == 0
    [yaml] = report["undeclared"]
    assert (yaml["owner"], yaml["files"]) == ("deb:libyaml-0-2", LIBYAML)
    capfd.readouterr()
    status, _ = _audit(venv, tmp_path, "--enforce", "--dist", "yamlver", code=code)
    assert status == 1
    assert "libyaml-0.so.2: cannot open shared object file" in capfd.readouterr().err
    status, report = _audit(
        venv, tmp_path, "--enforce", "--dist", "yamlver", "--declare", "deb:libyaml-0-2", code=code
    )
    assert (status, report["undeclared"]) == (0, [])
    assert "deb:libyaml-0-2" in report["declared"]
    assert capfd.readouterr().out == "0.2.5\n"


def test_every_miss_and_exec_is_recorded_and_only_the_command_sees_mounts(
    venv: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    python = str(venv / "bin" / "python")
    code = (
        "import os, subprocess, sys\n"
        "six = sys.argv[1]\n"
        "for _ in range(3): os.path.exists('/usr/share/uvfs-probe')\n"
        "subprocess.run(['/usr/bin/true'], check=True)\n"
        "for mode in 'aw':\n"
        "    try: open(six, mode)\n"
        "    except OSError as e: assert e.errno == 30, e  # EROFS\n"
        "print(open('/proc/self/mounts').read().count('fuse.audit'), os.getcwd())\n"
    )
    # a working directory inside a watched tree is entered again through the overlay
    monkeypatch.chdir(venv)
    six = str(_site(venv) / "six.py")
    result = run([python, "-c", code, six], python, [str(venv), "/usr"], None)
    assert result.exit_status == 0
    # the two binds; the host has none (`no_mounts_left`), and its processes are out of
    # the command's sight (test_escape.py)
    assert capfd.readouterr().out == f"2 {venv}\n"
    assert dict(result.record["/usr/share/uvfs-probe"].counts) == {Access.MISS: 3}
    assert result.record["/usr/bin/true"].counts[Access.EXEC] == 1
    # never imported; opened for appending, then for writing (a truncating setattr first)
    assert dict(result.record[six].counts) == {Access.LOOKUP: 2, Access.OPEN_WRITE: 2}
    assert "/usr/share/uvfs-probe" not in result.startup


def test_exit_status_and_teardown_when_the_command_is_killed(venv: Path) -> None:
    python = str(venv / "bin" / "python")
    code = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    assert run([python, "-c", code], python, ["/usr"], None).exit_status == 128 + 9
    assert run([python, "-c", "raise SystemExit(7)"], python, ["/usr"], None).exit_status == 7
    assert run(["/nonexistent/cmd"], python, ["/usr"], None).exit_status == 127


def test_writable_changes_go_to_a_scratch_layer_and_are_recorded(
    venv: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    python = str(venv / "bin" / "python")
    six, gone = str(_site(venv) / "six.py"), str(_site(venv) / "app_undeclared.py")
    before = Path(six).read_bytes()
    code = (
        "import os, sys\n"
        "six, gone = sys.argv[1:]\n"
        "open(six, 'a').write('# changed\\n')\n"
        "open('/usr/share/uvfs-new', 'w').write('new')\n"
        "os.unlink(gone)\n"
        "print(open(six).read().endswith('# changed\\n'), open('/usr/share/uvfs-new').read(),"
        " os.path.exists(gone))\n"
    )
    result = run([python, "-c", code, six, gone], python, [str(venv), "/usr"], None, True)
    assert (result.exit_status, capfd.readouterr().out) == (0, "True new False\n")
    assert Path(six).read_bytes() == before and Path(gone).exists()  # the host is untouched
    assert not Path("/usr/share/uvfs-new").exists()
    for path in (six, gone, "/usr/share/uvfs-new"):
        assert result.record[path].counts[Access.OPEN_WRITE] == 1
    assert result.record[six].counts[Access.OPEN_READ] >= 1  # copied up through the view
    assert result.record["/usr/share/uvfs-new"].counts[Access.MISS] == 1


def test_as_a_normal_user(as_nobody: list[str], capfd: pytest.CaptureFixture[str]) -> None:
    code = "import os; print('inside', os.getuid())"
    audit = [*as_nobody, "-m", "uvfs_fs.audit", "--quiet", "--python", "/usr/bin/python3"]
    done = subprocess.run(
        [*audit, "--", "/usr/bin/python3", "-c", code], capture_output=True, text=True
    )
    if os.stat("/dev/fuse").st_mode & 0o006 == 0o006:
        assert (done.returncode, done.stdout) == (0, "inside 0\n")  # root of its namespace
    else:
        assert done.returncode == 125
        assert done.stderr.splitlines()[-1].endswith(
            "(as a normal user, uvfs audit needs unprivileged user namespaces and read-write"
            " access to /dev/fuse; or run it as root)"
        )
