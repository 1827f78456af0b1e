"""Conformance runs (pjdfstest, fsx) against uvfs mounts; see README.md and __main__.py."""
