"""hyperfleet: the one CLI and the local-stack launcher (broker, demo).

Nobody imports this package (the import rule); its face is the command line, ``hyperfleet``.
"""

__all__: list[str] = []
