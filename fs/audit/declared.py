"""What a package declares: the owners a run may use, from metadata, files and flags.

Every source gives *roots*: Python requirements (``--dist NAME``, ``--pyproject FILE``,
``--requirements FILE``, ``--declare python:NAME``) and Debian packages (``--declare
deb:NAME``). The declared set is their closure in the audited environment, because a
declared dependency may use its own dependencies:

* Python: each installed distribution's Requires-Dist, markers evaluated for the *audited*
  interpreter (its marker environment, not uvfs's), extras followed: ``requests[socks]``
  adds the requirements whose marker holds for ``extra == "socks"``. A requirement that is
  not installed is still declared, but has nothing to follow;
* Debian: Pre-Depends and Depends of installed packages, every installed alternative of
  ``a | b`` and every installed provider of a virtual package.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from uvfs_fs.audit.owners import DebPackage, PythonEnv, deb_closure, python_owner

_DEB_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+")


class DeclarationError(Exception):
    """A declaration cannot be read: one line for the user."""


def parse_owner(text: str) -> str:
    """``--declare`` text -> an owner string (``python:NAME`` canonicalised, ``deb:NAME``)."""
    kind, sep, name = text.partition(":")
    if sep and kind == "python" and name:
        try:
            return python_owner(Requirement(name).name)
        except InvalidRequirement:
            pass
    elif sep and kind == "deb" and _DEB_NAME.fullmatch(name):
        return text
    raise DeclarationError(f"bad owner {text!r}: expected python:NAME or deb:NAME")


def _requirement(text: str, where: str) -> Requirement:
    try:
        return Requirement(text)
    except InvalidRequirement as e:
        raise DeclarationError(f"{where}: {e}") from None


def requirements_from_pyproject(text: str, where: str) -> list[Requirement]:
    """``[project].dependencies`` of a pyproject.toml's `text` (`where` names it in errors)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise DeclarationError(f"{where}: {e}") from None
    deps = data.get("project", {}).get("dependencies")
    if deps is None:
        raise DeclarationError(f"{where}: no [project] dependencies")
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise DeclarationError(f"{where}: [project] dependencies is not a list of strings")
    return [_requirement(d, where) for d in deps]


def requirements_from_file(path: str, _seen: frozenset[Path] = frozenset()) -> list[Requirement]:
    """The requirements of a pip requirements file, following ``-r`` includes.

    Constraints (``-c``) and index options are ignored: they allow nothing. Editable and
    URL-only lines name no distribution and are refused.
    """
    file = Path(path).resolve()
    if file in _seen:
        raise DeclarationError(f"{path}: includes itself")
    try:
        text = file.read_text()
    except OSError as e:
        raise DeclarationError(f"{path}: {e.strerror}") from None
    out: list[Requirement] = []
    for number, raw in _logical_lines(text):
        line = re.sub(r"(^|\s)#.*", "", raw).strip()
        where = f"{path}:{number}"
        if not line:
            continue
        option, _, value = line.partition(" ")
        if option in ("-r", "--requirement") or line.startswith("--requirement="):
            include = value.strip() or line.partition("=")[2]
            out += requirements_from_file(str(file.parent / include), _seen | {file})
        elif option in ("-e", "--editable"):
            raise DeclarationError(f"{where}: editable requirements name no distribution")
        elif line.startswith("-"):
            continue
        else:
            out.append(_requirement(line, where))
    return out


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(number of the first physical line, line) with backslash continuations joined."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        number, line = i + 1, lines[i]
        i += 1
        while line.endswith("\\") and i < len(lines):
            line = line[:-1] + lines[i]
            i += 1
        yield number, line


def _holds(req: Requirement, env: Mapping[str, str], extras: Iterable[str]) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({**env, "extra": e}) for e in ("", *extras))


def python_closure(roots: Iterable[Requirement], env: PythonEnv) -> set[str]:
    """Canonical names of `roots` and everything they require in `env`."""
    todo = [
        (canonicalize_name(r.name), frozenset(r.extras))
        for r in roots
        if _holds(r, env.marker_environment, ())
    ]
    done: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        if (name, extras) in done:
            continue
        done.add((name, extras))
        dist = env.distributions.get(name)
        if dist is None:
            continue
        for line in dist.requires:
            try:
                req = Requirement(line)
            except InvalidRequirement:  # broken installed metadata: nothing to follow
                continue
            if _holds(req, env.marker_environment, extras):
                todo.append((canonicalize_name(req.name), frozenset(req.extras)))
    return {name for name, _ in done}


def declared_owners(
    requirements: Iterable[Requirement],
    owners: Iterable[str],
    env: PythonEnv,
    packages: Mapping[str, DebPackage],
) -> frozenset[str]:
    """The owners declared by `requirements` and ``--declare`` `owners`, closures included."""
    requirements = list(requirements)
    debs = []
    for owner in owners:
        kind, _, name = owner.partition(":")
        if kind == "python":
            requirements.append(Requirement(name))
        else:
            debs.append(name)
    return frozenset(
        {python_owner(n) for n in python_closure(requirements, env)}
        | {f"deb:{n}" for n in deb_closure(debs, packages)}
    )


def dist_requirement(name: str, env: PythonEnv) -> Requirement:
    """``--dist NAME``: the distribution itself, which must be installed in `env`."""
    req = _requirement(name, "--dist")
    if canonicalize_name(req.name) not in env.distributions:
        raise DeclarationError(f"--dist {name}: not installed in {env.prefix}")
    return req
