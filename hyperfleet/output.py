"""Files the CLI writes for people and scripts to read (``outcome.json``, ``summary.json``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from link import atomic_write_text

__all__ = ["dump_json"]


def dump_json(path: Path, data: Any) -> None:
    """Write ``data`` as sorted, indented JSON, atomically (a reader never sees half a file)."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
