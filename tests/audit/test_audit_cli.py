"""``uvfs audit`` command line: help, and bad input as one line with a non-zero exit."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from uvfs_fs.audit.cli import build_parser, guess_python, main


def test_help_names_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for option in (
        "--watch", "--python", "--dist", "--pyproject", "--requirements", "--declare",
        "--enforce", "--writable", "--strict", "--json", "--quiet", "-- COMMAND",
    ):  # fmt: skip
        assert option in out


def test_command_after_options_is_kept_whole() -> None:
    args = build_parser().parse_args(["--enforce", "--", "python", "-c", "x", "--enforce"])
    assert args.enforce and args.command == ["--", "python", "-c", "x", "--enforce"]


NO_FILE = "No such file or directory"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "no COMMAND given (put it after --)"),
        (["--"], "no COMMAND given (put it after --)"),
        (["--python", "/nonexistent/py", "--", "true"], f"cannot run /nonexistent/py: {NO_FILE}"),
        (
            ["--declare", "rpm:glibc", "--", "true"],
            "bad owner 'rpm:glibc': expected python:NAME or deb:NAME",
        ),
        (["--dist", "no-such", "--", "true"], f"--dist no-such: not installed in {sys.prefix}"),
        (["--requirements", "/nonexistent.txt", "--", "true"], f"/nonexistent.txt: {NO_FILE}"),
        (["--pyproject", "/nonexistent.toml", "--", "true"], f"/nonexistent.toml: {NO_FILE}"),
        (
            ["--json", "/nonexistent/r.json", "--", "true"],
            "--json /nonexistent/r.json: no such directory",
        ),
    ],
)
def test_bad_input_is_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if argv and "--python" not in argv:
        argv = ["--python", sys.executable, *argv]
    assert main(argv) == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"uvfs audit: {message}"


@pytest.mark.parametrize(
    ("watch", "message"),
    [
        ("/nonexistent", "uvfs audit: --watch /nonexistent: not a directory"),
        ("/", "uvfs audit: --watch /: the root itself cannot be replaced; watch its subtrees"),
    ],
)
def test_bad_watch_is_one_line(
    watch: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--python", sys.executable, "--watch", watch, "--", "true"]) == 125
    assert capsys.readouterr().err.splitlines() == [message]


def test_guess_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "tool"
    script.write_text(f"#!{sys.executable}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    env_script = tmp_path / "tool2"
    env_script.write_text("#!/usr/bin/env -S python3 -u\n")
    env_script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert guess_python([sys.executable, "-c", "1"]) == sys.executable
    assert guess_python(["tool"]) == sys.executable
    python3 = guess_python(["true"])
    assert os.path.basename(python3) == "python3"
    assert guess_python(["tool2"]) == python3


def test_runs_as_a_module() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "uvfs_fs.audit", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0
    assert done.stdout.startswith("usage: uvfs audit [options] -- COMMAND [ARG...]")
