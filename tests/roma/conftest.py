"""ROMA fixtures: real models trained on digits, a model repository, a real server process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest


@dataclass(frozen=True, slots=True)
class TrainedModels:
    """A digits MLP trained for a few epochs: its Keras and float TFLite files, a holdout and
    the TFLite model's own predictions on it (what a correct server must answer)."""

    keras: Path
    tflite: Path
    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.int64]
    expected: npt.NDArray[np.float32]


def _train(out: Path, *, hidden: int, seed: int) -> TrainedModels:
    import keras
    import tensorflow as tf
    from sklearn.datasets import load_digits

    from coordinator.export import litert_predict

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(hidden, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x[:1400], y[:1400], epochs=8, verbose=0)
    out.mkdir(parents=True, exist_ok=True)
    keras_path = out / "model.keras"
    model.save(keras_path)
    blob = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    tflite_path = out / "model.tflite"
    tflite_path.write_bytes(blob)
    holdout_x, holdout_y = x[1400:], y[1400:]
    return TrainedModels(
        keras=keras_path,
        tflite=tflite_path,
        x=holdout_x,
        y=holdout_y,
        expected=litert_predict(blob, holdout_x),
    )


@pytest.fixture(scope="session")
def digits_models(tmp_path_factory: pytest.TempPathFactory) -> TrainedModels:
    return _train(tmp_path_factory.mktemp("digits-v1"), hidden=32, seed=1)


@pytest.fixture(scope="session")
def digits_models_v2(tmp_path_factory: pytest.TempPathFactory) -> TrainedModels:
    """A second, different model of the same shape (a new version)."""
    return _train(tmp_path_factory.mktemp("digits-v2"), hidden=16, seed=2)


def make_repository(
    root: Path, models: TrainedModels, *, name: str = "digits", version: int = 1, config: str = ""
) -> Path:
    folder = root / name / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.tflite").write_bytes(models.tflite.read_bytes())
    (root / name / "config.toml").write_text(
        config or "sla_ms = 50.0\nmax_batch = 16\ninitial_cores = 1.0\nmax_cores = 1.0\n"
    )
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True, slots=True)
class ServerProcess:
    url: str
    host_port: str
    token: str
    repository: Path
    process: subprocess.Popen[bytes]
    log: Path


def get_json(url: str, *, data: bytes | None = None, headers: dict[str, str] | None = None,
             method: str | None = None) -> tuple[int, dict[str, object] | list[object]]:  # fmt: skip
    request = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def start_server(repository: Path, log: Path, *extra: str) -> ServerProcess:
    port = free_port()
    token = "test-token"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "hyperfleet", "serve", "--repository", str(repository),
             "--port", str(port), "--token", token, *extra],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                f"hyperfleet serve exited {process.returncode}:\n{log.read_text()}"
            )
        try:
            status, _ = get_json(f"{url}/v2/health/ready")
            if status == 200:
                return ServerProcess(url, f"127.0.0.1:{port}", token, repository, process, log)
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.2)
    process.kill()
    raise AssertionError(f"hyperfleet serve not ready in 120 s:\n{log.read_text()}")


def stop_server(server: ServerProcess) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="module")
def roma_server(
    tmp_path_factory: pytest.TempPathFactory, digits_models: TrainedModels
) -> Iterator[ServerProcess]:
    """``hyperfleet serve`` as its own process, serving the digits model as version 1."""
    root = tmp_path_factory.mktemp("repository")
    make_repository(root, digits_models)
    server = start_server(root, root.parent / f"{root.name}.log")
    yield server
    stop_server(server)
