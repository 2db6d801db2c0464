"""Every restore run keeps its log on the restored disk: lines are held in memory until the target
root is mounted, then appended to <root>/var/log/mkrec-restore.log, which takes the rest of the run."""

from __future__ import annotations

import logging
from pathlib import Path

LOG_ON_DISK = Path("var/log/mkrec-restore.log")
FORMAT = "%(asctime)s %(levelname)-7s %(message)s"


class RunLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter(FORMAT))
        self.lines: list[str] = []
        self.file: Path | None = None

    def emit(self, record: logging.LogRecord) -> None:
        line = self.format(record) + "\n"
        if self.file is None:
            self.lines.append(line)
            return
        try:
            with open(self.file, "a") as fh:
                fh.write(line)
        except OSError:
            self.lines.append(line)

    def to_disk(self, root: Path) -> Path:
        path = root / LOG_ON_DISK
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as fh:
            fh.writelines(self.lines)
        path.chmod(0o600)
        self.lines.clear()
        self.file = path
        return path

    def detach(self) -> None:
        """The target is about to be unmounted: keep the last lines in memory."""
        self.file = None

    def __enter__(self) -> RunLog:
        logging.getLogger("mkrec").addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("mkrec").removeHandler(self)
