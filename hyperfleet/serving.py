"""``hyperfleet serve``: settings from flags and ``--config``, then ROMA until a signal."""

from __future__ import annotations

import argparse
import logging

from cloud.roma import RomaRunner, ServeConfig, load_serve_config

from .exits import EXIT_OK

__all__ = ["run_serve", "serve_settings"]

_log = logging.getLogger("hyperfleet.serve")


def serve_settings(args: argparse.Namespace) -> ServeConfig:
    """The server's one settings object: the ``--config`` file, flags given on top."""
    return load_serve_config(
        args.config,
        repository=args.repository,
        host=args.host,
        port=args.port,
        broker=args.broker,
        prefix=args.prefix,
        cores=args.cores,
        token=args.token,
        fake_gpu=args.fake_gpu or None,
    )


async def run_serve(config: ServeConfig) -> int:
    async with RomaRunner(config) as runner:
        models = ", ".join(
            f"{name} v{e.served.version}" if e.served else f"{name} ({e.reason})"
            for name, e in sorted(runner.server.entries.items())
        )
        print(f"ROMA serving on {runner.url}: {models or 'no models yet'}", flush=True)
        await runner.wait()
    return EXIT_OK
