"""The ID maps the command's user namespace gets: the identity over the helper's own IDs."""

from __future__ import annotations

from uvfs_fs.audit.namespace import identity_map


def test_the_initial_namespace_maps_every_id() -> None:
    assert identity_map("         0          0 4294967295\n") == "0 0 4294967295\n"


def test_a_user_namespace_maps_what_it_has() -> None:
    own = "         0      65534          1\n      1000     100000      65536\n"
    assert identity_map(own) == "0 0 1\n1000 1000 65536\n"
