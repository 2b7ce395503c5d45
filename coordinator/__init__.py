"""hyperFL coordinator: registry, round engine, planner, strategies, checkpoints, export."""
