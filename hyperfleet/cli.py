"""The one CLI: ``hyperfleet broker | agent | agents | coordinator | demo | serve | loadgen | spark | watch | monitor | certs | acl``.

Each command builds its settings object here, from flags and ``HYPERFLEET_*`` environment
variables, configures logging, and hands over to library code that takes keyword arguments.
Every path flag is made absolute as it is parsed (:mod:`.flags`), so no relative path ever
reaches a subprocess, a generated config or another working directory. Errors of every package
are translated to one line on stderr and an exit status here, once, by :func:`.exits.exit_status`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from protocol import Topics, parse_broker_url

from .exits import EXIT_USAGE, exit_status
from .flags import absolute_path, broker_url, config_ref, port, topic_prefix
from .signals import run_until_signal
from .transport import add_tls_flags, add_verify_key_flag

__all__ = ["build_parser", "main"]

_log = logging.getLogger("hyperfleet")


class _Parser(argparse.ArgumentParser):
    """argparse whose bad flags exit 64 (usage), not 2, which means "target not reached"."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _env(name: str, default: str) -> str:
    return os.environ.get(f"HYPERFLEET_{name}", default)


def _common(p: argparse.ArgumentParser, *, broker: bool = True) -> None:
    if broker:
        p.add_argument(
            "--broker",
            type=broker_url,
            default=_env("BROKER", "mqtt://127.0.0.1:1883"),
            help="broker URL mqtt[s]://[user:pass@]host:port (env HYPERFLEET_BROKER, which keeps "
            "a password off the command line)",
        )
        add_tls_flags(p)
    p.add_argument(
        "--prefix",
        type=topic_prefix,
        default=_env("PREFIX", "hf/v1"),
        help="topic prefix (env HYPERFLEET_PREFIX)",
    )
    p.add_argument("--log-level", default=_env("LOG_LEVEL", "INFO"), help="DEBUG, INFO, WARNING")


