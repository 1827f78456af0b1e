"""The fuzzer's short seeded run: damaged metadata of real images never fails a driver.

150 mutated images per driver, walked in-process through the driver API (tools/fuzz): no
exception other than an errno, no answer FUSE cannot carry, no hang, no dead worker, no
write to the image; and a few mounted for real through FUSE. `make fuzz` runs 10,000.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.fuzz._corpus import CorpusError, default_workdir, seeds
from tools.fuzz._mount import mount_sample
from tools.fuzz._run import run

CASES = 150
SEED = 12  # fixed: a failure here reproduces with --seed 12 --first N --count 1


# The fuzzer's own seed store: built once per machine (zfs-fuse takes half a minute).
WORKDIR = default_workdir()


@pytest.fixture
def failures(tmp_path: Path) -> Path:
    return tmp_path / "failures"


@pytest.mark.parametrize("driver", ["ext2", "zfs"])
def test_seeded_run_finds_nothing(failures: Path, driver: str) -> None:
    try:
        seeds(driver, WORKDIR)
    except CorpusError as e:
        pytest.skip(str(e))
    summary = run(driver, CASES, SEED, WORKDIR, failures, jobs=2, timeout=30)
    assert summary.count == CASES
    assert dict(summary.failures) == {}, [str(p) for p in summary.saved]
    # Most damage leaves the image mountable: the walks really reach the parsers.
    assert summary.opened > CASES // 2


def test_mounted_sample_finds_nothing(failures: Path) -> None:
    summary = mount_sample("ext2", 3, SEED, WORKDIR, failures)
    assert (summary.count, summary.mounted) == (3, 3)
    assert dict(summary.failures) == {}
