"""Hot reload: follow ``models/+/latest`` on the broker and serve each newly published model.

Every frame passes :class:`link.InboundGate` (decode, bounded sizes, counted drops); a
:class:`~protocol.ModelRef` whose name differs from its topic's is dropped as spoofed. A
reference newer than the version serving is installed by :meth:`RomaServer.install` — fetched
over HTTP, verified, loaded, warmed, swapped — one at a time per model, in the order they
arrive, off the MQTT reader. A failed install leaves the serving version alone; the reason is in
the log, ``/v2/models/{m}/stats`` and ``/v2/repository/index``.

On the same connection the follower publishes, retained, how each model serves
(:class:`~protocol.ServingStats` on ``serving/{model}/stats``: version, response time against the
SLA, violations, request rate, cores) for ``hyperfleet monitor``: at the start, every
``stats_period_s`` seconds, right after each install and, ``STOPPED``, on a clean stop. A publication the broker does not take
(broker away) is skipped; the next one goes out as usual.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
import time

from link import Backoff, InboundGate, LinkError
from link.mqtt import MqttConnection, MqttSession, TlsFiles
from protocol import (
    Envelope,
    InvalidTopic,
    ModelRef,
    Topics,
    encode,
    new_envelope,
    parse_broker_url,
)

from .errors import RomaError
from .server import RomaServer

__all__ = ["ModelFollower"]

_log = logging.getLogger(__name__)


class ModelFollower:
    """``await follower.run()`` until cancelled; :attr:`installed` and :attr:`failed` count."""

    def __init__(
        self,
        server: RomaServer,
        broker_url: str,
        *,
        topics: Topics | None = None,
        stats_period_s: float = 5.0,
        tls: TlsFiles | None = None,
    ):
        self.server = server
        self.topics = topics or Topics()
        self.stats_period_s = stats_period_s
        self.installed = 0
        self.failed = 0
        self.stats_published = 0
        """Serving-stats records published so far (one per model per period)."""
        self._pending: asyncio.Queue[ModelRef] = asyncio.Queue()
        self.subscribed = asyncio.Event()
        """Set once the first subscription to ``models/+/latest`` is in place."""
        # Host and pid: replicas in containers all run as the same pid, and one client id on
        # the broker at a time means two would keep pushing each other off.
        self._identifier = f"hf-roma-{socket.gethostname()}-{os.getpid()}"
        self.gate = InboundGate(name="roma follower", handler=self._on_envelope,
                                scope=lambda topic, env: None)  # fmt: skip
        self.session = MqttSession(
            broker=parse_broker_url(broker_url),
            identifier=self._identifier,
            on_message=self.gate,
            on_connect=self._subscribe,
            backoff=Backoff(min_s=0.2, max_s=5.0),
            tls=tls,
            name="roma follower",
        )

    async def _subscribe(self, connection: MqttConnection) -> None:
        await connection.subscribe(f"{self.topics.prefix}/models/+/latest")
        self.subscribed.set()

    def _on_envelope(self, topic: str, envelope: Envelope, nbytes: int) -> None:
        ref = envelope.body
        if not isinstance(ref, ModelRef):
            self.gate.dropped["not_a_model_ref"] += 1
            return
        if topic != self.topics.model_latest(ref.name):
            self.gate.dropped["spoofed"] += 1
            _log.warning("dropped a ModelRef for %r published on %s", ref.name, topic)
            return
        self._pending.put_nowait(ref)

    async def _install_loop(self) -> None:
        while True:
            ref = await self._pending.get()
            entry = self.server.entries.get(ref.name)
            if (
                entry is not None
                and entry.served is not None
                and (int(entry.served.version) >= ref.version)
            ):
                continue
            _log.info("model %s: version %d published; installing from %s", ref.name,
                      ref.version, ref.url)  # fmt: skip
            try:
                await self.server.install(ref)
            except RomaError as exc:
                self.failed += 1
                _log.error("model %s version %d: %s", ref.name, ref.version, exc)
            else:
                self.installed += 1
            await self.publish_stats()  # monitors see the new version now, not a period later

    async def _stats_loop(self) -> None:
        while True:
            await self.publish_stats()
            await asyncio.sleep(self.stats_period_s)

    async def publish_stats(self, *, final: bool = False, timeout_s: float | None = None) -> None:
        """Publish every model's :class:`~protocol.ServingStats`, retained, once (skipped, with
        a debug line, while the broker is away, each publication waiting at most ``timeout_s``,
        default the period). ``final``: the server is stopping; the state says ``STOPPED``."""
        now = time.monotonic()
        for stats in self.server.serving_stats(now, period_s=self.stats_period_s):
            if final:
                stats = dataclasses.replace(stats, state="STOPPED", reason="")
            try:
                topic = self.topics.serving_stats(stats.model)
            except InvalidTopic:  # a repository folder name no topic may carry
                continue
            payload = encode(new_envelope(stats, sender=self._identifier))
            try:
                await self.session.publish(topic, payload, retain=True,
                                           timeout=timeout_s or self.stats_period_s)  # fmt: skip
            except LinkError as exc:
                _log.debug("serving stats of %s not published: %s", stats.model, exc)
                return
            self.stats_published += 1

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.session.run(), name="roma-follower-mqtt")
            tg.create_task(self._install_loop(), name="roma-follower-install")
            tg.create_task(self._stats_loop(), name="roma-follower-stats")
