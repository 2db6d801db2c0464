"""The Context travels through every stage: the frozen Config plus run facts and derived paths."""

from __future__ import annotations

import socket
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from mkrec.config import Config

REPO_ROOT = Path(__file__).resolve().parent.parent
# Run from a checkout (or an editable install), templates/ and utilities/ sit next to the package
# and the staging tree is isofs/; `make install` puts them in <venv>/share/mkrec, and an installed
# mkrec stages in <output>/.staging (rebuilt on every run; hidden, so no host is named so).
FROM_CHECKOUT = (REPO_ROOT / "templates").is_dir()
DATA_ROOT = REPO_ROOT if FROM_CHECKOUT else Path(sys.prefix) / "share" / "mkrec"


@dataclass(frozen=True)
class Context:
    config: Config
    config_path: Path | None = None
    debug: bool = False
    started: datetime = field(default_factory=datetime.now)
    hostname: str = field(default_factory=socket.gethostname)
    staging: Path = None  # type: ignore[assignment]  # set in __post_init__: it depends on config

    def __post_init__(self) -> None:
        if self.staging is None:
            default = REPO_ROOT / "isofs" if FROM_CHECKOUT else self.config.build.output / ".staging"
            object.__setattr__(self, "staging", default)

    @property
    def templates_dir(self) -> Path:
        return DATA_ROOT / "templates"

    @property
    def utilities_dir(self) -> Path:
        return DATA_ROOT / "utilities"

    @property
    def set_name(self) -> str:
        """The backup set's name, used in file names and volume labels: CDrec-YYYYMMDD-HHMM."""
        return f"CDrec-{self.started:%Y%m%d-%H%M}"

    @property
    def set_dir(self) -> Path:
        """Where this run's set lands: <output>/<hostname>/<YYYYMMDD>/."""
        return self.config.build.output / self.hostname / f"{self.started:%Y%m%d}"

    @property
    def recovery_dir(self) -> Path:
        """etc/recovery/ in the staging tree: the captured layout the rescue system carries."""
        return self.staging / "etc" / "recovery"

    @property
    def log_file(self) -> Path:
        return self.config.build.output / "mkrec.log"
