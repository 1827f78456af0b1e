#!/usr/bin/env bash
# The demo: build an ext2 image from the bundled sample tree, mount it with uvfs as it is,
# show what the kernel sees through it, and unmount.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
uvfs="$here/../../.venv/bin/uvfs"
work="$(mktemp -d /tmp/uvfs-demo.XXXXXX)"
mnt="$work/mnt"
cleanup() {
  if grep -qs " $mnt " /proc/mounts; then "$uvfs" umount "$mnt" || fusermount3 -uz "$mnt"; fi
  rm -rf "$work"
}
trap cleanup EXIT
mkdir "$mnt"

echo "== building sample.img from tools/demo/sample with mke2fs -d"
mke2fs -q -F -t ext2 -b 1024 -L uvfs-demo -d "$here/sample" "$work/sample.img" 4M
before=$(sha256sum < "$work/sample.img")
echo "== uvfs info sample.img"
"$uvfs" info "$work/sample.img" | head -n 12
echo "== uvfs mount -o ro sample.img $mnt"
"$uvfs" mount -o ro "$work/sample.img" "$mnt"
echo "== the tree, as the kernel sees it through uvfs"
(cd "$mnt" && { find . ! -type l -printf '%M %6s  %p\n'; find . -type l -printf '%M %6s  %p -> %l\n'; } | sort -k3)
echo "== cat docs/welcome.txt"
cat "$mnt/docs/welcome.txt"
echo "== uvfs stats"
"$uvfs" stats "$mnt"
echo "== uvfs umount"
"$uvfs" umount "$mnt"
if [ "$(sha256sum < "$work/sample.img")" = "$before" ]; then
  echo "done: the image's bytes are unchanged (sha256 ${before:0:16}...)"
else
  echo "demo: the image changed under a read-only mount" >&2
  exit 1
fi
