"""Fault probes with real processes: Mosquitto, coordinators and agents, each its own process.

:class:`Stack` starts them on one private broker port (so a test may kill and restart the
broker) and watches the job's retained state with a plain paho client, as an operator's
monitor would.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from cloud.pipelines import load_digits, prepare_federated
from hyperfleet.broker import RunningBroker, start_broker
from protocol import JobState, ProtocolError, Topics, decode

JOB_ID = "fault-job"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class StateWatch:
    """Every ``JobState`` published on the job's retained state topic, in arrival order."""

    def __init__(self, port: int, topics: Topics) -> None:
        self.states: list[JobState] = []
        self._lock = threading.Lock()
        self._topic = topics.job_state(JOB_ID)
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"watch-{port}")
        self._client.on_connect = lambda c, *_: c.subscribe(self._topic, qos=1)
        self._client.on_message = self._on_message
        self._client.reconnect_delay_set(1, 2)
        self._client.connect_async("127.0.0.1", port)
        self._client.loop_start()

    def _on_message(self, client: object, userdata: object, message: paho.MQTTMessage) -> None:
        try:
            body = decode(message.payload).body
        except ProtocolError:
            return
        if isinstance(body, JobState):
            with self._lock:
                self.states.append(body)

    def latest(self) -> JobState | None:
        with self._lock:
            return self.states[-1] if self.states else None

    def wait_for(self, test: Callable[[JobState], bool], timeout: float) -> JobState:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._lock:
                for state in self.states:
                    if test(state):
                        return state
            time.sleep(0.05)
        raise AssertionError(f"no job state matched within {timeout}s; last: {self.latest()}")

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


class Stack:
    """One broker port, digits shards for ``agents`` agents, and the processes of a test."""

    def __init__(self, tmp: Path, *, agents: int) -> None:
        self.tmp = tmp
        self.port = _free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.topics = Topics("hf/v1")
        self.logs = tmp / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.layout = prepare_federated(
            load_digits(), agents=agents, alpha=1.0, holdout=0.2, seed=0, out_dir=tmp / "data"
        )
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.broker: RunningBroker | None = None
        self.watch: StateWatch | None = None

    def start_broker(self) -> RunningBroker:
        self.broker = start_broker(prefer="mosquitto", port=self.port, workdir=self.tmp / "broker")
        if self.watch is None:
            self.watch = StateWatch(self.port, self.topics)
        return self.broker

    def kill_broker(self) -> None:
        assert self.broker is not None
        self.broker.process.kill()  # kill -9: no clean shutdown, no persistence
        self.broker.process.wait(5)
        self.broker.stop()

    def job(self, *, max_rounds: int = 4, **rounds: float | int) -> Path:
        settings = {
            "participants": len(self.layout.shards),
            "min_results": 1,
            "round_timeout_s": 30,
            "local_epochs": 1,
            "batch_size": 16,
            "learning_rate": 0.1,
            "min_agents": len(self.layout.shards),
            "wait_for_agents_s": 30,
            **rounds,
        }
        lines = "\n".join(f"{k} = {v}" for k, v in settings.items())
        path = self.tmp / "job.toml"
        path.write_text(
            f'job_id = "{JOB_ID}"\nholdout = "{self.layout.holdout}"\nseed = 0\n\n'
            '[model]\nname = "digits-mlp"\nhidden = [32]\n\n[strategy]\nname = "fedavg"\n\n'
            f"[rounds]\n{lines}\n\n[constraints]\ntarget_accuracy = 0.999\n"
            f"time_budget_s = 300\nmax_rounds = {max_rounds}\n"
        )
        return path

    def spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
        with (self.logs / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "hyperfleet", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self.procs[name] = proc
        return proc

    def agent(self, i: int, *, url: str | None = None) -> subprocess.Popen[bytes]:
        return self.spawn(
            f"agent-{i}",
            "agent",
            "--id",
            f"agent-{i}",
            "--data",
            str(self.layout.shards[i]),
            "--device-class",
            "x86-cpu",
            "--runtime",
            "numpy",
            "--heartbeat-s",
            "0.5",
            "--broker",
            url or self.url,
            "--log-level",
            "INFO",
        )

    def coordinator(
        self, name: str, job: Path, state_dir: Path, *, url: str | None = None
    ) -> subprocess.Popen[bytes]:
        return self.spawn(
            name,
            "coordinator",
            "--job",
            str(job),
            "--state-dir",
            str(state_dir),
            "--out",
            str(self.tmp / name),
            "--linger-s",
            "0",
            "--broker",
            url or self.url,
            "--log-level",
            "INFO",
        )

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.watch is not None:
            self.watch.close()
        if self.broker is not None:
            self.broker.stop()
