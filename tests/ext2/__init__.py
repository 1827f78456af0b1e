"""Tests of the ext2/ext3/ext4 driver (uvfs_fs.ext2)."""
