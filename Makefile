# mkrec — bare-metal disaster recovery.
#   make            set up, preflight, build the rescue disc and backup from Config.toml
#   make test       the preflight only (PASS/WARN/FAIL per check, with the fix)
#   make check      set up, then the whole test suite
#   make deps       Debian packages + .venv (a quick no-op when everything is there)
# Overrides: make CONFIG=other.toml MODE=rescue|cd|path|tape

CONFIG ?= Config.toml
MODE   ?=
PYTHON ?= python3
VENV   := .venv
MKREC  := $(VENV)/bin/mkrec
PYTEST_ARGS ?=

# What the build, the rescue system and the tests use. Kept in one place: the preflight reads
# the tool -> package map from mkrec/tools.py, this list installs them.
DEBS := linux-image-amd64 kmod busybox-static cpio zstd tar file \
        isolinux syslinux syslinux-common extlinux grub-efi-amd64-bin grub-pc-bin grub-common grub2-common efibootmgr memtest86+ \
        mtools dosfstools e2fsprogs xfsprogs btrfs-progs util-linux fdisk gdisk parted \
        lvm2 mdadm cryptsetup acl attr partclone ntfs-3g \
        qemu-system-x86 ovmf xorriso genisoimage \
        python3 python3-venv

# The real-system matrix (tests/realsys) also debootstraps Debian roots.
MATRIX_DEBS := debootstrap
# Where those roots are cached (tests/realsys/rootfs.py reads the same variable).
MKREC_TEST_CACHE ?= /var/cache/mkrec-tests
CELLS ?=

.PHONY: all deps debs matrix-debs test check matrix clean clean-cache

all: deps
	$(MKREC) --config $(CONFIG) preflight
	$(MKREC) --config $(CONFIG) build --menu $(if $(MODE),--mode $(MODE))

deps: debs $(VENV)/.installed

# Install only what is missing, so a second run costs a few dpkg-query calls.
debs:
	@$(MAKE) --no-print-directory install-debs PACKAGES="$(DEBS)"

matrix-debs:
	@$(MAKE) --no-print-directory install-debs PACKAGES="$(MATRIX_DEBS)"

.PHONY: install-debs
install-debs:
	@missing=""; for p in $(PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "make deps: missing Debian packages:$$missing — run make as root" >&2; exit 1; fi; \
	  echo "make deps: installing$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -q && apt-get install -y -q --no-install-recommends $$missing; \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

test: deps
	$(MKREC) --config $(CONFIG) preflight

# pytest exits 5 when it collected nothing: that is a failure here, a green run must have tested.
check: deps matrix-debs
	@$(VENV)/bin/python -m pytest --durations=12 $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make check: no tests ran" >&2; exit 1; fi; exit $$rc

# make matrix [CELLS='bios-gpt-* uefi-*-lvm-same']: table + JSON (in $$MKREC_MATRIX_DIR, default
# /var/tmp/mkrec-matrix); exit 0 only when every selected cell passed.
matrix: deps matrix-debs
	MKREC_TEST_CACHE=$(MKREC_TEST_CACHE) PYTHONPATH=tests $(VENV)/bin/python -m realsys.matrix $(CELLS)

# The debootstrapped roots of the matrix (a few hundred MB each).
clean-cache:
	rm -rf $(MKREC_TEST_CACHE)/realsys

clean:
	rm -rf isofs/*/ isofs/*.img .pytest_cache .mypy_cache .ruff_cache
