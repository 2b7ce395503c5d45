"""Files the CLI writes for people and scripts to read (``outcome.json``, ``summary.json``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["dump_json"]


def dump_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
