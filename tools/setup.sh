#!/usr/bin/env bash
# Install what uvfs needs on Debian, idempotently: the apt packages that are missing, then a
# .venv holding the project and its test and benchmark extras. Safe to run any number of times.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  fuse3 libfuse3-dev pkg-config       # the kernel interface and what pyfuse3 builds against
  python3 python3-dev python3-venv gcc  # building pyfuse3 from source
  e2fsprogs fuse2fs                   # mke2fs -d, e2fsck, debugfs; fuse2fs to compare with
  zfs-fuse                            # zpool/zfs to build test pools, and the peer to compare
  gdisk fdisk bzip2 util-linux        # sgdisk and sfdisk disks, test data, unshare/mount, losetup
  qemu-utils                          # qemu-img and qemu-io make the qcow2 test images
  zip                                 # the tutorial's zip driver is tested on a zip(1) archive
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "setup: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
    sudo="sudo"
  fi
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Normal users mount through /dev/fuse, which stock Debian creates read-write for all
# (crw-rw-rw-); some containers create it root-only. Restore the stock mode.
if [ "$(id -u)" -eq 0 ] && [ -c /dev/fuse ] && [ "$(stat -c %a /dev/fuse)" != 666 ]; then
  chmod 0666 /dev/fuse
fi

# zfs-fuse's package starts its daemon; tests start their own, so leave none running.
if pgrep -x zfs-fuse >/dev/null && [ -f /etc/init.d/zfs-fuse ] && [ "$(id -u)" -eq 0 ]; then
  /etc/init.d/zfs-fuse stop >/dev/null 2>&1 || true
fi

stamp=.venv/.installed
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# Installed again when pyproject.toml or a C extension's source changed since.
if [ ! -f "$stamp" ] || [ -n "$(find pyproject.toml fs -newer "$stamp" \( -name pyproject.toml -o -name '*.c' \) | head -1)" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test,bench]'
  touch "$stamp"
fi
