"""The benchmark suite: uvfs beside the kernel, fuse2fs and zfs-fuse, on the same images.

Run it as root with ``python -m tools.bench`` (``make bench``; ``--quick`` for a short run).
Modules, bottom up: ``_sizes`` (how big), ``_host`` (commands, page cache, mount table),
``_images`` (the cached tree, ext2 images and tar), ``_systems`` and ``_zfs`` (each system
as a mount that unmounts itself), ``_probe`` (one timed workload in a child process),
``_results`` (the cells and targets), ``_observe`` (a server's requests, CPU and peak RSS),
``_suite`` (what runs when), with the suites of their own: ``_framework`` (the null tree
of ``_null``, through uvfs and through ``_bare`` pyfuse3), ``_memory`` and ``_audit``;
``_floor`` (the write floor: the in-memory tree of ``_ramtree`` through ``_ramfs`` on uvfs
and ``_bare_ram`` pyfuse3, in the write suite; the two drivers share ``_driver``, the two
bare servers ``_serve``);
``_profile`` (py-spy of the uvfs server), ``_report`` (table, JSON, chart) and ``_cli``.
README.md gives the method and the reasons behind it.
"""
