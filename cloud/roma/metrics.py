"""Prometheus metrics of one ROMA server (``prometheus-client``, a registry per server).

Queue time, compute time and end-to-end time are kept apart, so the serving layer's own cost
(end-to-end minus compute) can be read off ``/metrics``::

    roma_queue_seconds{model}        waiting before a worker took the request's batch
    roma_compute_seconds{model}      the batch's model compute, measured in the worker
    roma_request_seconds{model}      end to end, from the HTTP body read to the response built
    roma_requests_total{model,code}  answered requests by HTTP status
    roma_batches_total{model,device} batches run, by device (cpu, gpu)
    roma_batch_size{model}           rows per batch
    roma_shed_total{model}           requests shed (429)
    roma_sla_violations_total{model} requests answered slower than the SLA
    roma_cores{model}                CPU cores allocated by the controller
    roma_window_response_seconds{model}  the SLA percentile over the SLA window
    roma_sla_seconds{model}          the SLA itself
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["ServerMetrics"]

_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
)  # fmt: skip


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.queue = Histogram("roma_queue_seconds", "Time queued", ["model"], registry=r,
                               buckets=_BUCKETS)  # fmt: skip
        self.compute = Histogram("roma_compute_seconds", "Model compute per batch", ["model"],
                                 registry=r, buckets=_BUCKETS)  # fmt: skip
        self.request = Histogram("roma_request_seconds", "End-to-end response time", ["model"],
                                 registry=r, buckets=_BUCKETS)  # fmt: skip
        self.requests = Counter("roma_requests", "Requests answered", ["model", "code"],
                                registry=r)  # fmt: skip
        self.batches = Counter("roma_batches", "Batches run", ["model", "device"], registry=r)
        self.batch_size = Histogram("roma_batch_size", "Rows per batch", ["model"], registry=r,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))  # fmt: skip
        self.shed = Counter("roma_shed", "Requests shed (429)", ["model"], registry=r)
        self.violations = Counter("roma_sla_violations", "Requests slower than the SLA",
                                  ["model"], registry=r)  # fmt: skip
        self.cores = Gauge("roma_cores", "CPU cores allocated", ["model"], registry=r)
        self.window = Gauge("roma_window_response_seconds", "SLA percentile over the window",
                            ["model"], registry=r)  # fmt: skip
        self.sla = Gauge("roma_sla_seconds", "Response-time SLA", ["model"], registry=r)

    def exposition(self) -> bytes:
        """The text exposition format of every metric."""
        return generate_latest(self.registry)
