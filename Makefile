# mkrec — bare-metal disaster recovery.
#   make            set up, preflight, build the rescue disc and backup from Config.toml
#   make test       the preflight only (PASS/WARN/FAIL per check, with the fix)
#   make check      set up, then the whole test suite
#   make deps       Debian packages + .venv (a quick no-op when everything is there)
#   make drill      restore the newest set into a virtual machine and boot it: PASS/FAIL (SET=DIR)
#   make install    system-wide: venv in /opt/mkrec, /usr/local/sbin/mkrec, /etc/mkrec/Config.toml,
#                   mkrec-backup.service + .timer, mkrec(8), bash completion (DESTDIR, PREFIX honoured)
#   make uninstall  removes all that but /etc/mkrec/Config.toml and the sets
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

.PHONY: all deps debs apt test check check-restic-vm clean drill matrix clean-cache install uninstall

# make install: where things go. The venv is built in $(DESTDIR)$(INSTALL_VENV) but its scripts name
# $(INSTALL_VENV), so a DESTDIR tree can be packaged or copied to / as it is.
DESTDIR      ?=
PREFIX       ?= /usr/local
SYSCONFDIR   ?= /etc
INSTALL_VENV ?= /opt/mkrec
SBINDIR      := $(PREFIX)/sbin
MANDIR       := $(PREFIX)/share/man
DOCDIR       := $(PREFIX)/share/doc/mkrec
UNITDIR      ?= $(PREFIX)/lib/systemd/system
BASHCOMPDIR  ?= $(PREFIX)/share/bash-completion/completions
GEN          := build/install
SUBST        := sed -e 's|@SBINDIR@|$(SBINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g'

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

# The wheel of this tree (not editable: the installed mkrec must not depend on the checkout), its
# runtime dependencies, templates/ and utilities/ in <venv>/share/mkrec where mkrec.context finds
# them; the manual page and the completion generated from the argparse parser by the dev venv.
install: deps
	rm -rf $(GEN) && mkdir -p $(GEN)
	$(VENV)/bin/pip wheel -q --no-deps -w $(GEN) .
	$(VENV)/bin/argparse-manpage --module mkrec.cli --function build_parser --prog mkrec \
	  --project-name mkrec --manual-section 8 --manual-title "System Administration" \
	  --version "$$($(MKREC) --version | cut -d' ' -f2)" --include dist/mkrec.8.include \
	  --description "bare-metal disaster recovery for Linux" --output $(GEN)/mkrec.8
	$(VENV)/bin/shtab --shell=bash --prog mkrec mkrec.cli.build_parser > $(GEN)/mkrec.bash
	$(PYTHON) -m venv $(DESTDIR)$(INSTALL_VENV)
	$(DESTDIR)$(INSTALL_VENV)/bin/python -m pip install -q $(GEN)/mkrec-*.whl
	$(DESTDIR)$(INSTALL_VENV)/bin/python -m pip install -q --force-reinstall --no-deps $(GEN)/mkrec-*.whl
	@if [ -n "$(DESTDIR)" ]; then \
	  for f in $(DESTDIR)$(INSTALL_VENV)/bin/* $(DESTDIR)$(INSTALL_VENV)/pyvenv.cfg; do \
	    [ -L "$$f" ] || ! grep -qI '$(DESTDIR)' "$$f" || sed -i 's|$(DESTDIR)||g' "$$f"; \
	  done; \
	fi
	rm -rf $(DESTDIR)$(INSTALL_VENV)/share/mkrec
	install -d -m 755 $(DESTDIR)$(INSTALL_VENV)/share/mkrec
	cp -r templates utilities $(DESTDIR)$(INSTALL_VENV)/share/mkrec/
	install -d -m 755 $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(UNITDIR) \
	  $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(DOCDIR)
	ln -sfn $(INSTALL_VENV)/bin/mkrec $(DESTDIR)$(SBINDIR)/mkrec
	install -m 644 $(GEN)/mkrec.8 $(DESTDIR)$(MANDIR)/man8/mkrec.8
	install -m 644 $(GEN)/mkrec.bash $(DESTDIR)$(BASHCOMPDIR)/mkrec
	for f in mkrec-backup.service mkrec-backup.timer; do \
	  $(SUBST) dist/$$f > $(GEN)/$$f && install -m 644 $(GEN)/$$f $(DESTDIR)$(UNITDIR)/$$f || exit 1; \
	done
	$(SUBST) dist/mkrec.cron > $(GEN)/mkrec.cron && install -m 644 $(GEN)/mkrec.cron $(DESTDIR)$(DOCDIR)/mkrec.cron
	install -d -m 700 $(DESTDIR)$(SYSCONFDIR)/mkrec
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/mkrec/Config.toml ]; then \
	  echo "make install: kept $(DESTDIR)$(SYSCONFDIR)/mkrec/Config.toml (the shipped one: $(DOCDIR)/Config.toml)"; \
	else install -m 600 Config.toml $(DESTDIR)$(SYSCONFDIR)/mkrec/Config.toml; fi
	install -m 644 Config.toml $(DESTDIR)$(DOCDIR)/Config.toml
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
	@echo "make install: done. Weekly backups: systemctl enable --now mkrec-backup.timer"

uninstall:
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then \
	  systemctl disable --now mkrec-backup.timer 2>/dev/null || true; fi
	rm -f $(DESTDIR)$(SBINDIR)/mkrec $(DESTDIR)$(MANDIR)/man8/mkrec.8 $(DESTDIR)$(BASHCOMPDIR)/mkrec \
	  $(DESTDIR)$(UNITDIR)/mkrec-backup.service $(DESTDIR)$(UNITDIR)/mkrec-backup.timer
	rm -rf $(DESTDIR)$(INSTALL_VENV) $(DESTDIR)$(DOCDIR)
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
	@echo "make uninstall: done; kept $(DESTDIR)$(SYSCONFDIR)/mkrec/Config.toml and the sets"

clean:
	rm -rf isofs/*/ isofs/*.img .pytest_cache .mypy_cache .ruff_cache $(GEN)
