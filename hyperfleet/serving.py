"""``hyperfleet serve`` (ROMA until a signal) and ``hyperfleet loadgen`` (a load report)."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from cloud.roma import RomaRunner, ServeConfig, load_serve_config
from cloud.roma.loadgen import Step, load_samples, parse_steps, run_load

from .errors import UsageError
from .exits import EXIT_OK
from .output import dump_json
from .transport import tls_files

__all__ = ["LoadgenRun", "loadgen_settings", "run_loadgen", "run_serve", "serve_settings"]

_log = logging.getLogger("hyperfleet.serve")


def serve_settings(args: argparse.Namespace) -> ServeConfig:
    """The server's one settings object: the ``--config`` file, flags given on top.

    Raises:
        UsageError: ``--admin-token-file`` unreadable or empty, or it and ``--token`` both
            given; a TLS flag with a plain broker (see :func:`.transport.tls_files`).
        ServeConfigError: a bad config file or value.
    """
    token = args.token
    if args.admin_token_file is not None:
        if token is not None:
            raise UsageError("give --token or --admin-token-file, not both")
        try:
            token = Path(args.admin_token_file).read_text().strip()
        except OSError as exc:
            raise UsageError(f"--admin-token-file: {exc}") from exc
        if not token:
            raise UsageError(f"--admin-token-file {args.admin_token_file} is empty")
    tls = tls_files(args, args.broker)
    return load_serve_config(
        args.config,
        repository=args.repository,
        host=args.host,
        port=args.port,
        broker=args.broker,
        prefix=args.prefix,
        cores=args.cores,
        token=token,
        fake_gpu=args.fake_gpu or None,
        tls_ca=tls.ca_file if tls else None,
        tls_cert=tls.cert_file if tls else None,
        tls_key=tls.key_file if tls else None,
        verify_key=args.verify_key,
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


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadgenRun:
    url: str
    model: str
    version: str | None
    steps: tuple[Step, ...]
    samples: npt.NDArray[np.float32] | None
    rows: int
    binary: bool
    sla_ms: float | None
    seed: int
    out: Path | None


def loadgen_settings(args: argparse.Namespace) -> LoadgenRun:
    """``hyperfleet loadgen``'s settings; :class:`UsageError` for a bad pattern or numbers."""
    if (args.rate is None) == (args.steps is None):
        raise UsageError("give either --rate (with --duration) or --steps")
    try:
        steps = parse_steps(args.steps or f"{args.rate}:{args.duration}")
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if args.rows < 1:
        raise UsageError("--rows must be at least 1")
    if args.sla_ms is not None and not args.sla_ms > 0:
        raise UsageError("--sla-ms must be positive")
    samples = None if args.samples is None else load_samples(args.samples)
    return LoadgenRun(url=args.url, model=args.model, version=args.version, steps=steps,
                      samples=samples, rows=args.rows, binary=args.binary, sla_ms=args.sla_ms,
                      seed=args.seed, out=args.out)  # fmt: skip


async def run_loadgen(run: LoadgenRun) -> int:
    report = await run_load(
        run.url, model=run.model, version=run.version, steps=run.steps, samples=run.samples,
        rows=run.rows, binary=run.binary, sla_ms=run.sla_ms, seed=run.seed,
    )  # fmt: skip
    doc = report.to_json()
    if run.out is not None:
        dump_json(run.out, doc)
    summary = {k: v for k, v in doc.items() if k not in ("windows", "steps")}
    print(json.dumps(summary, indent=2), flush=True)
    return EXIT_OK
