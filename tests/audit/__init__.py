"""Tests of the dependency-audit overlay (uvfs_fs.audit)."""
