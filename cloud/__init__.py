"""hyperfleet's cloud tier. Its parts are separate packages that never import each other:
``cloud.pipelines``, ``cloud.roma`` and ``cloud.dynaspark`` (docs/architecture.md).
This package itself exports nothing."""

__all__: list[str] = []
