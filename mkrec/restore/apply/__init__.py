"""Doing the restore: the confirmed Plan carried out as named, journaled steps that write the disks
(partition tables, RAID/LVM/LUKS, filesystems, data, fstab, boot loaders), so a rerun continues where
it stopped."""
