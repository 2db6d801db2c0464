"""The README.txt written next to the layout: how a person reads and edits it."""

README = """\
mkrec recovery folder
=====================

This folder describes the disks of the system it was captured from. `mkrec restore` (start-restore,
clone-disk in the rescue system) reads it to rebuild partitions, RAID, LVM, LUKS and filesystems
before the files are restored. Look at it with:   mkrec layout show <this folder>

Files
-----
layout.toml          Everything: disks, partitions, RAID arrays, LVM, LUKS, filesystems, swap, fstab,
                     boot loader. Plain TOML text with comments; edit it with any editor.
sfdisk-<disk>.dump   The partition table exactly as `sfdisk --dump` printed it. To recreate a table by
                     hand:   sfdisk /dev/<disk> < sfdisk-<disk>.dump
mbr-<disk>.bin       The first 512 bytes of the disk (boot code and MBR table).
                     Boot code only:   dd if=mbr-<disk>.bin of=/dev/<disk> bs=440 count=1
                     (start-restore does this itself for extlinux when it holds syslinux's code)
gap-<disk>.bin       MBR disks: the sectors between the MBR and the first partition (where GRUB keeps
                     its core image).   dd if=gap-<disk>.bin of=/dev/<disk> bs=512 seek=1
biosboot-<part>.bin  GPT disks: the BIOS boot partition's content (GRUB's core image).
fatboot-<dev>.bin    The boot sector of each FAT filesystem (the EFI system partition).
vgcfg-<vg>.txt       Each LVM volume group's metadata as `vgcfgbackup` wrote it (LVM's own text
                     format). start-restore gives it back with pvcreate --restorefile and
                     vgcfgrestore, so the VG and LV UUIDs stay the same; when it no longer matches
                     layout.toml (an edit changed the VG), the VG is made from layout.toml instead,
                     with new VG and LV UUIDs. clone-disk always makes VGs anew (the sizes change).
fstab, hostname, date  Copies for the rescue system's welcome screen.
A disk marked readable = false could not be opened at capture time: its entry comes from lsblk, sysfs
and the mounted filesystems only, and it has no dump or boot sector files.

Reading layout.toml
-------------------
Each device has a name: the kernel's name at capture time without /dev/ ("sda", "sda1", "nvme0n1p2",
"md0"), "vg/lv" for a logical volume, and the mapping name for an opened LUKS container. Filesystems,
swap, LUKS containers, RAID members and LVM physical volumes refer to the device they live on by that
name. Sizes of disks, filesystems and logical volumes are in bytes; partition start and size are in
sectors of the disk's logical_sector size (512 or 4096), exactly as sfdisk uses them.

Editing
-------
- Restoring to a smaller disk: lower the size of the last partition (and of the filesystem's
  logical volume, if any). The filesystem must still hold the used bytes shown.
- A disk has a new name (sda is now vda): replace the name everywhere in layout.toml, partitions
  too ("sda1" -> "vda1"); or keep the file and give `--map sda=/dev/vda` to mkrec restore.
- Do not want a disk restored: delete its [[disk]] block and everything that refers to it.
- extlinux: the [[boot]] item's directory is where ldlinux.sys was ("/boot/extlinux"); the restore
  runs extlinux --install there. Change it if you moved the boot files.
- Keys you may leave out are optional; a missing key means "not known".
mkrec checks the file when it reads it. A mistake (overlapping partitions, a partition past the end of
the disk, an unknown filesystem type, a name that does not exist) is reported as one line naming the
file, the item and the problem; nothing is written to a disk until the file is valid.
"""
