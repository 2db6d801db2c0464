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


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"build": {"mode": "path"}}, "mode path needs [path] dir"),
        ({"build": {"mode": "cd"}, "media": {"size": "64M"}}, "so volume 1 has no room for backup data"),
    ],
)
def test_config_level_requirements_stop_the_build_before_any_work(
    tmp_path: Path, sections: dict[str, dict[str, object]], message: str
) -> None:
    """Issue 15: these were found only after the layout was captured and the rescue disc built."""
    data = {**sections, "build": {**sections["build"], "output": str(tmp_path / "out")}}
    with pytest.raises(MkrecError) as caught:
        build(Context(config_from_dict(data), staging=tmp_path / "isofs"))
    assert message in caught.value.message
    assert not (tmp_path / "isofs").exists() and not (tmp_path / "out").exists()
