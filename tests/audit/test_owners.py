"""File -> owner: dpkg's database, RECORD data of a real interpreter, the baseline."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from uvfs_fs.audit.owners import (
    BASELINE_PYTHON,
    Debian,
    Diversion,
    EnvError,
    Owners,
    deb_closure,
    deb_files,
    load_debian,
    load_python_env,
    merged_usr_aliases,
    normalise,
    package_name,
    parse_diversions,
    parse_dpkg_status,
    python_owner,
)

STATUS = """\
Package: libc6
Status: install ok installed
Priority: optional
Depends: libgcc-s1
Description: GNU C Library
 multi-line description
 .

Package: libgcc-s1
Status: install ok installed
Priority: optional
Pre-Depends: gcc-12-base (= 12.2.0-14)

Package: gcc-12-base
Status: install ok installed
Priority: required

Package: dash
Status: install ok installed
Priority: required
Pre-Depends: libc6 (>= 2.34)

Package: libyaml-0-2
Status: install ok installed
Priority: optional
Depends: libc6 (>= 2.14) | libc6.1, mail-transport-agent
Provides: yaml-runtime

Package: exim4-daemon-light
Status: install ok installed
Priority: optional
Provides: mail-transport-agent

Package: removed
Status: deinstall ok config-files
Priority: optional
"""


def test_parse_dpkg_status() -> None:
    packages = parse_dpkg_status(STATUS)
    assert sorted(packages) == [
        "dash",
        "exim4-daemon-light",
        "gcc-12-base",
        "libc6",
        "libgcc-s1",
        "libyaml-0-2",
    ]
    yaml = packages["libyaml-0-2"]
    assert yaml.depends == (("libc6", "libc6.1"), ("mail-transport-agent",))
    assert yaml.provides == ("yaml-runtime",)
    assert packages["libgcc-s1"].depends == (("gcc-12-base",),)
    assert packages["dash"].priority == "required"


def test_deb_closure_follows_depends_alternatives_and_providers() -> None:
    packages = parse_dpkg_status(STATUS)
    # libc6.1 is neither installed nor provided: the other alternative satisfies
    assert deb_closure(["not-installed"], packages) == {"not-installed"}
    assert deb_closure(["libyaml-0-2"], packages) == {
        "libyaml-0-2",
        "libc6",
        "libgcc-s1",
        "gcc-12-base",
        "exim4-daemon-light",
    }


def test_parse_diversions_and_package_names() -> None:
    text = (
        "/usr/bin/pg_config\n/usr/bin/pg_config.libpq-dev\npostgresql-common\n"
        "/etc/x\n/etc/x.orig\n:\n"
    )
    assert parse_diversions(text) == {
        "/usr/bin/pg_config": Diversion(
            "/usr/bin/pg_config", "/usr/bin/pg_config.libpq-dev", "postgresql-common"
        ),
        "/etc/x": Diversion("/etc/x", "/etc/x.orig", None),
    }
    assert package_name("/var/lib/dpkg/info/libssl3:amd64.list") == "libssl3"
    assert package_name("/var/lib/dpkg/info/dash.list") == "dash"


def test_merged_usr_is_normalised(tmp_path: Path) -> None:
    (tmp_path / "usr" / "lib").mkdir(parents=True)
    (tmp_path / "lib").symlink_to("usr/lib")
    (tmp_path / "sbin").mkdir()  # not merged here
    aliases = merged_usr_aliases(str(tmp_path))
    assert aliases == {"/lib": "/usr/lib"}
    assert (
        normalise("/lib/x86_64-linux-gnu/libc.so.6", aliases)
        == "/usr/lib/x86_64-linux-gnu/libc.so.6"
    )
    assert normalise("/lib", aliases) == "/usr/lib"
    assert normalise("/library/x", aliases) == "/library/x"
    assert normalise("/sbin/init", aliases) == "/sbin/init"


def test_deb_files_apply_diversions() -> None:
    diversions = {
        "/usr/bin/pg_config": Diversion(
            "/usr/bin/pg_config", "/usr/bin/pg_config.libpq-dev", "postgresql-common"
        )
    }
    lists = [
        ("libpq-dev", ["/.", "/usr", "/usr/bin/pg_config", "/lib/libpq.so"]),
        ("postgresql-common", ["/usr/bin/pg_config"]),
    ]
    assert list(deb_files(lists, diversions, {"/lib": "/usr/lib"})) == [
        ("/usr", "deb:libpq-dev"),
        ("/usr/bin/pg_config.libpq-dev", "deb:libpq-dev"),
        ("/usr/lib/libpq.so", "deb:libpq-dev"),
        ("/usr/bin/pg_config", "deb:postgresql-common"),
    ]


def test_this_machines_dpkg_database() -> None:
    debian = load_debian()
    owners = Owners.build(load_python_env(sys.executable), debian)
    libc = os.path.realpath("/lib/x86_64-linux-gnu/libc.so.6")
    assert owners.owner(libc) == "deb:libc6"
    assert "deb:libc6" in owners.baseline  # required packages depend on it
    assert owners.owner("/usr/lib/x86_64-linux-gnu/libyaml-0.so.2.0.9") == "deb:libyaml-0-2"
    assert "deb:libyaml-0-2" not in owners.baseline
    assert owners.owner("/usr/no/such/file") is None


def test_no_dpkg_is_empty(tmp_path: Path) -> None:
    assert load_debian(str(tmp_path)) == Debian({}, ())


def test_python_env_of_this_interpreter() -> None:
    env = load_python_env(sys.executable)
    assert env.prefix == sys.prefix
    pytest_dist = env.distributions["pytest"]
    import _pytest

    init = os.path.realpath(_pytest.__file__)
    assert init in pytest_dist.files
    owners = Owners.build(env, Debian({}, ()))
    assert owners.owner(init) == "python:pytest"
    assert owners.owner(os.path.realpath(os.__file__)) == BASELINE_PYTHON
    assert owners.owner(os.path.realpath(sys.executable)) == BASELINE_PYTHON
    site = env.site_packages[0]
    assert owners.owner(os.path.join(site, "not-installed.py")) is None  # inside stdlib dirs
    assert (
        env.marker_environment["python_version"] == f"{sys.version_info[0]}.{sys.version_info[1]}"
    )


def test_bad_interpreter_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(EnvError, match=r"cannot run .*/nope: No such file"):
        load_python_env(str(tmp_path / "nope"))
    with pytest.raises(EnvError, match="cannot describe its environment: no output"):
        load_python_env("/bin/false")
    with pytest.raises(EnvError, match=r"cannot describe its environment: is it Python 3\.8\+"):
        load_python_env("/bin/true")


def test_python_owner_is_canonical() -> None:
    assert python_owner("Zope.Interface") == "python:zope-interface"


def test_hidden_files_and_directories() -> None:
    owners = Owners(
        files={
            "/usr": "deb:base-files",
            "/usr/lib/a/one.so": "deb:liba",
            "/usr/lib/a/sub/two.so": "deb:liba",
            "/usr/lib/mixed/a.so": "deb:liba",
            "/usr/lib/mixed/b.so": "deb:libb",
            "/usr/lib/libc.so": "deb:libc6",
            "/usr/share/empty-dir-of-a": "deb:liba",
            "/sp/six.py": "python:six",
            "/sp/req/__init__.py": "python:req",
        },
        site_packages=("/sp",),
        baseline=frozenset({"deb:libc6"}),
    )
    hidden = owners.hidden(frozenset({"deb:libb"}), keep=["/usr", "/sp"])
    assert hidden == {
        "/usr/lib/a",
        "/usr/lib/a/one.so",
        "/usr/lib/a/sub",
        "/usr/lib/a/sub/two.so",
        "/usr/lib/mixed/a.so",
        "/usr/share",
        "/usr/share/empty-dir-of-a",
        "/sp/six.py",
        "/sp/req",
        "/sp/req/__init__.py",
    }


def test_unlisted_pyc_belongs_to_its_source() -> None:
    owners = Owners(files={"/d/yaml/__init__.py": "deb:python3-yaml", "/d/x.pyc": "deb:x"})
    assert owners.owner("/d/yaml/__pycache__/__init__.cpython-311.pyc") == "deb:python3-yaml"
    assert owners.owner("/d/yaml/__pycache__/__init__.cpython-311.opt-1.pyc") == "deb:python3-yaml"
    assert owners.owner("/d/yaml/__pycache__/other.cpython-311.pyc") is None
    assert owners.owner("/d/yaml/__pycache__/notes.txt") is None
