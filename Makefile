# mkrec — bare-metal disaster recovery.
#   make            set up, preflight, build the rescue disc and backup from Config.toml
#   make test       the preflight only (PASS/WARN/FAIL per check, with the fix)
#   make check      set up, then the whole test suite
#   make deps       Debian packages + .venv (a quick no-op when everything is there)
#   make drill      restore the newest set into a virtual machine and boot it: PASS/FAIL (SET=DIR)
# Overrides: make CONFIG=other.toml MODE=rescue|cd|path|tape

CONFIG ?= Config.toml
MODE   ?=
SET    ?=
PYTHON ?= python3
VENV   := .venv
MKREC  := $(VENV)/bin/mkrec
PYTEST_ARGS ?=

# Where the real-system matrix caches its debootstrapped roots (tests/realsys/rootfs.py reads it too).
MKREC_TEST_CACHE ?= /var/cache/mkrec-tests
CELLS ?=

.PHONY: all deps debs apt test check check-restic-vm clean drill matrix clean-cache

all: deps
	$(MKREC) --config $(CONFIG) preflight
	$(MKREC) --config $(CONFIG) build --menu $(if $(MODE),--mode $(MODE))

deps: debs $(VENV)/.installed

# The Debian packages are those of mkrec's one tool table (mkrec/tools.py), read with the system's
# python3 and the standard library only (-S: no site packages), before the venv exists; so python3
# itself comes first. Install only what is missing: a second run costs a few dpkg-query calls.
debs:
	@command -v $(PYTHON) >/dev/null || $(MAKE) -s apt PKGS=python3
	@pkgs="$$($(PYTHON) -S -m mkrec.tools packages)" && $(MAKE) -s apt PKGS="$$pkgs"

apt:
	@missing=""; for p in $(PKGS); do \
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
check: deps
	@$(VENV)/bin/python -m pytest --durations=12 $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make check: no tests ran" >&2; exit 1; fi; exit $$rc

# Rehearse a restore in a virtual machine: the newest set of this host, or SET=DIR.
# Mode restic end to end under QEMU alone (rescue disc restores from a REST repository over QEMU's user
# network, the restored disk boots; part of make check too): ~2 min under TCG, ~6 min on a busy machine.
check-restic-vm: deps
	$(VENV)/bin/python -m pytest -q tests/test_restic_vm.py

drill: deps
	$(MKREC) --config $(CONFIG) drill $(SET)

# make matrix [CELLS='bios-gpt-* uefi-*-lvm-same']: table + JSON (in $$MKREC_MATRIX_DIR, default
# /var/tmp/mkrec-matrix); exit 0 only when every selected cell passed.
matrix: deps
	MKREC_TEST_CACHE=$(MKREC_TEST_CACHE) PYTHONPATH=tests $(VENV)/bin/python -m realsys.matrix $(CELLS)

# The debootstrapped roots of the matrix (a few hundred MB each).
clean-cache:
	rm -rf $(MKREC_TEST_CACHE)/realsys

clean:
	rm -rf isofs/*/ isofs/*.img .pytest_cache .mypy_cache .ruff_cache
