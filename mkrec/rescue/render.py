"""Jinja2 for every text the rescue system carries: one environment, StrictUndefined, so a missing
variable is an error at build time and never an empty string on the disc. Every template may list
the restore commands (`restore_actions`, the table in mkrec.restore.actions)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import jinja2

from mkrec.restore.actions import ACTIONS


def render(templates_dir: Path, template: str, /, **values: Any) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # shell scripts and boot configs, not HTML
    )
    env.globals["restore_actions"] = ACTIONS
    env.filters["shquote"] = shlex.quote
    return env.get_template(template).render(**values)