def _dashboard_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dashboard",
        type=port,
        default=None,
        metavar="PORT",
        help="serve a live web dashboard (fleet, accuracy, plan) on PORT (0: a free one); off "
        "by default",
    )
    p.add_argument(
        "--dashboard-host",
        default="127.0.0.1",
        help="address the dashboard listens on (0.0.0.0 for all; it has no login)",
    )
    p.add_argument(
        "--roma-url",
        default=None,
        metavar="URL",
        help="a ROMA server (http://host:port) whose SLA stats the dashboard shows",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``hyperfleet`` parser; path flags come out absolute, broker URLs and prefixes checked."""
    parser = _Parser(prog="hyperfleet", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("broker", help="run an MQTT broker (Mosquitto if installed, else embedded)")
    p.add_argument("--port", type=port, default=1883, help="0 picks a free port")
    p.add_argument("--bind", default="127.0.0.1", help="address to listen on (0.0.0.0 for all)")
    p.add_argument("--embedded", action="store_true", help="use the embedded Python broker")
    p.add_argument(
        "--persist",
        type=absolute_path,
        default=None,
        metavar="DIR",
        help="keep retained messages (hello, job state, ModelRef) and sessions in DIR across "
        "restarts (Mosquitto only); without it a restarted broker forgets the newest model",
    )
    p.add_argument("--log-level", default=_env("LOG_LEVEL", "INFO"))

    p = sub.add_parser("agent", help="run an edge agent daemon")
    p.add_argument("--id", required=True, dest="agent_id", help="agent id (letters, digits, _.-)")
    p.add_argument("--data", required=True, type=absolute_path, help="this agent's shard (.npz)")
    p.add_argument(
        "--device-class",
        required=True,
        type=config_ref,
        help="name in firmware_configs/ or a .toml path",
    )
    p.add_argument("--runtime", choices=["auto", "keras", "numpy"], default="auto")
    p.add_argument("--heartbeat-s", type=float, default=5.0)
    p.add_argument("--emulate", action="store_true", help="behave like the device class says")
    p.add_argument("--time-scale", type=float, default=1.0, help="emulated durations x this")
    p.add_argument("--seed", type=int, default=0, help="emulation seed")
    p.add_argument(
        "--model-wire-bytes",
        type=int,
        default=None,
        help="with --emulate: the model size every emulated transfer counts, bytes "
        "(default: the real payload's)",
    )
    _common(p)

    p = sub.add_parser("agents", help="run every agent of a fleet file in one process")
    p.add_argument(
        "--fleet",
        required=True,
        type=config_ref,
        help="fleet name in firmware_configs/fleets or a path",
    )
    p.add_argument(
        "--shards", required=True, type=absolute_path, help="directory of agent-NNN.npz shards"
    )
    p.add_argument("--emulate", action="store_true", help="behave like the device classes say")
    p.add_argument("--time-scale", type=float, default=1.0, help="emulated durations x this")
    p.add_argument("--runtime", choices=["auto", "keras", "numpy"], default="numpy")
    p.add_argument("--seed", type=int, default=0, help="shard assignment and emulation seed")
    p.add_argument(
        "--model-wire-bytes",
        type=int,
        default=None,
        help="with --emulate: the model size every emulated transfer counts, bytes "
        "(default: the fleet file's [emulation] model_wire_bytes, else the real payload's)",
    )
    p.add_argument("--heartbeat-s", type=float, default=5.0)
    p.add_argument(
        "--report", type=absolute_path, default=None, help="write emulation fidelity JSON here"
    )
    _common(p)

    p = sub.add_parser("coordinator", help="run one federated job to its end")
    p.add_argument("--job", required=True, type=absolute_path, help="job file (TOML)")
    p.add_argument(
        "--state-dir", type=absolute_path, default="state", help="checkpoints and SQLite"
    )
    p.add_argument(
        "--out", type=absolute_path, default="results/job", help="exported model, outcome.json"
    )
    p.add_argument(
        "--artifacts-host",
        default="127.0.0.1",
        help="address the exported model is served on over HTTP (0.0.0.0 for all)",
    )
    p.add_argument("--artifacts-port", type=port, default=0, help="its port (0: a free one)")
    p.add_argument(
        "--advertise-url",
        default=None,
        help="base URL put in the published ModelRef when others reach the artifact server "
        "by another address (default http://HOST:PORT)",
    )
    p.add_argument(
        "--linger-s",
        type=float,
        default=60.0,
        help="keep serving the model this long after the job ends, so subscribers can fetch it",
    )
    p.add_argument(
        "--signing-key",
        type=absolute_path,
        default=os.environ.get("HYPERFLEET_SIGNING_KEY"),
        metavar="FILE",
        help="Ed25519 private key (signing.key of `hyperfleet certs`): sign every exported "
        "artifact in the published ModelRef (env HYPERFLEET_SIGNING_KEY)",
    )
    _dashboard_flags(p)
    _common(p)

    p = sub.add_parser(
        "demo",
        help="broker + coordinator + agents on this machine, to a target "
        "(default: the emulated mixed-50 fleet under the hyperFL planner)",
    )
    p.add_argument(
        "--agents",
        type=int,
        default=None,
        help="run N real agent processes (uniform planner) instead of an emulated fleet",
    )
    p.add_argument(
        "--fleet",
        type=config_ref,
        default=None,
        help="emulated fleet, a name in firmware_configs/fleets or a path (default mixed-50)",
    )
    p.add_argument("--target-accuracy", type=float, default=0.90)
    p.add_argument(
        "--time-budget",
        type=float,
        default=600.0,
        help="seconds (device-seconds of an emulated fleet: wall = x --time-scale)",
    )
    p.add_argument("--alpha", type=float, default=0.5, help="Dirichlet alpha of the label split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=absolute_path, default="results/demo")
    p.add_argument("--runtime", choices=["auto", "keras", "numpy"], default="auto")
    p.add_argument(
        "--broker",
        type=broker_url,
        default=None,
        help="use this running broker instead of starting one (its URL reaches the processes "
        "the demo starts on their command lines: a lab broker, not one with real passwords)",
    )
    add_tls_flags(p)
    p.add_argument("--time-scale", type=float, default=1.0, help="emulated durations x this")
    p.add_argument("--planner", choices=["uniform", "hyperfl"], default=None)
    p.add_argument("--participants", type=int, default=10, help="first rounds' participants")
    p.add_argument(
        "--mode",
        choices=["sync", "async"],
        default="sync",
        help="sync: rounds; async: FedBuff buffered asynchronous aggregation (the job's "
        'mode = "async")',
    )
    p.add_argument(
        "--data",
        choices=["spark", "numpy"],
        default="spark",
        help="prepare the data with the Spark pipeline under a deadline (default; NumPy when "
        "no Java runtime is found) or with NumPy",
    )
    p.add_argument(
        "--prep-deadline",
        type=float,
        default=120.0,
        help="seconds the Spark preparation job must finish in (dynaSpark)",
    )
    p.add_argument(
        "--dashboard",
        type=port,
        default=None,
        metavar="PORT",
        help="serve the coordinator's live dashboard on 127.0.0.1:PORT (0: a free port); off "
        "by default",
    )
    p.add_argument("--prefix", type=topic_prefix, default=_env("PREFIX", "hf/v1"))
    p.add_argument("--log-level", default=_env("LOG_LEVEL", "WARNING"))

    p = sub.add_parser(
        "serve", help="serve the trained models under a response-time SLA each (ROMA, KServe v2)"
    )
    p.add_argument(
        "--repository",
        required=True,
        type=absolute_path,
        help="model repository: DIR/{model}/{version}/model.tflite|.keras and {model}/config.toml",
    )
    p.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=port, default=None, help="HTTP port (default 8000; 0: free)")
    p.add_argument(
        "--broker",
        type=broker_url,
        default=None,
        help="follow models/+/latest on this broker and hot-reload what is published",
    )
    p.add_argument("--config", type=absolute_path, default=None, help="server settings (TOML)")
    p.add_argument(
        "--cores", type=float, default=None, help="cores the models share (default: all CPUs)"
    )
    p.add_argument(
        "--token",
        default=os.environ.get("HYPERFLEET_ROMA_TOKEN"),
        help="bearer token for the repository endpoints (env HYPERFLEET_ROMA_TOKEN; prefer "
        "--admin-token-file, which keeps it out of the process list)",
    )
    p.add_argument(
        "--admin-token-file",
        type=absolute_path,
        default=os.environ.get("HYPERFLEET_ROMA_TOKEN_FILE"),
        metavar="FILE",
        help="file holding the bearer token that the repository endpoints (index, load, unload) "
        "require; 401 without it (env HYPERFLEET_ROMA_TOKEN_FILE)",
    )
    add_tls_flags(p)
    add_verify_key_flag(p, who="hot reload")
    p.add_argument(
        "--fake-gpu", action="store_true", help="one CPU worker per model plays the node's GPU"
    )
    p.add_argument("--prefix", type=topic_prefix, default=None, help="topic prefix (hf/v1)")
    p.add_argument("--log-level", default=_env("LOG_LEVEL", "INFO"))

    p = sub.add_parser(
        "loadgen", help="open-loop (Poisson) load on a KServe v2 server; latency report as JSON"
    )
    p.add_argument("url", help="the server, http://host:port")
    p.add_argument("--model", required=True)
    p.add_argument("--version", default=None, help="model version (default: the served one)")
    p.add_argument("--rate", type=float, default=None, help="requests per second")
    p.add_argument("--duration", type=float, default=10.0, help="seconds at --rate")
    p.add_argument(
        "--steps", default=None, help='a step pattern "RATE:SECONDS,..." instead of --rate'
    )
    p.add_argument(
        "--samples", type=absolute_path, default=None, help="rows to send (.npy or .npz)"
    )
    p.add_argument("--rows", type=int, default=1, help="rows per request")
    p.add_argument("--binary", action="store_true", help="the binary tensor data extension")
    p.add_argument("--sla-ms", type=float, default=None, help="report violations of this SLA")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=absolute_path, default=None, help="also write the JSON here")
    p.add_argument("--log-level", default=_env("LOG_LEVEL", "WARNING"))

    from .spark import add_spark_parser

    add_spark_parser(sub)

    from .monitor import add_monitor_parser

    add_monitor_parser(sub)

    from .certs import add_certs_parser

    add_certs_parser(sub)

    from .acl import add_acl_parser

    add_acl_parser(sub)

    p = sub.add_parser("watch", help="print decoded messages from the topic tree")
    p.add_argument("--count", type=int, default=0, help="stop after this many messages (0: never)")
    _common(p)
    return parser


def _leaf(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups from task groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit status (see :mod:`.exits`)."""
    from .spark import split_script_args

    ours, script_args = split_script_args(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(ours)
    args.script_args = script_args
    try:
        return _dispatch(args)
    except Exception as exc:  # classified here, once; anything unclassified propagates
        leaf = _leaf(exc)
        status = exit_status(leaf)
        if status is None:
            raise
        print(f"hyperfleet {args.command}: {leaf}", file=sys.stderr)
        return status


def _dispatch(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("absl", "tensorflow", "h5py", "amqtt", "transitions"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.command == "broker":
        from .commands import run_broker

        return run_broker(
            port=args.port, bind=args.bind, embedded=args.embedded, persist=args.persist
        )
    if args.command == "agent":
        from .commands import agent_settings, run_agent

        settings = agent_settings(args)
        return run_until_signal(lambda: run_agent(settings))
    if args.command == "agents":
        from .commands import fleet_settings
        from .fleetrun import run_fleet

        frun = fleet_settings(args)
        return run_until_signal(lambda: run_fleet(frun))
    if args.command == "coordinator":
        from .commands import coordinator_settings, run_coordinator

        csettings = coordinator_settings(args)
        return run_until_signal(lambda: run_coordinator(csettings))
    if args.command == "demo":
        from .demo import DemoSettings, run_demo

        dsettings = DemoSettings.from_args(args)
        return run_until_signal(lambda: run_demo(dsettings))
    if args.command == "serve":
        from .serving import run_serve, serve_settings

        ssettings = serve_settings(args)
        return run_until_signal(lambda: run_serve(ssettings))
    if args.command == "loadgen":
        from .serving import loadgen_settings, run_loadgen

        lsettings = loadgen_settings(args)
        return run_until_signal(lambda: run_loadgen(lsettings))
    if args.command == "spark":
        from .spark import run_spark

        return run_spark(args)
    if args.command == "monitor":
        from .monitor import run_monitor

        return run_monitor(args)
    if args.command == "watch":
        from .commands import run_watch
        from .transport import tls_files

        broker = parse_broker_url(args.broker)
        tls = tls_files(args, args.broker)
        return run_until_signal(lambda: run_watch(broker, Topics(args.prefix), args.count, tls=tls))
    if args.command == "certs":
        from .certs import run_certs

        return run_certs(args)
    if args.command == "acl":
        from .acl import run_acl

        return run_acl(args)
    raise AssertionError(f"unhandled command {args.command}")
