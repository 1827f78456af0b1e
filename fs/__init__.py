"""uvfs's bundled filesystem drivers (installed as `uvfs_fs`: `fs` is PyFilesystem2's name)."""
