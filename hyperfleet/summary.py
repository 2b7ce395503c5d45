"""What ``hyperfleet demo`` leaves behind: ``summary.json`` and ``accuracy.png``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from protocol import JobState

if TYPE_CHECKING:
    from .demo import DemoSettings

__all__ = ["demo_summary", "plot_accuracy"]


def demo_summary(
    s: DemoSettings,
    outcome: dict[str, Any],
    wall_s: float,
    broker_kind: str,
    states: list[tuple[float, JobState]],
    agents: int,
) -> dict[str, Any]:
    """``summary.json``: the outcome in the demo's words, one ``history`` entry per round.

    ``outcome`` is the coordinator's ``outcome.json``; ``states`` the ``(seconds since start,
    JobState)`` pairs the demo saw; ``wall_s`` the demo's own wall time in seconds.
    """
    history = outcome["history"]
    last_plan = history[-1]["plan"] if history else {}
    to_target = next(
        (r["started_s"] + r["duration_s"] for r in history if r["accuracy"] >= s.target_accuracy),
        None,
    )
    return {
        "mode": s.mode,
        "time_to_target_s": to_target,
        "stale_dropped": last_plan.get("stale_dropped", 0) if s.mode == "async" else None,
        "reached": outcome["reached"],
        "reason": outcome["reason"],
        "final_accuracy": outcome["best_accuracy"],
        "last_round_accuracy": outcome["final_accuracy"],
        "target_accuracy": s.target_accuracy,
        "rounds": outcome["rounds"],
        "wall_s": wall_s,
        "job_elapsed_s": outcome["elapsed_s"],
        "time_budget_s": s.time_budget_s,
        "agents": agents,
        "planner": s.planner,
        "infeasible_at_s": outcome.get("infeasible_at_s"),
        "alpha": s.alpha,
        "seed": s.seed,
        "broker": broker_kind,
        "bytes_moved": outcome["bytes_moved"],
        "agent_seconds": outcome["agent_seconds"],
        "dropped_messages": outcome["dropped"],
        "model": outcome["model"],
        "history": [
            {
                "round": r["round"],
                "elapsed_s": r["started_s"] + r["duration_s"],
                "accuracy": r["accuracy"],
                "participants": len(r["participants"]),
                "results": r["results"],
                "failures": len(r["failures"]),
                "plan": r["plan"],
            }
            for r in outcome["history"]
        ],
        "states_seen": len(states),
    }


def plot_accuracy(path: Path, summary: dict[str, Any]) -> None:
    """A PNG of holdout accuracy against job time (s), with the target and the budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [h["elapsed_s"] for h in summary["history"]]
    ys = [h["accuracy"] for h in summary["history"]]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(xs, ys, marker="o", markersize=3, label="holdout accuracy")
    ax.axhline(summary["target_accuracy"], color="tab:red", linestyle="--", label="target")
    ax.axvline(summary["time_budget_s"], color="tab:gray", linestyle=":", label="time budget")
    ax.set_xlabel("job time (s)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(f"hyperfleet demo: {summary['agents']} agents, {summary['rounds']} rounds")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
