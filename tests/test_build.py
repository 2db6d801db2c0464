"""The build pipeline's own decisions (the stages are tested in their own files)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mkrec.build import build
from mkrec.config import config_from_dict
from mkrec.context import Context
from mkrec.errors import MkrecError


def test_path_mode_refuses_the_output_directory_as_path(tmp_path: Path) -> None:
    # Both set directories are replaced whole when complete: sharing one would lose a set.
    cfg = config_from_dict(
        {"build": {"mode": "path", "output": str(tmp_path)}, "path": {"dir": str(tmp_path / ".")}}
    )
    with pytest.raises(MkrecError, match=r"\[path\] dir and \[build\] output are the same directory"):
        build(Context(cfg, staging=tmp_path / "isofs"))
    assert not (tmp_path / "isofs").exists()  # refused before any stage ran
