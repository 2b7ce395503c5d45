"""``hyperfleet monitor``: a live view of the fleet from its topic tree; it only subscribes.

::

    hyperfleet monitor --broker URL [--prefix P] [--json] [--duration S]

One :class:`~link.mqtt.MqttSession` subscribes to ``{prefix}/#`` (retained agent status and
hello, job states, model references and serving stats arrive at once) and reconnects with the
project's capped, jittered backoff. Every message goes to a
:class:`~hyperfleet.fleet_view.FleetView`; the terminal view (`rich` ``Live``) is redrawn from it
twice a second, or, with ``--json``, each message is printed as one JSON line
(:meth:`~hyperfleet.fleet_view.Event.to_json`) for scripts. ``--duration`` stops it after that
many seconds (exit 0); so do SIGINT and SIGTERM. Documented in docs/monitor.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from protocol import BrokerAddress, Topics, parse_broker_url

from .errors import UsageError
from .exits import EXIT_OK
from .fleet_view import FleetView
from .signals import run_until_signal
from .transport import add_tls_flags, tls_files

if TYPE_CHECKING:
    from link.mqtt import MqttConnection, MqttSession, TlsFiles

__all__ = ["MonitorSettings", "add_monitor_parser", "run_monitor"]

_log = logging.getLogger(__name__)

_REFRESH_S = 0.5


@dataclass(frozen=True, slots=True, kw_only=True)
class MonitorSettings:
    broker: BrokerAddress
    topics: Topics
    json: bool = False
    duration_s: float | None = None
    tls: TlsFiles | None = None


def add_monitor_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from .flags import broker_url, topic_prefix

    p = sub.add_parser(
        "monitor",
        help="live view of agents, jobs, served models and traffic (subscribes only)",
        description="A live terminal view of the fleet from its MQTT topic tree; it never "
        "publishes. --json prints one JSON line per message instead.",
    )
    p.add_argument(
        "--broker",
        type=broker_url,
        default=os.environ.get("HYPERFLEET_BROKER", "mqtt://127.0.0.1:1883"),
        help="broker URL mqtt://[user:pass@]host:port (env HYPERFLEET_BROKER)",
    )
    p.add_argument(
        "--prefix",
        type=topic_prefix,
        default=os.environ.get("HYPERFLEET_PREFIX", "hf/v1"),
        help="topic prefix (env HYPERFLEET_PREFIX)",
    )
    p.add_argument(
        "--json", action="store_true", help="one JSON line per message on stdout, no screen"
    )
    p.add_argument("--duration", type=_seconds, default=None, help="stop after this many seconds")
    add_tls_flags(p)
    p.add_argument("--log-level", default=os.environ.get("HYPERFLEET_LOG_LEVEL", "WARNING"))


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (0 < value < float("inf")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def run_monitor(args: argparse.Namespace) -> int:
    """Run the monitor until ``--duration`` passes or a signal; returns the exit status."""
    settings = MonitorSettings(
        broker=parse_broker_url(args.broker),
        topics=Topics(args.prefix),
        json=args.json,
        duration_s=args.duration,
        tls=tls_files(args, args.broker),
    )

    async def go() -> int:
        await monitor(settings)
        return EXIT_OK

    return run_until_signal(go)


class _LogTail(logging.Handler):
    """Keeps the newest warnings (the session's reconnect messages) for the screen, where a
    plain stderr handler would tear the live view."""

    def __init__(self, lines: deque[str]) -> None:
        super().__init__(logging.WARNING)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(time.strftime("%H:%M:%S ") + record.getMessage())


async def monitor(settings: MonitorSettings) -> None:
    """Subscribe and show, until ``settings.duration_s`` passes (or cancellation, or, with
    ``--json``, until stdout is closed: ``hyperfleet monitor --json | head``)."""
    from link.mqtt import MqttSession  # this module is imported by every command's parser

    view = FleetView(settings.topics)
    reader_gone = asyncio.Event()

    def on_message(topic: str, payload: object) -> None:
        event = view.apply(topic, payload, time.monotonic())
        if settings.json and not reader_gone.is_set():
            try:
                sys.stdout.write(json.dumps(event.to_json(wall_time=time.time())) + "\n")
                sys.stdout.flush()
            except BrokenPipeError:
                # Nobody reads any more; point stdout at /dev/null so the exit's flush is quiet.
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                os.close(devnull)
                reader_gone.set()

    async def subscribe(conn: MqttConnection) -> None:
        await conn.subscribe(f"{settings.topics.prefix}/#", qos=1)

    session = MqttSession(
        broker=settings.broker,
        identifier=f"hf-monitor-{os.getpid()}-{time.time_ns() % 10**6}",
        on_message=on_message,
        on_connect=subscribe,
        tls=settings.tls,
        name="monitor",
    )
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(settings.duration_s), asyncio.TaskGroup() as tg:
            link = tg.create_task(session.run(), name="monitor-mqtt")
            if settings.json:
                await reader_gone.wait()
            else:
                await _live(view, session, settings)
            link.cancel()


async def _live(view: FleetView, session: MqttSession, settings: MonitorSettings) -> None:
    try:
        from rich.console import Console, RenderableType
        from rich.live import Live

        from .fleet_render import Header, render_fleet
    except ImportError as exc:
        raise UsageError(
            f"the live view needs rich ({exc}): pip install 'hyperfleet[cloud]', or use --json"
        ) from exc

    console = Console()
    notes: deque[str] = deque(maxlen=3)
    tail = _LogTail(notes)
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = [tail]  # the screen shows warnings; stderr would tear it
    started = time.monotonic()

    def frame() -> RenderableType:
        now = time.monotonic()
        header = Header(
            broker=settings.broker.url,
            connected=session.connected.is_set(),
            connections=session.connections,
            running_s=now - started,
            notes=tuple(notes),
        )
        # The agents table gets the lines the rest leaves: measure the frame without agent rows.
        bare = render_fleet(view, now, header=header, max_agent_rows=0)
        used = len(console.render_lines(bare, console.options, pad=False))
        rows = max(console.size.height - used, 3)
        return render_fleet(view, now, header=header, max_agent_rows=rows)

    try:
        with Live(
            frame(),
            console=console,
            auto_refresh=False,
            screen=console.is_terminal,
            redirect_stderr=False,
        ) as live:
            while True:
                await asyncio.sleep(_REFRESH_S)
                live.update(frame(), refresh=True)
    finally:  # on a pipe or file, Live prints the last frame once, as it stops
        root.handlers = saved
