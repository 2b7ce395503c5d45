"""The rendering of ``hyperfleet monitor``: a :class:`~hyperfleet.fleet_view.FleetView` as `rich`
tables (jobs, served models, agents, traffic per topic kind, the newest problems).

Pure: :func:`render_fleet` reads the view at a given monotonic ``now`` and returns a renderable;
the monitor hands it to ``rich.live.Live``, tests to ``Console(record=True)``.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from .fleet_view import TOPIC_KINDS, AgentRow, FleetView

__all__ = ["Header", "render_fleet"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Header:
    """What the monitor knows about its own connection."""

    broker: str
    connected: bool
    connections: int
    running_s: float
    notes: tuple[str, ...] = ()
    """The newest log lines worth showing (reconnects)."""


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _table(title: str) -> Table:
    return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False)


def _jobs(view: FleetView, now: float) -> Table:
    t = _table("jobs")
    for col in ("job", "status", "round", "accuracy", "best / target", "participants",
                "prediction", "budget left", "updated"):  # fmt: skip
        t.add_column(col, justify="right" if col in ("round", "budget left") else "left")
    for job_id in sorted(view.jobs):
        row = view.jobs[job_id]
        s = row.state
        style = "green" if s.status == "reached" else "red" if s.status == "lost" else ""
        failures = f" ({len(s.failures)} failed)" if s.failures else ""
        t.add_row(
            job_id,
            Text(s.status, style=style),
            str(s.round),
            f"{s.accuracy:.4f}",
            f"{s.best_accuracy:.4f} / {s.target_accuracy:.2f}",
            f"{len(s.participants)}{failures}",
            row.prediction or "-",
            _age(row.budget_left_s),
            _age(now - row.updated) + " ago",
        )
    if not view.jobs:
        t.add_row("(none)", *[""] * 8)
    return t


def _models(view: FleetView, now: float) -> Table:
    t = _table("models")
    for col in ("model", "published", "served", "state", "p95 ms", "SLA", "violations",
                "req/s", "cores", "stats"):  # fmt: skip
        t.add_column(col)
    for name in sorted(view.models):
        m = view.models[name]
        published = "-"
        if m.ref is not None:
            acc = m.ref.metrics.get("accuracy")
            published = f"v{m.ref.version}" + (f" (acc {acc:.3f})" if acc is not None else "")
        s = m.stats
        if s is None:
            t.add_row(name, published, "-", "-", "-", "-", "-", "-", "-", "none yet")
            continue
        at_pct = s.response_ms
        breaking = at_pct is not None and at_pct > s.sla_ms
        sla = f"p{s.percentile:g} {_ms(at_pct)} / {s.sla_ms:g} ms"
        violations = "-" if s.violation_share is None else f"{100 * s.violation_share:.1f}%"
        stale = m.stats_stale(now)
        t.add_row(
            name,
            published,
            f"v{s.version}" if s.version else "-",
            Text(
                s.state + (f": {s.reason}" if s.reason else ""),
                style="green" if s.state == "READY" else "yellow",
            ),
            _ms(s.p95_ms),
            Text(sla, style="red" if breaking else ""),
            violations,
            f"{s.requests_per_s:.1f}",
            f"{s.cores:g}",
            Text(
                _age(m.stats_age(now)) + " ago" + (" (stale)" if stale else ""),
                style="red" if stale else "",
            ),
        )
    if not view.models:
        t.add_row("(none)", *[""] * 9)
    return t


def _reliability(row: AgentRow) -> str:
    if row.reliability is None:
        return f"- ({len(row.pending)} pending)" if row.pending else "-"
    return f"{100 * row.reliability:.0f}% ({row.ok}/{row.due})"


def _agent_order(row: AgentRow) -> tuple[int, str]:
    return (0 if row.status == "online" else 1 if row.status == "unknown" else 2, row.agent_id)


def _agents(view: FleetView, now: float, max_rows: int | None) -> Table:
    online = sum(1 for a in view.agents.values() if a.status == "online")
    t = _table(f"agents ({online} online of {len(view.agents)})")
    for col in ("agent", "status", "device class", "heartbeat", "load", "busy",
                "reliability", "missed beats", "last failure"):  # fmt: skip
        t.add_column(col)
    rows = sorted(view.agents.values(), key=_agent_order)
    shown = rows if max_rows is None else rows[: max(max_rows, 0)]
    for a in shown:
        stale = a.stale(now)
        status_style = "green" if a.status == "online" and not stale else "red"
        t.add_row(
            a.agent_id,
            Text(
                a.status + (" (silent)" if stale and a.status == "online" else ""),
                style=status_style,
            ),
            a.device_class or "-",
            _age(a.heartbeat_age(now)) + (" ago" if a.last_heartbeat is not None else ""),
            "-" if a.load is None else f"{a.load:.2f}",
            "yes" if a.busy else "",
            _reliability(a),
            str(a.missed_heartbeats),
            a.last_failure[:40],
        )
    if len(shown) < len(rows):
        hidden = rows[len(shown) :]
        hidden_online = sum(1 for a in hidden if a.status == "online")
        t.add_row(f"... {len(hidden)} more", f"{hidden_online} online", *[""] * 7)
    if not rows:
        t.add_row("(none)", *[""] * 8)
    return t


def _traffic(view: FleetView, now: float) -> Table:
    t = _table("traffic")
    for col in ("topic kind", "msg/s", "bytes/s", "messages", "bytes"):
        t.add_column(col, justify="left" if col == "topic kind" else "right")
    for kind in TOPIC_KINDS:
        count = view.rates.messages[kind]
        if not count:
            continue
        rate, byte_rate = view.rates.rate(kind, now)
        t.add_row(kind, f"{rate:.1f}", _bytes(byte_rate), str(count),
                  _bytes(view.rates.bytes[kind]))  # fmt: skip
    if not view.received:
        t.add_row("(none)", "", "", "", "")
    return t


def render_fleet(
    view: FleetView, now: float, *, header: Header | None = None, max_agent_rows: int | None = None
) -> RenderableType:
    """The whole screen: header, jobs, models, agents (at most ``max_agent_rows``), traffic and
    the newest undecodable or unexpected messages."""
    view.expire(now)
    parts: list[RenderableType] = []
    if header is not None:
        link = (
            Text("connected", style="green")
            if header.connected
            else Text("reconnecting", style="bold red")
        )
        parts.append(
            Text.assemble(
                ("hyperfleet monitor ", "bold"),
                f"{header.broker} prefix {view.topics.prefix}  ",
                link,
                f"  connections {header.connections}  up {_age(header.running_s)}  "
                f"messages {view.received}  ",
                (f"undecodable {view.undecodable}", "red" if view.undecodable else ""),
                f"  unexpected {view.unexpected}",
            )
        )
    parts += [_jobs(view, now), _models(view, now), _agents(view, now, max_agent_rows)]
    parts.append(_traffic(view, now))
    problems = list(view.problems)[-5:]
    notes = list(header.notes) if header is not None else []
    if problems or notes:
        parts.append(Text("\n".join(problems + notes), style="yellow"))
    return Group(*parts)
