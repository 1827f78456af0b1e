"""Declarations: owners parsed, files read, closures with markers and extras."""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.requirements import Requirement

from uvfs_fs.audit.declared import (
    DeclarationError,
    declared_owners,
    dist_requirement,
    parse_owner,
    python_closure,
    requirements_from_file,
    requirements_from_pyproject,
)
from uvfs_fs.audit.owners import DebPackage, Distribution, PythonEnv

MARKERS = {
    "implementation_name": "cpython",
    "implementation_version": "3.11.7",
    "os_name": "posix",
    "platform_machine": "x86_64",
    "platform_release": "6.1",
    "platform_system": "Linux",
    "platform_version": "#1",
    "python_full_version": "3.11.7",
    "platform_python_implementation": "CPython",
    "python_version": "3.11",
    "sys_platform": "linux",
}


def _dist(name: str, *requires: str) -> Distribution:
    return Distribution(name, "1.0", requires, (), None)


ENV = PythonEnv(
    executable="/venv/bin/python",
    prefix="/venv",
    base_prefix="/usr",
    stdlib=(),
    site_packages=(),
    interpreter_files=(),
    marker_environment=MARKERS,
    distributions={
        d.name: d
        for d in [
            _dist(
                "app",
                "requests>=2",
                "tomli; python_version < '3.11'",
                "colorama; sys_platform == 'win32'",
                "pysocks; extra == 'socks'",
                "rich[jupyter]; extra == 'pretty'",
            ),
            _dist("requests", "urllib3<3", "pysocks!=1.5.7; extra == 'socks'"),
            _dist("urllib3"),
            _dist("rich", "pygments", "ipywidgets; extra == 'jupyter'"),
            _dist("broken", "this is not a requirement"),
        ]
    },
)


def _names(*reqs: str) -> set[str]:
    return python_closure([Requirement(r) for r in reqs], ENV)


def test_closure_evaluates_markers_for_the_audited_interpreter() -> None:
    assert _names("app") == {"app", "requests", "urllib3"}


def test_closure_follows_extras() -> None:
    assert _names("app[socks]") == {"app", "requests", "urllib3", "pysocks"}
    assert _names("app[pretty]") == {"app", "requests", "urllib3", "rich", "pygments", "ipywidgets"}
    assert _names("requests[socks]") == {"requests", "urllib3", "pysocks"}


def test_closure_keeps_uninstalled_and_skips_broken_metadata() -> None:
    assert _names("missing-dist", "Broken") == {"missing-dist", "broken"}
    assert _names("app; python_version < '3'") == set()


def test_declared_owners_joins_python_and_debian() -> None:
    packages = {
        "libyaml-0-2": DebPackage("libyaml-0-2", "optional", (("libc6",),)),
        "libc6": DebPackage("libc6", "optional", ()),
    }
    owners = declared_owners(
        [Requirement("requests")], ["python:rich", "deb:libyaml-0-2"], ENV, packages
    )
    assert owners == {
        "python:requests",
        "python:urllib3",
        "python:rich",
        "python:pygments",
        "deb:libyaml-0-2",
        "deb:libc6",
    }


@pytest.mark.parametrize(
    ("text", "owner"),
    [
        ("python:Zope.Interface", "python:zope-interface"),
        ("python:requests", "python:requests"),
        ("deb:libssl3", "deb:libssl3"),
        ("deb:libstdc++6", "deb:libstdc++6"),
    ],
)
def test_parse_owner(text: str, owner: str) -> None:
    assert parse_owner(text) == owner


@pytest.mark.parametrize("text", ["requests", "python:", "deb:Bad_Name", "rpm:glibc", "python:a b"])
def test_parse_owner_refuses(text: str) -> None:
    with pytest.raises(DeclarationError, match="expected python:NAME or deb:NAME"):
        parse_owner(text)


def test_pyproject() -> None:
    text = (
        '[project]\nname = "x"\ndependencies = ["requests[socks]>=2", "six; os_name == \'nt\'"]\n'
    )
    reqs = requirements_from_pyproject(text, "pyproject.toml")
    assert [str(r) for r in reqs] == ["requests[socks]>=2", 'six; os_name == "nt"']


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[project\n", "p.toml: "),
        ('[project]\nname = "x"\n', "p.toml: no \\[project\\] dependencies"),
        ("[project]\ndependencies = [1]\n", "not a list of strings"),
        ('[project]\ndependencies = ["??"]\n', "p.toml: "),
    ],
)
def test_pyproject_errors(text: str, message: str) -> None:
    with pytest.raises(DeclarationError, match=message):
        requirements_from_pyproject(text, "p.toml")


def test_requirements_file(tmp_path: Path) -> None:
    (tmp_path / "base.txt").write_text("urllib3  # pinned elsewhere\n")
    (tmp_path / "req.txt").write_text(
        "# comment\n\n-r base.txt\n--index-url https://example.org/simple\n"
        "-c constraints.txt\nrequests[socks] >= 2 \\\n  ; python_version >= '3.8'\n"
    )
    reqs = requirements_from_file(str(tmp_path / "req.txt"))
    assert [str(r) for r in reqs] == ["urllib3", 'requests[socks]>=2; python_version >= "3.8"']


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("requests\n-e ./src\n", r"req.txt:2: editable requirements name no distribution"),
        ("requests\n!!bad\n", r"req.txt:2: "),
        ("a \\\n  >= 1\n!!bad\n", r"req.txt:3: "),
        ("-r req.txt\n", r"req.txt: includes itself"),
        ("-r nowhere.txt\n", r"nowhere.txt: No such file or directory"),
    ],
)
def test_requirements_file_errors(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "req.txt").write_text(content)
    with pytest.raises(DeclarationError, match=message):
        requirements_from_file(str(tmp_path / "req.txt"))


def test_dist_must_be_installed() -> None:
    assert str(dist_requirement("App[socks]", ENV)) == "App[socks]"
    with pytest.raises(DeclarationError, match="--dist nope: not installed in /venv"):
        dist_requirement("nope", ENV)
