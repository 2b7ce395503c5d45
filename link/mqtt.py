"""MQTT sessions: one client factory and one reconnect loop for every process that speaks MQTT.

::

    MqttSession.run()                         until cancelled; cancellation ends it promptly in
    └── loop                                  any state (sleeping, connecting, connected)
        ├── before_connect()                  e.g. wait until an emulated device is back online
        ├── connect                           MQTT 3.1.1, TCP_NODELAY, keepalive, TLS, Last Will
        │     └── refused/unreachable ──────► sleep Backoff.next_delay() (capped, jittered)
        ├── on_connect(connection)            subscribe, re-publish retained state
        ├── while_connected(connection) ║ read messages → on_message(topic, payload)
        │     └── lost ─────────────────────► sleep Backoff.next_delay(), reconnect
        └── on a clean stop: publish the Last Will ourselves (the broker sends it only on a lost
            connection), then disconnect, each bounded by ``close_timeout_s``

``while_connected`` returning ends the connection without a delay (the loop starts over at
``before_connect``). aiomqtt errors never leave this module: they become :class:`LinkError`\\ s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt

from protocol import BrokerAddress, check_topic_name

from ._backoff import Backoff
from ._errors import BrokerUnavailable, ConnectionLost, LinkError, PublishTimeout

__all__ = ["LastWill", "MqttConnection", "MqttSession", "TlsFiles", "mqtt_client"]

_log = logging.getLogger(__name__)
# Without it a QoS 1 exchange can stall ~40 ms on Nagle's algorithm and delayed ACKs.
_NODELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

MessageHandler = Callable[[str, object], None]
ConnectionHook = Callable[["MqttConnection"], Awaitable[None]]


@dataclass(frozen=True, slots=True, kw_only=True)
class LastWill:
    """The message the broker publishes for us when our connection is lost.
    :class:`~protocol.InvalidTopic` for a topic the broker would refuse."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True

    def __post_init__(self) -> None:
        check_topic_name(self.topic)


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsFiles:
    """PEM files for ``mqtts://``: a CA bundle (default: the system's) and a client cert/key."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


def mqtt_client(
    broker: BrokerAddress,
    *,
    identifier: str,
    will: LastWill | None = None,
    clean_session: bool = True,
    keepalive_s: int = 30,
    tls: TlsFiles | None = None,
    timeout_s: float = 10.0,
    max_queued_outgoing: int = 1000,
    logger: logging.Logger | None = None,
) -> aiomqtt.Client:
    """An unconnected MQTT 3.1.1 client with TCP_NODELAY; TLS when ``broker.tls``.

    For one-shot tools (``async with mqtt_client(...) as client``); long-lived processes use
    :class:`MqttSession`, which also translates errors. Raises ``ValueError`` when ``tls`` is
    given for a plain ``mqtt://`` broker.
    """
    if tls is not None and not broker.tls:
        raise ValueError(f"TLS files given for {broker.url}; use an mqtts:// broker URL")
    tls_params = None
    if broker.tls:
        files = tls or TlsFiles()
        tls_params = aiomqtt.TLSParameters(
            ca_certs=str(files.ca_file) if files.ca_file else None,
            certfile=str(files.cert_file) if files.cert_file else None,
            keyfile=str(files.key_file) if files.key_file else None,
        )
    client = aiomqtt.Client(
        broker.host,
        broker.port,
        identifier=identifier,
        username=broker.username,
        password=broker.password,
        will=aiomqtt.Will(will.topic, will.payload, qos=will.qos, retain=will.retain)
        if will
        else None,
        clean_session=clean_session,
        protocol=aiomqtt.ProtocolVersion.V311,
        keepalive=keepalive_s,
        timeout=timeout_s,
        socket_options=[_NODELAY],
        tls_params=tls_params,
        logger=logger,
        max_queued_outgoing_messages=max_queued_outgoing,
    )
    client.pending_calls_threshold = 10_000  # a round's burst of publishes is normal, not a warning
    return client


class MqttConnection:
    """One live connection, handed to the session's hooks. Its calls raise :class:`LinkError`:
    :class:`ConnectionLost` once the connection is gone, :class:`PublishTimeout` past a timeout."""

    def __init__(self, client: aiomqtt.Client, *, broker: BrokerAddress) -> None:
        self._client = client
        self._broker = broker
        self._lost = asyncio.Event()

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        timeout: float | None = 10.0,
    ) -> None:
        """Publish and, for QoS > 0, wait for the broker's acknowledgement (``timeout`` seconds,
        ``None`` for no limit). :class:`~protocol.InvalidTopic` (not a :class:`LinkError`, so
        nothing retries it) for a topic the broker would drop us for."""
        check_topic_name(topic)
        call = self._client.publish(topic, payload, qos=qos, retain=retain, timeout=math.inf)
        await self._guarded(call, timeout, f"publish to {topic}")

    async def subscribe(self, topic: str, *, qos: int = 1, timeout: float | None = 10.0) -> None:
        call = self._client.subscribe(topic, qos=qos, timeout=math.inf)
        await self._guarded(call, timeout, f"subscribe to {topic}")

    def _mark_lost(self) -> None:
        self._lost.set()

    async def _guarded(
        self, call: Coroutine[Any, Any, object], timeout: float | None, what: str
    ) -> None:
        # aiomqtt leaves a pending publish waiting after a disconnect; race it against the loss.
        if self._lost.is_set():
            call.close()
            raise ConnectionLost(f"{what}: not connected to {self._broker.url}")
        op = asyncio.ensure_future(call)
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            done, _ = await asyncio.wait(
                (op, lost), timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            lost.cancel()
            if not op.done():
                op.cancel()
        if op in done:
            try:
                op.result()
            except aiomqtt.MqttError as exc:
                raise ConnectionLost(f"{what} at {self._broker.url} failed: {exc}") from exc
            return
        if lost in done:
            raise ConnectionLost(f"{what}: the connection to {self._broker.url} was lost")
        raise PublishTimeout(f"{what}: no acknowledgement within {timeout}s")


class MqttSession:
    """A connection to one broker that comes back by itself; ``await session.run()`` until
    cancelled. Hooks run on every connection, so retained state is re-announced each time.

    ``on_message(topic, payload)`` is called for every message received (usually an
    :class:`~link.InboundGate`); it must not block. ``publish`` may be called from any task.
    """

    def __init__(
        self,
        *,
        broker: BrokerAddress,
        identifier: str,
        on_message: MessageHandler,
        on_connect: ConnectionHook | None = None,
        while_connected: ConnectionHook | None = None,
        before_connect: Callable[[], Awaitable[None]] | None = None,
        will: LastWill | None = None,
        clean_session: bool = True,
        keepalive_s: int = 30,
        tls: TlsFiles | None = None,
        backoff: Backoff | None = None,
        connect_timeout_s: float = 10.0,
        close_timeout_s: float = 2.0,
        max_queued_outgoing: int = 1000,
        name: str = "mqtt",
        logger: logging.Logger | None = None,
    ) -> None:
        self.broker = broker
        self.identifier = identifier
        self.name = name
        self.connections = 0
        """Connections made so far (a reconnect counts again)."""
        self.backoff = backoff or Backoff()
        self._on_message = on_message
        self._on_connect = on_connect
        self._while_connected = while_connected
        self._before_connect = before_connect
        self.will = will
        """The Last Will of the next connection (read on every connect; a process may change it
        as its state changes). ``None``: no will, and no farewell on a clean stop."""
        self._clean_session = clean_session
        self._keepalive_s = keepalive_s
        self._tls = tls
        self._connect_timeout_s = connect_timeout_s
        self._close_timeout_s = close_timeout_s
        self._max_queued = max_queued_outgoing
        self._log = logger or _log
        self._connection: MqttConnection | None = None
        self.connected = asyncio.Event()
        """Set while connected and past ``on_connect``."""
        self.disconnected = asyncio.Event()
        """Set while not connected (the complement of :attr:`connected`)."""
        self.disconnected.set()

    # ------------------------------------------------------------------ publishing

    async def wait_connected(self, timeout: float | None = None) -> MqttConnection:
        """The live connection, waiting up to ``timeout`` seconds for one (``PublishTimeout``)."""
        try:
            async with asyncio.timeout(timeout):
                while self._connection is None:
                    await self.connected.wait()
        except TimeoutError as exc:
            raise PublishTimeout(f"{self.name}: not connected to {self.broker.url}") from exc
        return self._connection

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        timeout: float | None = 10.0,
    ) -> None:
        """Publish once connected; ``timeout`` (seconds, ``None`` for none) covers the wait for a
        connection and the acknowledgement. Raises :class:`PublishTimeout` or
        :class:`ConnectionLost`; a caller that must deliver retries on :class:`LinkError`."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        connection = await self.wait_connected(timeout)
        left = None if timeout is None else max(0.0, timeout - (loop.time() - start))
        await connection.publish(topic, payload, qos=qos, retain=retain, timeout=left)

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        """Connect, serve, reconnect with backoff; returns only by cancellation. Errors of the
        hooks other than :class:`LinkError` propagate (they are bugs, not outages)."""
        while True:
            if self._before_connect is not None:
                await self._before_connect()
            client = mqtt_client(
                self.broker,
                identifier=self.identifier,
                will=self.will,
                clean_session=self._clean_session,
                keepalive_s=self._keepalive_s,
                tls=self._tls,
                timeout_s=self._connect_timeout_s,
                max_queued_outgoing=self._max_queued,
                logger=self._log,
            )
            try:
                await self._connect(client)
            except BrokerUnavailable as exc:
                await self._pause(exc)
                continue
            self.connections += 1
            self.backoff.reset()
            lost: LinkError | None = None
            try:
                await self._serve(client)
            except* LinkError as group:
                lost = next(e for e in group.exceptions if isinstance(e, LinkError))
            finally:
                await self._close(client)
            if lost is not None:
                await self._pause(lost)

    async def _pause(self, error: LinkError) -> None:
        delay = self.backoff.next_delay()
        self._log.warning(
            "%s: broker %s unavailable (%s); retrying in %.1fs",
            self.name,
            self.broker.url,
            error,
            delay,
        )
        await asyncio.sleep(delay)

    async def _connect(self, client: aiomqtt.Client) -> None:
        entering = asyncio.ensure_future(client.__aenter__())
        try:
            await asyncio.shield(entering)
        except aiomqtt.MqttError as exc:
            raise BrokerUnavailable(f"cannot connect to {self.broker.url}: {exc}") from exc
        except asyncio.CancelledError:
            # Let a half-made connection finish (briefly) and close it, so no session of ours
            # outlives the cancellation holding our client id.
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                await asyncio.wait_for(entering, self._close_timeout_s)
                await self._close(client)
            raise

    async def _close(self, client: aiomqtt.Client) -> None:
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
            await asyncio.wait_for(client.__aexit__(None, None, None), self._close_timeout_s)

    async def _serve(self, client: aiomqtt.Client) -> None:
        connection = MqttConnection(client, broker=self.broker)
        try:
            if self._on_connect is not None:
                await self._on_connect(connection)
            self._set(connection)
            self._log.info("%s: connected to %s", self.name, self.broker.url)
            async with asyncio.TaskGroup() as tg:
                reader = tg.create_task(self._read(client, connection), name=f"{self.name}-read")
                if self._while_connected is not None:
                    await self._while_connected(connection)
                    reader.cancel()  # the hook ended this connection; start over
        except asyncio.CancelledError:
            will = self.will
            if will is not None and not connection.lost:
                await self._farewell(connection, will)
            raise
        finally:
            self._lose(connection)

    async def _farewell(self, connection: MqttConnection, will: LastWill) -> None:
        with contextlib.suppress(LinkError):
            await connection.publish(
                will.topic,
                will.payload,
                qos=will.qos,
                retain=will.retain,
                timeout=self._close_timeout_s,
            )

    async def _read(self, client: aiomqtt.Client, connection: MqttConnection) -> None:
        try:
            async for message in client.messages:
                self._on_message(str(message.topic), message.payload)
        except aiomqtt.MqttError as exc:
            self._lose(connection)
            raise ConnectionLost(f"lost the connection to {self.broker.url}: {exc}") from exc

    def _lose(self, connection: MqttConnection) -> None:
        # Synchronously with the loss, so ``wait_connected`` never hands out a dead connection.
        connection._mark_lost()
        if self._connection is connection:
            self._set(None)

    def _set(self, connection: MqttConnection | None) -> None:
        self._connection = connection
        if connection is None:
            self.connected.clear()
            self.disconnected.set()
        else:
            self.connected.set()
            self.disconnected.clear()
