"""Burning a verified ISO volume onto a disc (xorriso), retrying on another blank disc."""

from __future__ import annotations

import logging
from pathlib import Path

from mkrec.backup.volumes import Ask
from mkrec.errors import CommandError, MkrecError
from mkrec.runner import run

log = logging.getLogger("mkrec.backup")

BURN_DEVICE = "/dev/sr0"


def burn_argv(iso: Path, device: str = BURN_DEVICE) -> list[str]:
    return ["xorriso", "-as", "cdrecord", "-v", f"dev={device}", "blank=as_needed", "-eject", str(iso)]


def burn(iso: Path, number: int, ask: Ask, device: str = BURN_DEVICE, attempts: int = 3) -> None:
    """Burn one verified volume; on failure ask for another blank disc and retry."""
    ask(f"Insert a blank disc for volume {number} into {device} and press Enter")
    for attempt in range(1, attempts + 1):
        try:
            run(burn_argv(iso, device))
            log.info("    volume %d burned", number)
            return
        except CommandError as exc:
            log.warning(
                "burning volume %d failed (attempt %d of %d): %s", number, attempt, attempts, exc.message
            )
            if attempt < attempts:
                ask(f"Insert another blank disc for volume {number} into {device} and press Enter")
    raise MkrecError(
        f"could not burn volume {number} ({iso.name}) after {attempts} attempts",
        hint=f"the image is complete in {iso.parent}; burn it later with xorriso or another tool",
    )
