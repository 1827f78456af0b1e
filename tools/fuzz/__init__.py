"""The fuzzer: damaged metadata of real images, read through a driver, must only ever answer.

``python -m tools.fuzz --driver ext2|zfs --count N --seed S`` (``make fuzz`` runs 10,000
images per driver). Theory of operation:

1. Seeds (`_corpus`): real images, built once: ext2/3/4 by mke2fs -d in several feature
   sets, ZFS pools by zfs-fuse, plus the shared pools of other implementations.
2. Targets (`_targets`): each seed is walked once through the driver, and every block it
   read other than file contents is noted, with the structures the walk does not read
   (bitmaps, the journal, every label and uberblock): those byte ranges are what gets
   damaged.
3. Cases (`_mutate`): case *i* of seed *S* is a function of (S, i) and the seed images:
   a burst of mutations on one or two regions, embedded checksums resealed, as patches.
4. Walks (`_walk`, `_worker`): worker processes patch a private copy of the seed, open it
   read-only through the driver API in-process (no FUSE: thousands of images a minute) and
   call every read operation on every reachable node. A failure is an exception other than
   an errno escaping a driver call, an answer pyfuse3 could not carry to the kernel, a
   case over the timeout (a hang: the worker is killed), a worker that dies, or any change
   to the image (sha256 before and after, and every write attempt).
5. Failures (`_run`) are saved with their damaged image and traceback, for ``--replay``;
   ``--mount N`` also mounts N cases through FUSE for real (`_mount`).
"""
