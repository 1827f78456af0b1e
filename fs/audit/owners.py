"""Who owns a file: a Python distribution, a Debian package, the baseline, or nobody.

Owners are strings: ``python:NAME`` (NAME canonicalised as PEP 503 says) for files listed
in a distribution's RECORD in the audited environment, ``deb:NAME`` for files in dpkg's
file lists. A path is looked up in this order:

1. a RECORD entry (pip-installed files, also inside Debian's trees);
2. the interpreter and its standard library (`BASELINE_PYTHON`), minus site directories;
3. dpkg's lists, read with merged-/usr spellings normalised (``/lib/x`` is ``/usr/lib/x``
   when ``/lib`` links to ``usr/lib``) and diversions applied (a diverted file belongs
   to the package whose list names it, at the path it was diverted to);
4. for an unlisted ``__pycache__/*.pyc``, the owner of its source;
5. nobody: the path is *unowned*.

The baseline is always allowed and never reported: `BASELINE_PYTHON`, the Debian
packages of priority ``required`` and what they depend on (Debian marks libc6 itself
``optional``: it is required only through the packages that need it).

Parsing is pure (text in, records out); `load_python_env` and `load_debian` do the I/O.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from packaging.utils import canonicalize_name

BASELINE_PYTHON = "python:<interpreter>"
_MERGED_USR_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


def python_owner(name: str) -> str:
    """The owner string of distribution `name`."""
    return f"python:{canonicalize_name(name)}"


# --- the audited Python environment -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Distribution:
    """One installed distribution, as the audited interpreter sees it."""

    name: str  # canonical
    version: str
    requires: tuple[str, ...]  # Requires-Dist lines
    files: tuple[str, ...] | None  # absolute paths from RECORD, None without a RECORD
    metadata_dir: str | None


@dataclass(frozen=True, slots=True)
class PythonEnv:
    """What `envdump` reports about an interpreter."""

    executable: str
    prefix: str
    base_prefix: str
    stdlib: tuple[str, ...]
    site_packages: tuple[str, ...]
    interpreter_files: tuple[str, ...]
    marker_environment: Mapping[str, str]
    distributions: Mapping[str, Distribution]  # canonical name -> first found on sys.path

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> PythonEnv:
        """Parse `envdump`'s output."""
        dists: dict[str, Distribution] = {}
        for d in data["distributions"]:  # type: ignore[attr-defined]
            name = canonicalize_name(d["name"])
            files = d["files"]
            dists.setdefault(
                name,
                Distribution(
                    name,
                    d["version"],
                    tuple(d["requires"]),
                    None if files is None else tuple(files),
                    d["metadata_dir"],
                ),
            )
        return cls(
            executable=str(data["executable"]),
            prefix=str(data["prefix"]),
            base_prefix=str(data["base_prefix"]),
            stdlib=tuple(data["stdlib"]),  # type: ignore[arg-type]
            site_packages=tuple(data["site_packages"]),  # type: ignore[arg-type]
            interpreter_files=tuple(data["interpreter_files"]),  # type: ignore[arg-type]
            marker_environment=dict(data["marker_environment"]),  # type: ignore[call-overload]
            distributions=dists,
        )


class EnvError(Exception):
    """The audited interpreter could not be inspected: one line for the user."""


def load_python_env(python: str) -> PythonEnv:
    """Run `envdump` in interpreter `python` (with this process's environment)."""
    source = Path(__file__).with_name("envdump.py").read_text()
    try:
        done = subprocess.run(
            [python, "-c", source], capture_output=True, text=True, check=False, timeout=120
        )
    except OSError as e:
        raise EnvError(f"cannot run {python}: {e.strerror}") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise EnvError(f"{python} cannot describe its environment: {last}")
    try:
        return PythonEnv.from_json(json.loads(done.stdout))
    except (KeyError, TypeError, ValueError):  # ran, said nothing sensible: no Python 3.8+
        raise EnvError(f"{python} cannot describe its environment: is it Python 3.8+?") from None


def python_files(env: PythonEnv) -> Iterator[tuple[str, str]]:
    """(path, owner) for every file a RECORD lists; metadata dirs for dists without one."""
    for dist in env.distributions.values():
        owner = python_owner(dist.name)
        if dist.files is not None:
            for path in dist.files:
                yield path, owner
        elif dist.metadata_dir is not None:
            yield dist.metadata_dir, owner
            for path in glob.glob(os.path.join(glob.escape(dist.metadata_dir), "*")):
                yield path, owner


