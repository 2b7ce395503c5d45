"""The embedded MQTT broker: ``python -m hyperfleet.embedded_broker --port N --bind HOST``.

A zero-setup stand-in for Mosquitto on machines where it is not installed, built on amqtt's
``Broker``. It listens on one TCP listener, accepts every client, and runs until SIGTERM or
SIGINT, then shuts down cleanly (exit code 0). :func:`hyperfleet.broker.start_broker` starts it
as a child process.

Known limits, all of them amqtt's:

- MQTT 3.1.1 only; MQTT 5 clients are refused. hyperfleet's wire contract needs only 3.1.1.
- QoS 1 round trips stall about 40 ms (Nagle's algorithm meeting delayed ACKs) unless clients set
  ``TCP_NODELAY`` on their sockets; hyperfleet's clients do.
- State lives in memory only: retained messages and durable sessions are lost on restart.
- It is much slower than Mosquitto; use it for demos and tests, not for a fleet.

Two amqtt 0.12 behaviours are corrected here, both covered by the broker contract tests:

- On every CONNECT amqtt sends the new client the retained messages matching *any* client's
  subscriptions, not just its own, so a fresh agent would receive every other agent's retained
  status. :class:`HyperfleetBroker` sends retained messages only in answer to a SUBSCRIBE, as
  MQTT 3.1.1 (section 3.3.1.3) and Mosquitto do.
- amqtt's own anonymous-auth plugin marks every session anonymous, and amqtt neither queues QoS 1
messages for disconnected anonymous sessions nor keeps their subscriptions. Clients that reconnect
with ``clean_session=False`` (agents do, to never lose their place) would then silently miss
instructions, so this broker uses :class:`OpenAuthPlugin`, which admits everyone without that mark.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any

from amqtt.broker import Broker
from amqtt.plugins.base import BaseAuthPlugin

__all__ = ["HyperfleetBroker", "OpenAuthPlugin", "broker_config", "main", "serve"]

logger = logging.getLogger(__name__)

_PLUGIN_PATH = "hyperfleet.embedded_broker.OpenAuthPlugin"


class OpenAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]  # amqtt ships no type hints
    """Admit every client, anonymous or not, and keep its session if it asked for one."""

    async def authenticate(self, *, session: Any) -> bool:
        return True


_answering_subscribe: ContextVar[bool] = ContextVar("_answering_subscribe", default=False)


class HyperfleetBroker(Broker):  # type: ignore[misc]  # amqtt ships no type hints
    """amqtt's broker, sending retained messages only to the client that subscribed.

    Overrides two private methods of amqtt 0.12.1 (the pinned version): the SUBSCRIBE handler
    marks its task, and the retained-message publisher does nothing outside that mark. The
    connect path, which calls the same publisher for every filter in the broker, is then inert.
    """

    async def _handle_subscription(self, *args: Any, **kwargs: Any) -> None:
        token = _answering_subscribe.set(True)
        try:
            await super()._handle_subscription(*args, **kwargs)
        finally:
            _answering_subscribe.reset(token)

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Any
    ) -> None:
        if _answering_subscribe.get():
            await super()._publish_retained_messages_for_subscription(subscription, session)


def broker_config(*, port: int, bind: str) -> dict[str, Any]:
    """amqtt 0.12 configuration: one TCP listener on ``bind:port``, everyone admitted."""
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{bind}:{port}"}},
        # Durable sessions are dropped after a day offline (Mosquitto keeps them forever).
        "session_expiry_interval": 24 * 3600,
        # No $SYS publisher and no per-packet logger: both cost time and say nothing we use.
        "plugins": {_PLUGIN_PATH: {}},
    }


async def serve(*, port: int, bind: str, stop: asyncio.Event | None = None) -> None:
    """Run the broker until ``stop`` is set, or until SIGTERM/SIGINT when ``stop`` is ``None``."""
    loop = asyncio.get_running_loop()
    if stop is None:
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    broker = HyperfleetBroker(broker_config(port=port, bind=bind))
    await broker.start()
    logger.info("embedded broker listening on %s:%d", bind, port)
    try:
        await stop.wait()
    finally:
        logger.info("embedded broker shutting down")
        await broker.shutdown()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m hyperfleet.embedded_broker",
        description="Embedded MQTT 3.1.1 broker (amqtt) for machines without Mosquitto.",
    )
    parser.add_argument("--port", type=int, default=1883, help="TCP port (default: 1883)")
    parser.add_argument("--bind", default="127.0.0.1", help="address (default: 127.0.0.1)")
    parser.add_argument(
        "--log-level",
        default="WARNING",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level (default: WARNING)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(serve(port=args.port, bind=args.bind))


if __name__ == "__main__":
    main()
