"""Crash isolation: a driver served from a process of its own, restarted when it dies.

Because the driver API carries only plain data, the same driver runs in the broker's process
or behind a socket without a change. The parent holds an `isolated` filesystem: a proxy that
implements exactly the operations the real filesystem implements, each one a message to the
child. The child opens the images itself (so it holds their locks), opens the driver, and
answers requests concurrently, each in a task of its own (but one that changes nothing,
come while none is being answered: the receiving task answers it), replies tagged with the
request's id.

Wire format: frames of a 4-byte big-endian length and a pickle. Parent to child:
``("open", driver, sources, options)`` once, then ``(id, operation, args, slot)``; child to
parent: ``("ready", root, operations, warnings)`` or ``("refused", message)``, then
``("ok", value)``, ``("attr", *fields)``, ``("entries", [(name, *fields), ...])``,
``("slot", length)``, ``("error", errno, message)`` or ``("bug", traceback)``, each after
the request's id. Pickle is safe here: both ends are this program, started by the same
user, over a private socketpair. An `Attr` (a reply to lookup, getattr, setattr ...) and a
listing cross as plain tuples, rebuilt with ``tuple.__new__``: pickle reduces a NamedTuple
through ``__reduce_ex__`` and ``__getnewargs__``, 3 us an entry, a tenth of that as tuples.

Read data crosses in shared memory: pickling a 1 MiB reply, sending it through the socket,
receiving and unpickling it copied it four times (0.9 ms of the child's CPU and 0.35 ms of
the parent's per MiB, where the read itself costs 0.06 ms). The parent maps `SLOTS` slots
of `SLOT_SIZE` bytes (a memfd it shares with the child) and gives a read a free slot; the
child copies the data there and replies ``("slot", length)``, and the parent's reader copies
it out and frees the slot, all before the caller wakes. A slot whose request was abandoned
(cancelled) stays taken until its reply comes, so the child never writes into a slot given
to another request. A read larger than a slot, or with every slot taken, is answered inline.

Reads by layout: on a read-only mount of a driver that has `read_layout`, the parent opens
the sources too (shared locks, as the child's) and reads file data from them where the
driver's layouts place it (`uvfs._layout`): the child is asked once per 64 MiB window of a
file, not once per read (a cold random 4 KiB read cost twice its in-process time, the round
trip being most of it). A restart drops the layouts; the new process is asked again.

Restarts. When the child dies (killed, a crash in a C library, out of memory: the child exits
on MemoryError, since a half-done change may have left the driver's state inconsistent), the
proxy waits for its exit (so its image locks are gone), starts a new one with the same driver
spec, sources and options, and goes on. A restart of a writable mount opens with ``force``:
the in-use mark on the image (ext2's "not clean") is the dead process's own, and it stays
after the unmount, as after any crash, so the next writable mount asks for a check. While no
process serves, requests wait; the broker's caches answer what they hold.

* Requests in flight when the child died: those that change nothing (`_REPEATABLE`, and an
  open that does not truncate) are sent once more to the new process; a second death fails
  them with EIO. Every other one fails with EIO at once: it may or may not have happened,
  and it is never repeated. A request not yet sent simply goes to the new process.
* Open files: the proxy gives the broker handles of its own, each remembering the node,
  flags, caller and process of the driver's handle. A handle of a dead process is opened
  again on the new one (without O_TRUNC, O_CREAT, O_EXCL) when it is next used; its release
  needs no call, as the process that held it is gone.
* Inode numbers must mean the same node in the new process: the kernel and the broker hold
  them across the restart. Drivers with on-disk numbers (ext2, ZFS) qualify; a driver whose
  numbers exist only in its memory (a table filled by lookups) sees requests for numbers it
  never handed out, which fail (ESTALE, ENOENT) until the kernel looks the names up again.
* Writes: what the driver had written back (fsync, its own flushes) is on the image and the
  new process reads it; what it held in memory is lost. So that no cache shows it, a
  writable proxy's restart awaits the `on_restart` callbacks (the mount's drops the broker's
  caches and the kernel's data, attributes and entries), given the names changed since the
  driver's last `sync` (at most `UNSYNCED_NAMES_MAX`, the oldest forgotten first). So that
  no fsync vouches for lost writes, the next fsync of an open file written through since
  its last fsync, in a process that died, fails with EIO, once (as Linux reports a failed
  write-back). Unlinked files still open when it died are left for fsck.
* Hangs: a process alive but not answering (stopped, in a loop, deadlocked) is killed once
  a request has waited `DEFAULT_TIMEOUT` seconds (``-o driver_timeout=SECS``), checked a few
  times per timeout; then it is a death like any other. The unmount's ``close`` has no
  limit: its write-back takes what it takes.
* Bounds: more than `DEATHS_MAX` deaths within `DEATHS_WINDOW` seconds (a driver that dies
  on every open, or while opening the images), or a restart the driver refuses, and the
  proxy gives up: one log line, then EIO for every request until the unmount.
"""

from uvfs._isolation.process import DEFAULT_TIMEOUT
from uvfs._isolation.proxy import DriverStatistics, driver_statistics, isolated, on_restart
from uvfs._isolation.wire import OPERATIONS

__all__ = [
    "DEFAULT_TIMEOUT",
    "OPERATIONS",
    "DriverStatistics",
    "driver_statistics",
    "isolated",
    "on_restart",
]