# --- dpkg ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DebPackage:
    """One installed package from dpkg's status file."""

    name: str
    priority: str
    depends: tuple[tuple[str, ...], ...]  # each item: alternatives, any one satisfies
    provides: tuple[str, ...] = ()


def _base_name(dependency: str) -> str:
    # "libc6 (>= 2.34)" -> "libc6"; "python3:any" -> "python3"
    return dependency.split("(")[0].strip().split(":")[0]


def parse_dpkg_status(text: str) -> dict[str, DebPackage]:
    """The installed packages in the text of ``/var/lib/dpkg/status``."""
    packages: dict[str, DebPackage] = {}
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = ""
        for line in stanza.splitlines():
            if line[:1] in (" ", "\t"):
                if key:
                    fields[key] += " " + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        name = fields.get("Package")
        if not name or not fields.get("Status", "").endswith(" installed"):
            continue
        depends = []
        for field_name in ("Pre-Depends", "Depends"):
            for item in fields.get(field_name, "").split(","):
                if item.strip():
                    depends.append(tuple(_base_name(alt) for alt in item.split("|")))
        provides = tuple(_base_name(p) for p in fields.get("Provides", "").split(",") if p.strip())
        packages[name] = DebPackage(name, fields.get("Priority", ""), tuple(depends), provides)
    return packages


@dataclass(frozen=True, slots=True)
class Diversion:
    """``dpkg-divert``: `package` (None: the local admin) moved other packages' `path`."""

    path: str
    diverted_to: str
    package: str | None


def parse_diversions(text: str) -> dict[str, Diversion]:
    """The text of ``/var/lib/dpkg/diversions``: groups of three lines."""
    lines = text.splitlines()
    out = {}
    for i in range(0, len(lines) - 2, 3):
        path, to, package = lines[i : i + 3]
        out[path] = Diversion(path, to, None if package == ":" else package)
    return out


def merged_usr_aliases(root: str = "/") -> dict[str, str]:
    """Top-level directories that link into /usr: {"/lib": "/usr/lib", ...}."""
    aliases = {}
    for name in _MERGED_USR_DIRS:
        try:
            target = os.readlink(os.path.join(root, name))
        except OSError:
            continue
        target = os.path.normpath(os.path.join("/", target))
        if target.startswith("/usr/"):
            aliases["/" + name] = target
    return aliases


def normalise(path: str, aliases: Mapping[str, str]) -> str:
    """`path` with a merged-/usr alias of its first component replaced."""
    top, sep, rest = path[1:].partition("/")
    target = aliases.get("/" + top)
    return target + sep + rest if target else path


def package_name(list_file: str) -> str:
    """``libssl3:amd64.list`` -> ``libssl3``."""
    return os.path.basename(list_file).removesuffix(".list").split(":")[0]


def deb_files(
    lists: Iterable[tuple[str, Iterable[str]]],
    diversions: Mapping[str, Diversion],
    aliases: Mapping[str, str],
) -> Iterator[tuple[str, str]]:
    """(path, owner) from (package, listed paths) pairs, diversions applied."""
    for package, paths in lists:
        owner = f"deb:{package}"
        for raw in paths:
            if not raw or raw == "/.":
                continue
            diversion = diversions.get(raw)
            if diversion is not None and diversion.package != package:
                raw = diversion.diverted_to
            yield normalise(raw, aliases), owner


def deb_closure(roots: Iterable[str], packages: Mapping[str, DebPackage]) -> set[str]:
    """`roots` and the installed packages they depend on, recursively."""
    providers: dict[str, list[str]] = {}
    for package in packages.values():
        for virtual in package.provides:
            providers.setdefault(virtual, []).append(package.name)
    todo = list(roots)
    done: set[str] = set()
    while todo:
        name = todo.pop()
        if name in done:
            continue
        done.add(name)
        package = packages.get(name)
        if package is None:
            continue
        for alternatives in package.depends:
            for alt in alternatives:
                todo += [alt] if alt in packages else providers.get(alt, [])
    return done


@dataclass(frozen=True, slots=True)
class Debian:
    """What dpkg knows: installed packages and their files."""

    packages: Mapping[str, DebPackage]
    files: Sequence[tuple[str, str]]  # (normalised path, owner)


