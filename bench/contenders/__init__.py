"""The contenders of ``bench/time_to_accuracy.py``, one module each, sharing
:mod:`bench.contenders.harness` (same model, data, emulated fleet, offline/failure semantics):

(a) :mod:`.hyperfl`, (b) :mod:`.fedavg_timeout`, (c) :mod:`.fedavg_deadline`, (d) :mod:`.oort`,
(e) :mod:`.fedbuff` (needs the engine's async mode), (f) :mod:`.flower`.
"""

from __future__ import annotations

from . import fedavg_deadline, fedavg_timeout, fedbuff, flower, hyperfl, oort
from .harness import Contender

__all__ = ["CONTENDERS", "contender"]

CONTENDERS: dict[str, Contender] = {
    m.name: m for m in (hyperfl, fedavg_timeout, fedavg_deadline, oort, fedbuff, flower)
}


def contender(name: str) -> Contender:
    """The contender called ``name``; ``KeyError`` naming the known ones otherwise."""
    try:
        return CONTENDERS[name]
    except KeyError:
        raise KeyError(f"unknown contender {name!r}; known: {', '.join(CONTENDERS)}") from None
