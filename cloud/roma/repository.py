"""The model repository on disk: ``{root}/{model}/{version}/`` with one model file, plus the
model's ``config.toml``. Versions are positive integers; the highest is served by default.

::

    repository/
    └── digits/
        ├── config.toml          SLA, runtimes, batch, cores, normalisation (cloud.roma.config)
        ├── 1/model.tflite
        └── 2/
            ├── model.tflite     a version installed from a ModelRef ...
            ├── model.keras
            ├── normalization.json   how its inputs are normalised (shipped with the model)
            └── ref.json         ... and the reference it came from

A version's ``normalization.json`` (``{"offset": [...], "scale": [...]}``, written from the
``ModelRef`` or by hand) overrides the ``[normalization]`` table of ``config.toml`` for that
version, so a rollback serves each version with its own statistics.

:meth:`ModelRepository.install` writes a new version into a hidden temporary directory and
renames it into place, so a reader never sees half a version.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from link import atomic_write_json

from .config import ModelConfig, Normalization, load_model_config
from .errors import ModelNotFound, RepositoryError
from .runtime import RUNTIME_SUFFIXES

__all__ = ["NORMALIZATION_FILE", "ModelRepository"]

NORMALIZATION_FILE = "normalization.json"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_name(name: str) -> str:
    """``name`` if it is a safe model name (letters, digits, ``.``, ``_``, ``-``; no leading
    dot), else :class:`ModelNotFound`."""
    if not _NAME.fullmatch(name) or ".." in name:
        raise ModelNotFound(f"no model named {name!r}")
    return name


class ModelRepository:
    def __init__(self, root: Path, *, default_config: ModelConfig | None = None) -> None:
        self.root = Path(root)
        self.default_config = default_config or ModelConfig()
        if not self.root.is_dir():
            raise RepositoryError(f"model repository {self.root} is not a directory")

    def models(self) -> list[str]:
        """Model names: sub-directories with a safe name."""
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _NAME.fullmatch(p.name))

    def versions(self, name: str) -> list[int]:
        """The model's versions on disk, ascending; :class:`ModelNotFound` if it has none."""
        folder = self.root / check_name(name)
        if not folder.is_dir():
            raise ModelNotFound(f"no model named {name!r} in the repository")
        return sorted(
            int(p.name)
            for p in folder.iterdir()
            if p.is_dir() and p.name.isascii() and p.name.isdigit()  # not '²': int() refuses it
        )

    def config(self, name: str) -> ModelConfig:
        return load_model_config(
            self.root / check_name(name) / "config.toml", default=self.default_config
        )

    def version_config(self, name: str, version: int) -> ModelConfig:
        """The model's config for ``version``: its ``config.toml`` with the version's own
        ``normalization.json`` in place of the ``[normalization]`` table when it has one.
        Raises :class:`RepositoryError` for a bad ``normalization.json``."""
        config = self.config(name)
        path = self.root / check_name(name) / str(version) / NORMALIZATION_FILE
        if not path.is_file():
            return config
        try:
            doc = json.loads(path.read_text())
            normalization = Normalization.model_validate(
                {k: doc.get(k) for k in ("offset", "scale") if isinstance(doc, dict) and k in doc}
            )
        except (OSError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
            raise RepositoryError(f"model {name!r} version {version}: {path.name}: {exc}") from exc
        return config.model_copy(update={"normalization": normalization})

    def model_file(self, name: str, version: int, runtimes: Sequence[str]) -> Path:
        """The version's model file for the first of ``runtimes`` it has. Raises
        :class:`ModelNotFound` for an unknown version and :class:`RepositoryError` when the
        version has no file for any of the runtimes."""
        folder = self.root / check_name(name) / str(version)
        if not folder.is_dir():
            raise ModelNotFound(f"model {name!r} has no version {version}")
        files = sorted(folder.iterdir())
        for runtime in runtimes:
            for path in files:
                if RUNTIME_SUFFIXES.get(path.suffix) == runtime and path.is_file():
                    return path
        raise RepositoryError(
            f"model {name!r} version {version} has no model file for {', '.join(runtimes)}"
            f" (found: {', '.join(p.name for p in files) or 'nothing'})"
        )

    def install(self, name: str, version: int, files: Mapping[str, Path], ref: Any) -> Path:
        """Move ``files`` (destination name → downloaded file) into ``{name}/{version}/`` with
        ``ref.json`` (``ref``: JSON-able), atomically; an existing version is replaced."""
        folder = self.root / check_name(name)
        folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=folder, prefix=f".{version}."))
        try:
            for dest, src in files.items():
                shutil.move(src, staging / dest)
            atomic_write_json(staging / "ref.json", ref)
            target = folder / str(version)
            if target.exists():
                old = folder / f".{version}.old"
                shutil.rmtree(old, ignore_errors=True)
                os.replace(target, old)
                os.replace(staging, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return target

    def staging_dir(self, name: str) -> Path:
        """A fresh hidden directory under the model's folder for downloads in progress."""
        folder = self.root / check_name(name)
        folder.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=folder, prefix=".download."))