def load_debian(admin_dir: str = "/var/lib/dpkg", root: str = "/") -> Debian:
    """Read dpkg's database; an empty `Debian` where there is none."""
    try:
        status = Path(admin_dir, "status").read_text(errors="replace")
    except FileNotFoundError:
        return Debian({}, ())
    try:
        diversions = parse_diversions(Path(admin_dir, "diversions").read_text())
    except FileNotFoundError:
        diversions = {}

    def lists() -> Iterator[tuple[str, list[str]]]:
        for name in sorted(glob.glob(os.path.join(admin_dir, "info", "*.list"))):
            yield package_name(name), Path(name).read_text(errors="surrogateescape").splitlines()

    files = list(deb_files(lists(), diversions, merged_usr_aliases(root)))
    return Debian(parse_dpkg_status(status), files)


# --- the index ----------------------------------------------------------------------------


@dataclass(slots=True)
class Owners:
    """File -> owner for one audit.

    Args:
        files: path -> owner, RECORD entries taking precedence over dpkg's.
        stdlib: directories of the standard library (baseline).
        site_packages: site directories, which are never baseline even inside `stdlib`.
        interpreter_files: the interpreter's own files (baseline).
        baseline: owners always allowed and never reported.
    """

    files: dict[str, str]
    stdlib: tuple[str, ...] = ()
    site_packages: tuple[str, ...] = ()
    interpreter_files: frozenset[str] = frozenset()
    baseline: frozenset[str] = field(default_factory=frozenset)
    _stdlib: tuple[str, ...] = field(init=False, repr=False)  # with a trailing "/"
    _site: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._stdlib = tuple(d.rstrip("/") + "/" for d in self.stdlib)
        self._site = tuple(d.rstrip("/") + "/" for d in self.site_packages)

    @classmethod
    def build(cls, env: PythonEnv, debian: Debian) -> Owners:
        """The index of `env`'s distributions and `debian`'s packages."""
        files = dict(debian.files)
        required = [p.name for p in debian.packages.values() if p.priority == "required"]
        baseline = {f"deb:{name}" for name in deb_closure(required, debian.packages)}
        baseline.add(BASELINE_PYTHON)
        files.update(python_files(env))
        return cls(
            files,
            stdlib=env.stdlib,
            site_packages=env.site_packages,
            interpreter_files=frozenset(env.interpreter_files),
            baseline=frozenset(baseline),
        )

    def owner(self, path: str) -> str | None:
        """The owner of `path` (a normalised absolute path), None when unowned."""
        owner = self.files.get(path)
        if owner is not None and owner.startswith("python:"):
            return owner
        if path in self.interpreter_files or (
            path.startswith(self._stdlib) and not path.startswith(self._site)
        ):
            return BASELINE_PYTHON
        if owner is None:
            source = _pyc_source(path)
            if source is not None:
                return self.owner(source)
        return owner

    def hidden(self, allowed: frozenset[str], keep: Iterable[str]) -> frozenset[str]:
        """What ``--enforce`` hides: files whose owner is neither allowed nor baseline, and
        directories all of whose owned files are hidden.

        A directory's own dpkg entry says nothing (``/usr/lib`` is listed by hundreds of
        packages), so directories are judged by the files beneath them. `keep` (the
        watched trees) and their ancestors are never hidden.
        """
        allowed = allowed | self.baseline
        hidden_files = set()
        parents_hidden: set[str] = set()
        parents_allowed: set[str] = set()
        directories: set[str] = set()
        for path in self.files:
            _mark_ancestors(path, directories)
        for path in self.files:
            if path in directories:
                continue
            owner = self.owner(path)
            hide = owner is not None and owner not in allowed
            if hide:
                hidden_files.add(path)
            _mark_ancestors(path, parents_hidden if hide else parents_allowed)
        kept: set[str] = set()
        for path in keep:
            kept.add(path)
            _mark_ancestors(path, kept)
        return frozenset((hidden_files | (parents_hidden - parents_allowed)) - kept)


def _mark_ancestors(path: str, marks: set[str]) -> None:
    """Add the directories above `path` (not "/") to `marks`, stopping at a marked one."""
    parent = path.rpartition("/")[0]
    while parent and parent not in marks:
        marks.add(parent)
        parent = parent.rpartition("/")[0]


def _pyc_source(path: str) -> str | None:
    """``d/__pycache__/m.cpython-311.pyc`` -> ``d/m.py``: compiled after installation
    (Debian compiles at install time and lists no .pyc), it belongs to its source's owner."""
    directory, name = os.path.split(path)
    if os.path.basename(directory) != "__pycache__" or not name.endswith(".pyc"):
        return None
    module = name.split(".")[0]
    return os.path.join(os.path.dirname(directory), module + ".py")
