"""Run a command on a recording overlay; compare the files it uses with its declarations."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from uvfs_fs.audit import declared as decl
from uvfs_fs.audit.owners import EnvError, Owners, PythonEnv, load_debian, load_python_env
from uvfs_fs.audit.report import EXIT_UNDECLARED, build_report
from uvfs_fs.audit.runner import EXIT_SETUP_FAILED, RunError, run

EXIT_USAGE = 2


class UsageError(Exception):
    """A bad option: one line for the user."""


_EPILOG = """\
owners:
  python:NAME   a distribution of the audited environment (RECORD files)
  deb:NAME      a Debian package (dpkg file lists)
  baseline      the interpreter, its standard library and Debian packages of
                priority required: always allowed, never reported

exit status: the command's own; 3 with --strict when undeclared owners were found;
125 when the audit itself could not run; 2 on bad options.

examples:
  uvfs audit --dist mypkg -- python -c 'import mypkg'
  uvfs audit --requirements requirements.txt --enforce -- pytest -q tests/
  uvfs audit --declare deb:libyaml-0-2 --json report.json -- python -c 'import yaml'
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``uvfs audit``."""
    p = argparse.ArgumentParser(
        prog="uvfs audit",
        description=(
            "Run COMMAND with the watched trees replaced by a recording overlay, map every "
            "file it touched (and every lookup that found nothing) to the package owning "
            "it, and compare with what is declared."
        ),
        usage="%(prog)s [options] -- COMMAND [ARG...]",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    w = p.add_argument_group("what to watch")
    w.add_argument(
        "--watch",
        action="append",
        metavar="PATH",
        help="a tree to overlay (repeatable); default: the environment's prefix and "
        "site-packages, and /usr",
    )
    w.add_argument(
        "--python",
        metavar="PATH",
        help="the interpreter whose environment is audited; default: COMMAND itself when "
        "it is Python or a Python script, else python3 from PATH",
    )
    d = p.add_argument_group("what is declared")
    d.add_argument(
        "--dist",
        action="append",
        default=[],
        metavar="NAME",
        help="an installed distribution under audit: it and its Requires-Dist closure",
    )
    d.add_argument(
        "--pyproject",
        action="append",
        default=[],
        metavar="FILE",
        help="[project] dependencies of a pyproject.toml, and their closure",
    )
    d.add_argument(
        "--requirements",
        action="append",
        default=[],
        metavar="FILE",
        help="a pip requirements file, and its closure",
    )
    d.add_argument(
        "--declare",
        action="append",
        default=[],
        metavar="OWNER",
        help="an owner such as python:requests or deb:libssl3 (repeatable)",
    )
    b = p.add_argument_group("behaviour and output")
    b.add_argument(
        "--enforce",
        action="store_true",
        help="hide the files of undeclared owners (ENOENT, absent from listings)",
    )
    b.add_argument(
        "--writable",
        action="store_true",
        help="let the command write: changes go to a scratch layer (kernel overlayfs over "
        "the recording view), are recorded as writes and discarded; default: writes fail "
        "with EROFS (and are recorded)",
    )
    b.add_argument(
        "--strict", action="store_true", help="exit with 3 when undeclared owners were found"
    )
    b.add_argument("--json", metavar="FILE", help="write the report as JSON to FILE")
    b.add_argument("--quiet", action="store_true", help="print no table")
    p.add_argument("command", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return p


def guess_python(command: Sequence[str]) -> str:
    """The interpreter `command` will run: itself, its script's shebang, or python3."""
    exe = shutil.which(command[0])
    if exe is not None:
        if os.path.basename(exe).startswith("python"):
            return exe
        try:
            with open(exe, "rb") as f:
                first = f.readline(4096)
        except OSError:
            first = b""
        if first.startswith(b"#!"):
            words = first[2:].decode(errors="replace").split()
            if words and os.path.basename(words[0]) == "env":
                words = [w for w in words[1:] if not w.startswith("-")]
            if words and os.path.basename(words[0]).startswith("python"):
                return shutil.which(words[0]) or words[0]
    return shutil.which("python3") or sys.executable


def default_trees(env: PythonEnv) -> list[str]:
    """The prefix and site directories of `env`, and /usr, those that exist."""
    return [p for p in (env.prefix, *env.site_packages, "/usr") if os.path.isdir(p)]


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as e:
        raise decl.DeclarationError(f"{path}: {e.strerror}") from None


def _audit(args: argparse.Namespace, command: list[str]) -> int:
    # What can be checked without running anything first: bad input fails fast.
    if args.json and not os.path.isdir(os.path.dirname(os.path.abspath(args.json))):
        raise UsageError(f"--json {args.json}: no such directory")
    declared_owners = [decl.parse_owner(o) for o in args.declare]
    requirements = []
    for path in args.pyproject:
        requirements += decl.requirements_from_pyproject(_read(path), path)
    for path in args.requirements:
        requirements += decl.requirements_from_file(path)
    python = args.python or guess_python(command)
    env = load_python_env(python)
    requirements += [decl.dist_requirement(n, env) for n in args.dist]
    debian = load_debian()
    owners = Owners.build(env, debian)
    declared = decl.declared_owners(requirements, declared_owners, env, debian.packages)
    trees = args.watch or default_trees(env)
    watched = [os.path.realpath(t) for t in trees]
    hidden = owners.hidden(declared, keep=watched) if args.enforce else None
    result = run(command, python, trees, hidden, writable=args.writable)
    report = build_report(
        command, result.exit_status, result.record, owners, declared, watched, result.startup
    )
    if not args.quiet:
        sys.stderr.write(report.table())
    if args.json:
        try:
            Path(args.json).write_text(report.dumps())
        except OSError as e:
            raise RunError(f"--json {args.json}: {e.strerror}") from None
    if args.strict and report.undeclared:
        return EXIT_UNDECLARED
    return result.exit_status


def main(argv: list[str]) -> int:
    """``uvfs audit ARGS...``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.print_usage(sys.stderr)
        print("uvfs audit: no COMMAND given (put it after --)", file=sys.stderr)
        return EXIT_USAGE
    try:
        return _audit(args, command)
    except (UsageError, EnvError, decl.DeclarationError) as e:
        print(f"uvfs audit: {e}", file=sys.stderr)
        return EXIT_USAGE
    except RunError as e:
        print(f"uvfs audit: {e}", file=sys.stderr)
        return EXIT_SETUP_FAILED
