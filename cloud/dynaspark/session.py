"""The Spark session dynaSpark runs a job in, and running an unmodified PySpark script in it.

The runner makes the session (master, a free UI port for the REST API, the job's conf) before
the script runs, so the script's own ``SparkSession.builder.getOrCreate()`` gets it, as under
``spark-submit``. The runner owns the session's lifetime: a ``stop()`` the script calls is held
back until the runner has read what it needs, then done.

Deadline control needs executor requests, which only cluster masters serve:
``local-cluster[N,cores,mem]`` (from the pip wheel), ``spark://`` (standalone) and ``k8s://``.
``local[N]`` and ``local`` run every task in the driver and ignore them
(:func:`deadline_control_available`).
"""

from __future__ import annotations

import contextlib
import os
import runpy
import socket
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import DynaSparkError

__all__ = [
    "DEFAULT_MASTER",
    "ScriptError",
    "deadline_control_available",
    "deferred_stop",
    "run_script",
    "start_session",
]

DEFAULT_MASTER = "local-cluster[2,1,1024]"


class ScriptError(DynaSparkError):
    """The job's script could not be found, or raised."""


def deadline_control_available(master: str) -> bool:
    """Whether ``master`` serves executor requests (``local[N]`` does not)."""
    return not (master == "local" or master.startswith("local["))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_session(
    master: str = DEFAULT_MASTER, *, app_name: str = "dynaspark", conf: Mapping[str, str] = {}
) -> Any:
    """A new ``SparkSession`` on ``master`` with its UI (and REST API) on a free port.
    ``PYSPARK_PYTHON`` defaults to this interpreter, ``SPARK_LOCAL_IP`` to 127.0.0.1."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession

    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.ui.enabled", "true")
        .config("spark.ui.port", str(_free_port()))
        .config("spark.ui.showConsoleProgress", "false")
    )
    for key, value in conf.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


@contextlib.contextmanager
def deferred_stop() -> Iterator[list[str]]:
    """Within the block, ``SparkSession.stop`` and ``SparkContext.stop`` only note that they
    were called (the yielded list); the runner stops the session itself afterwards."""
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    calls: list[str] = []
    saved = SparkSession.stop, SparkContext.stop

    def session_stop(self: Any) -> None:
        calls.append("SparkSession.stop")

    def context_stop(self: Any) -> None:
        calls.append("SparkContext.stop")

    SparkSession.stop = session_stop  # type: ignore[method-assign]
    SparkContext.stop = context_stop  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        SparkSession.stop, SparkContext.stop = saved  # type: ignore[method-assign]


def run_script(target: str, args: Sequence[str] = ()) -> None:
    """Run ``target`` (a ``.py`` path, or a module name) as ``__main__`` with ``args`` as its
    ``sys.argv[1:]``, as ``spark-submit`` would. Raises :class:`ScriptError` when it is not
    found or raises (the script's own exception is the cause); a ``SystemExit(0)`` is success."""
    path = Path(target)
    saved = sys.argv[:]
    sys.argv = [target, *args]
    try:
        if path.suffix == ".py":
            if not path.is_file():
                raise ScriptError(f"{target}: no such script")
            runpy.run_path(str(path), run_name="__main__")
        else:
            try:
                runpy.run_module(target, run_name="__main__", alter_sys=True)
            except ImportError as exc:
                raise ScriptError(f"{target}: no such module ({exc})") from exc
    except SystemExit as exc:
        if exc.code not in (None, 0):
            raise ScriptError(f"{target} exited with {exc.code}") from exc
    except ScriptError:
        raise
    except Exception as exc:
        raise ScriptError(f"{target} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        sys.argv = saved
