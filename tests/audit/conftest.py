"""Shared by the audit tests: a scratch venv with real packages, and a way to audit as nobody."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.audit.wheels import make_extension_wheel, make_wheel


@pytest.fixture(scope="session")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv without pip holding six (from PyPI), app-declared, app-undeclared, yamlver."""
    root = tmp_path_factory.mktemp("audit-env")
    wheels = root / "wheels"
    wheels.mkdir()
    uses_six = b"import six\n\nVERSION = six.__version__\n"
    make_wheel(wheels, "app-declared", {"app_declared.py": uses_six}, requires=["six>=1.10"])
    make_wheel(wheels, "app-undeclared", {"app_undeclared.py": uses_six})
    make_extension_wheel(wheels)
    env = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    subprocess.run(
        [
            sys.executable, "-m", "pip", "--python", str(env / "bin" / "python"),
            "install", "--quiet", "--disable-pip-version-check", "--find-links", str(wheels),
            "six", "app-declared", "app-undeclared", "yamlver",
        ],
        check=True,
    )  # fmt: skip
    return env


@pytest.fixture
def as_nobody() -> Iterator[list[str]]:
    """A command prefix running Debian's python3 as nobody, with this project importable."""
    if os.geteuid() != 0 or not Path("/usr/bin/python3").exists():
        pytest.skip("needs root (to become nobody) and /usr/bin/python3")
    with tempfile.TemporaryDirectory() as home:  # pytest's own are private to root
        os.chmod(home, 0o755)
        here = sysconfig.get_path("purelib")
        Path(home, "sitecustomize.py").write_text(f"import site\nsite.addsitedir({here!r})\n")
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        yield [*nobody, "env", f"PYTHONPATH={home}", f"HOME={home}", "/usr/bin/python3"]
