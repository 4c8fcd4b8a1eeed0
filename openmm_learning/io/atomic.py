"""Files written whole or not at all: a temporary file beside the target, then a rename,
so an interrupted command never leaves a half file that a later run trusts."""

from __future__ import annotations

import json
from pathlib import Path


def write_text_atomic(path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def write_json_atomic(path, data, indent: int | None = 1) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=indent))
