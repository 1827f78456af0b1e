"""The kit as a pytest module, one test per check: what ``python -m uvfs.testing`` runs."""

from __future__ import annotations

import pytest

from uvfs.testing import Check, params


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    readonly = bool(metafunc.config.getoption("uvfs_ro", None))
    metafunc.parametrize("check", params(readonly=readonly))


def test_check(check: Check, uvfs_run) -> None:
    uvfs_run(check)
