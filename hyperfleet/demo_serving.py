"""The demo's last hop: ROMA serves the model the fleet trained, and a burst of KServe v2 requests
from the holdout checks it.

``hyperfleet demo`` starts ``hyperfleet serve --broker ...`` on an empty repository before the
job; the coordinator publishes its ``ModelRef`` on ``models/{name}/latest`` when the job ends;
ROMA fetches the model over HTTP (sha256 checked), loads it and serves it without a restart.
:func:`check_served` then sends every holdout row through the protocol's binary extension (as
``tritonclient.http`` does) and reports the served version, the accuracy of the answers, and
the client-side p50/p95 against the model's SLA.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import numpy.typing as npt

from cloud.roma.v2 import HEADER_LENGTH, Tensor, decode_infer_response, encode_infer_request

__all__ = ["DEMO_SLA_MS", "check_served", "free_port", "raw_inputs", "roma_args", "wait_served"]

DEMO_SLA_MS = 20.0
"""The served model's response-time SLA (p95) in the demo."""


def roma_args(
    *, repository: Path, model: str, port: int, broker_url: str, prefix: str
) -> list[str]:
    """The ``hyperfleet serve`` arguments that follow the broker into an empty repository,
    with ``model``'s SLA written into its ``config.toml``."""
    (repository / model).mkdir(parents=True, exist_ok=True)
    (repository / model / "config.toml").write_text(
        f"# Written by `hyperfleet demo`.\nsla_ms = {DEMO_SLA_MS}\npercentile = 95.0\n"
        "max_batch = 16\ninitial_cores = 0.5\nmin_cores = 0.1\nmax_cores = 1.0\n"
    )
    return ["serve", "--repository", str(repository), "--port", str(port),
            "--broker", broker_url, "--prefix", prefix]  # fmt: skip


def raw_inputs(x: npt.NDArray[np.float32], normalization: Path) -> npt.NDArray[np.float32]:
    """Undo the pipeline's normalisation (``normalization.json``: ``(x - offset) * scale``):
    the raw inputs a client would send, which the server normalises again."""
    doc = json.loads(normalization.read_text())
    offset = np.asarray(doc["offset"], dtype=np.float64)
    scale = np.asarray(doc["scale"], dtype=np.float64)
    return (x.astype(np.float64) / scale + offset).astype(np.float32)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_served(url: str, model: str, version: int, *, timeout_s: float = 60.0) -> bool:
    """Wait until ROMA at ``url`` serves ``version`` of ``model``; ``False`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(f"{url}/v2/models/{model}/stats") as response:
                    if response.status == 200:
                        stats = await response.json()
                        if stats.get("version") == str(version):
                            return True
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    return False


async def check_served(
    url: str,
    model: str,
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.int64],
    *,
    batch: int = 4,
    concurrency: int = 8,
) -> dict[str, Any]:
    """Send every row of ``x`` to ``model`` in binary requests of ``batch`` rows, ``concurrency``
    at a time; the accuracy of the answers against ``y`` and the response times (ms)."""
    latencies: list[float] = []
    correct = 0
    versions: set[str] = set()
    errors = 0
    gate = asyncio.Semaphore(concurrency)

    async def one(
        session: aiohttp.ClientSession, rows: npt.NDArray[np.float32], labels: Any
    ) -> None:
        nonlocal correct, errors
        body, headers = encode_infer_request(
            [Tensor(name="input", datatype="FP32", shape=rows.shape, data=rows)], binary=True
        )
        async with gate:
            t0 = time.perf_counter()
            async with session.post(f"{url}/v2/models/{model}/infer", data=body,
                                    headers=headers) as response:  # fmt: skip
                raw = await response.read()
                elapsed = time.perf_counter() - t0
                if response.status != 200:
                    errors += 1
                    return
                length = response.headers.get(HEADER_LENGTH)
        doc, arrays = decode_infer_response(
            raw, header_length=None if length is None else int(length)
        )
        latencies.append(elapsed * 1000)
        versions.add(str(doc.get("model_version")))
        correct += int(np.sum(np.argmax(arrays["output"], axis=1) == labels))

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(
            *(one(session, x[i : i + batch], y[i : i + batch]) for i in range(0, len(x), batch))
        )
    ms = np.asarray(latencies) if latencies else np.asarray([np.nan])
    return {
        "requests": len(latencies) + errors,
        "errors": errors,
        "rows": len(x),
        "versions": sorted(versions),
        "accuracy": correct / len(x),
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "sla_ms": DEMO_SLA_MS,
        "within_sla_share": float(np.mean(ms <= DEMO_SLA_MS)),
    }
