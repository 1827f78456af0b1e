"""A scratch virtual environment with real packages installed by pip, shared by the audit tests."""

from __future__ import annotations

import subprocess
import sys
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
