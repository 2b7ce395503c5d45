"""The ServerApp: Flower's own ``FedAvg`` from the job's initial weights, scored on the holdout.

Sampling: ``clients-per-round`` of the fleet members online at the time (:class:`OnlineFedAvg`;
each SuperNode is asked once which member it plays); round 1 waits until all ``num-nodes`` have
connected (``min_available_nodes``). No federated evaluation (``fraction_evaluate = 0``): the global
model is scored on the holdout by ``evaluate_fn`` with hyperfleet's NumPy forward pass.

``FedAvg.start`` has no early exit, so ``evaluate_fn`` ends the run: once the target accuracy is
reached, the time budget (counted from the start of round 1) is spent or ``max-rounds`` is done,
it writes the results and raises :class:`StopTraining`, which ``main`` catches. The results file is
also rewritten after every round, so a run killed from outside still leaves its curve.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import random
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

from agent.app import read_shard
from agent.numpy_trainer import NumpyTrainer

__all__ = ["RoundLog", "StopTraining", "app", "load_initial_weights"]

_log = logging.getLogger("flwr").getChild(__name__)

app = ServerApp()


class StopTraining(Exception):
    """Raised from ``evaluate_fn`` to end ``FedAvg.start`` early; carries the reason."""


def load_initial_weights(path: Path) -> list[np.ndarray[Any, Any]]:
    """Arrays of ``np.savez(path, *weights)``, in Keras order (``arr_0``, ``arr_1``, ...)."""
    with np.load(path) as npz:
        return [np.asarray(npz[f"arr_{i}"], dtype=np.float32) for i in range(len(npz.files))]


class RoundLog:
    """What each round cost and achieved; ends the run through :class:`StopTraining`."""

    def __init__(
        self,
        *,
        evaluator: NumpyTrainer,
        model_json: str,
        target_accuracy: float,
        time_budget_s: float,
        max_rounds: int,
        clients_per_round: int,
        model_bytes: int,
        results_path: Path,
    ) -> None:
        self._evaluator = evaluator
        self._model_json = model_json
        self._target = target_accuracy
        self._budget_s = time_budget_s
        self._max_rounds = max_rounds
        self._sampled = clients_per_round
        self._model_bytes = model_bytes
        self._path = results_path
        self._first_round_at: float | None = None
        self._round_started: float | None = None
        self._replies: list[dict[str, float]] | None = None
        self.result: dict[str, Any] = {
            "reached": False,
            "time_to_target_s": None,
            "rounds": 0,
            "curve": [],
            "round_wall_s": [],
            "round_device_s": [],
            "round_sampled": [],
            "round_replies": [],
            "round_pickup_s": [],
            "agent_seconds": 0.0,
            "agent_compute_seconds": 0.0,
            "bytes_moved": 0,
            "initial_accuracy": None,
            "first_round_started_at": None,
            "finished_at": None,
            "stop_reason": None,
            "done": False,
        }

    # FedAvg's train_metrics_aggr_fn: sees every valid reply of the round before evaluate_fn does.
    def aggregate_train_metrics(
        self, contents: list[RecordDict], weighted_by_key: str
    ) -> MetricRecord:
        self._replies = [
            {key: float(value) for key, value in record.items() if isinstance(value, int | float)}
            for content in contents
            for record in content.metric_records.values()
        ]
        return aggregate_metricrecords(contents, weighted_by_key)

    def evaluate(self, server_round: int, arrays: ArrayRecord) -> MetricRecord:
        now = time.time()
        scored = self._evaluator.evaluate(self._model_json, arrays.to_numpy_ndarrays())
        metrics = MetricRecord({"accuracy": scored.accuracy, "loss": scored.loss})
        r = self.result
        if server_round == 0 or self._first_round_at is None or self._round_started is None:
            r["initial_accuracy"] = scored.accuracy
            self._first_round_at = self._round_started = time.time()
            r["first_round_started_at"] = self._first_round_at
            self._write()
            return metrics

        replies, self._replies = self._replies or [], None
        device = [reply.get("device-s", 0.0) for reply in replies]
        elapsed = now - self._first_round_at
        r["rounds"] = server_round
        r["curve"].append([elapsed, scored.accuracy])
        r["round_wall_s"].append(now - self._round_started)
        r["round_device_s"].append(max(device, default=0.0))
        r["round_sampled"].append(self._sampled)
        r["round_replies"].append(len(replies))
        r["round_pickup_s"].append(
            max((reply.get("pickup-s", 0.0) for reply in replies), default=0.0)
        )
        r["agent_seconds"] += sum(device)
        r["agent_compute_seconds"] += sum(reply.get("compute-s", 0.0) for reply in replies)
        r["bytes_moved"] += (self._sampled + len(replies)) * self._model_bytes
        _log.info(
            "round %d: accuracy %.4f after %.1fs, %d/%d replies",
            server_round,
            scored.accuracy,
            elapsed,
            len(replies),
            self._sampled,
        )

        stop: str | None = None
        if scored.accuracy >= self._target:
            r["reached"], r["time_to_target_s"], stop = True, elapsed, "target reached"
        elif elapsed >= self._budget_s:
            stop = "time budget spent"
        elif server_round >= self._max_rounds:
            stop = "round cap reached"
        if stop is not None:
            r["stop_reason"] = stop
            r["done"] = True
            r["finished_at"] = time.time()
        self._write()
        if stop is not None:
            raise StopTraining(stop)
        self._round_started = time.time()
        return metrics

    def finish(self, reason: str) -> None:
        """Mark the results final when ``FedAvg.start`` returned by itself."""
        r = self.result
        if not r["done"]:
            r["stop_reason"], r["done"], r["finished_at"] = reason, True, time.time()
            self._write()

    def _write(self) -> None:
        tmp = self._path.with_name(self._path.name + ".tmp")
        tmp.write_text(json.dumps(self.result))
        os.replace(tmp, self._path)


class OnlineFedAvg(FedAvg):  # type: ignore[misc]  # flwr is typed only in its own venv
    """Flower's ``FedAvg``, sampling ``clients-per-round`` among the members online now.

    An emulated device that goes offline keeps its SuperNode connected (the emulation lives in
    the ClientApp), so plain ``FedAvg`` would sample it and wait out the round's timeout; a real
    device that goes offline drops its connection and its SuperNode stops being offered. This
    keeps the contenders' offline semantics the same: hyperfleet's registry offers only live
    agents."""

    def __init__(
        self, *, members: dict[int, int], online: Callable[[int], bool], **kw: Any
    ) -> None:
        super().__init__(**kw)
        self._members = members
        self._online = online

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        nodes = list(grid.get_node_ids())
        # A node that never said which member it plays counts as online (nothing to go on).
        live = [n for n in nodes if n not in self._members or self._online(self._members[n])]
        live = live or nodes  # nobody online: sample as plain FedAvg would, and wait
        picked = random.sample(live, min(self.min_train_nodes, len(live)))
        _log.info("configure_train: sampled %d of %d online nodes", len(picked), len(live))
        config["server-round"] = server_round
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        return list(self._construct_messages(record, picked, MessageType.TRAIN))


def _members(grid: Grid, *, timeout_s: float) -> dict[int, int]:
    """Node id -> fleet member index, asked of every SuperNode once (one query each)."""
    ids = list(grid.get_node_ids())
    asks = [Message(RecordDict(), dst_node_id=n, message_type=MessageType.QUERY) for n in ids]
    out: dict[int, int] = {}
    for reply in grid.send_and_receive(asks, timeout=timeout_s):
        if reply.has_content():
            record = reply.content["member"]
            assert isinstance(record, MetricRecord)
            out[reply.metadata.src_node_id] = int(record["partition-id"])
    _log.info("%d of %d SuperNodes told which member they play", len(out), len(ids))
    return out


@app.main()
def main(grid: Grid, context: Context) -> None:
    run = context.run_config
    random.seed(int(run["seed"]))  # FedAvg samples nodes with the module-level generator
    weights = load_initial_weights(Path(str(run["initial-weights"])))
    num_nodes = int(run["num-nodes"])
    k = int(run["clients-per-round"])
    max_rounds = int(run["max-rounds"])
    rounds = RoundLog(
        evaluator=NumpyTrainer(read_shard(Path(str(run["holdout"])))),
        model_json=Path(str(run["model-json"])).read_text(),
        target_accuracy=float(run["target-accuracy"]),
        time_budget_s=float(run["time-budget-s"]),
        max_rounds=max_rounds,
        clients_per_round=k,
        model_bytes=sum(w.nbytes for w in weights),
        results_path=Path(str(run["results-path"])),
    )
    # FedAvg.start scores the initial model and only then waits for nodes inside round 1; wait
    # here, so that round 1's clock starts with the whole fleet connected.
    reported = -1
    while (connected := len(list(grid.get_node_ids()))) < num_nodes:
        if connected != reported:
            _log.info("waiting for SuperNodes: %d of %d connected", connected, num_nodes)
            reported = connected
        time.sleep(0.5)
    members = _members(grid, timeout_s=float(run["round-timeout-s"]) + 120.0)
    strategy = OnlineFedAvg(
        members=members,
        # The ClientApp's module, as Flower loads it (top level, beside this one).
        online=lambda index: bool(importlib.import_module("client_app").member_online(run, index)),
        fraction_train=k / num_nodes,
        fraction_evaluate=0.0,
        min_train_nodes=k,
        min_available_nodes=num_nodes,
        train_metrics_aggr_fn=rounds.aggregate_train_metrics,
    )
    try:
        strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(weights),
            num_rounds=max_rounds,
            timeout=float(run["round-timeout-s"]),
            train_config=ConfigRecord(
                {
                    "local-epochs": int(run["local-epochs"]),
                    "batch-size": int(run["batch-size"]),
                    "learning-rate": float(run["learning-rate"]),
                }
            ),
            evaluate_fn=rounds.evaluate,
        )
    except StopTraining as stop:
        _log.info("stopping: %s", stop)
    else:
        rounds.finish("round cap reached")
