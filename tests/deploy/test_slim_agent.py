"""The slim agent image installs only ``hyperfleet[edge]`` (docker/Dockerfile.agent). This checks
that the agent's whole start-up path, the CLI included, imports nothing outside what that extra
brings: every third-party module it loads belongs to a distribution in the closure of
``hyperfleet[edge]``'s requirements, and none of TensorFlow, Keras, Spark or scikit-learn.
(Run by hand on a fresh ``pip install .[edge]`` venv, the agent also connected and announced itself over a
real Mosquitto; this test keeps that true without building the venv each time.)"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
OURS = {"protocol", "link", "agent", "coordinator", "cloud", "hyperfleet", "firmware_configs"}

_PROBE = """
import json, sys
from importlib import metadata
from hyperfleet.cli import build_parser
build_parser()
import hyperfleet.commands, agent.app, agent.daemon, agent.numpy_trainer
owners = metadata.packages_distributions()
stdlib = set(sys.stdlib_module_names)
loaded = {m.split(".")[0] for m in list(sys.modules)}
third = sorted(m for m in loaded if m not in stdlib and not m.startswith("_") and m in owners)
print(json.dumps({m: owners[m] for m in third}))
"""


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(root: str, extras: set[str]) -> set[str]:
    """Distributions ``root[extras]`` pulls in, transitively. A dependency counts with all of its
    own extras: libraries import their optional speed-ups when present (aiohttp imports brotli),
    and a slim install simply runs without them."""
    seen: set[str] = set()
    todo: list[tuple[str, set[str]]] = [(root, extras)]
    while todo:
        name, wanted = todo.pop()
        for text in metadata.requires(name) or []:
            req = Requirement(text)
            envs = [{"extra": e} for e in wanted] or [{"extra": ""}]
            if req.marker is not None and not any(req.marker.evaluate(env) for env in envs):
                continue
            dist = _canonical(req.name)
            if dist in seen:
                continue
            seen.add(dist)
            try:
                provided = set(metadata.metadata(req.name).get_all("Provides-Extra") or [])
            except metadata.PackageNotFoundError:
                continue  # an optional dependency not installed here
            todo.append((req.name, provided))
    return seen


def test_the_agent_starts_on_the_edge_extra_alone() -> None:
    proc = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded: dict[str, list[str]] = json.loads(proc.stdout)
    edge = _closure("hyperfleet", {"edge"}) | {"hyperfleet"}
    outside = {module: dists for module, dists in loaded.items() if module not in OURS
               and not {_canonical(d) for d in dists} & edge}  # fmt: skip
    assert not outside, f"the agent imports modules [edge] does not install: {outside}"
    for heavy in ("tensorflow", "keras", "pyspark", "sklearn", "pandas"):
        assert heavy not in loaded, heavy
    assert "numpy" in loaded  # the probe saw the real path
    assert "aiomqtt" in loaded
