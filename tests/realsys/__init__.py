"""Real Debian 12 test systems for the restore matrix (`make matrix`, tests/test_realsys.py):
debootstrapped roots (rootfs), installer-made disks (disks), QEMU runs of the source system, the
rescue disc and the restored disks (vm), and the runner that puts cells together (matrix)."""
