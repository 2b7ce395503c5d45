"""Exit statuses of ``hyperfleet``, and the one table that maps errors to them.

::

    0   EXIT_OK            the command did what it was asked
    1   EXIT_FAILED        it could not: a broker, a device, the wire, a data file, the disk
    2   EXIT_NOT_REACHED   a job ran to its end without reaching its target
    64  EXIT_USAGE         the user asked for something wrong: a flag, a job file, a device class
                           or fleet file; nothing was run (EX_USAGE of sysexits.h)

Usage errors are the ones the user fixes by changing what they typed or wrote: bad flags
(:class:`~hyperfleet.errors.UsageError`, argparse's own), bad job files
(:class:`~coordinator.errors.JobConfigError`), bad device class or fleet files
(:class:`~agent.errors.ConfigError`). Everything else a package raises by design is a failure,
``ProtocolError`` included (a malformed frame or shard is not the user's typing). An error no
row of :data:`EXIT_STATUSES` names is a bug: :func:`exit_status` returns ``None`` and the CLI
lets it propagate with its traceback.
"""

from __future__ import annotations

from collections.abc import Mapping

from agent.errors import AgentError, ConfigError
from cloud.dynaspark import DynaSparkError
from cloud.pipelines import PipelineError
from cloud.roma import RomaError, ServeConfigError
from coordinator.errors import CoordinatorError, JobConfigError
from link import LinkError
from protocol import ProtocolError

from .errors import HyperfleetError, UsageError

__all__ = [
    "EXIT_FAILED",
    "EXIT_NOT_REACHED",
    "EXIT_OK",
    "EXIT_STATUSES",
    "EXIT_USAGE",
    "exit_status",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_NOT_REACHED = 2
EXIT_USAGE = 64

EXIT_STATUSES: Mapping[type[BaseException], int] = {
    # Usage: what the user typed or wrote. Listed before their roots, which are failures.
    UsageError: EXIT_USAGE,
    JobConfigError: EXIT_USAGE,
    ConfigError: EXIT_USAGE,
    ServeConfigError: EXIT_USAGE,
    # Failures: each package's root, the wire, the operating system.
    HyperfleetError: EXIT_FAILED,
    AgentError: EXIT_FAILED,
    CoordinatorError: EXIT_FAILED,
    PipelineError: EXIT_FAILED,
    RomaError: EXIT_FAILED,
    DynaSparkError: EXIT_FAILED,
    ProtocolError: EXIT_FAILED,
    LinkError: EXIT_FAILED,
    OSError: EXIT_FAILED,
}
"""Error type -> exit status. The most specific class in an error's MRO decides."""


def exit_status(exc: BaseException) -> int | None:
    """The exit status for ``exc``, or ``None`` when it is not a classified error.

    The error's own class is looked up first, then its bases in method resolution order, so a
    ``JobConfigError`` (a ``CoordinatorError`` and a ``ValueError``) is a usage error while
    another ``CoordinatorError`` is a failure, and a bare ``ValueError`` is unclassified.
    """
    for cls in type(exc).__mro__:
        status = EXIT_STATUSES.get(cls)
        if status is not None:
            return status
    return None
