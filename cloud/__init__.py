"""hyperfleet cloud tier: pipelines now; dynaSpark and ROMA come next (see docs/architecture.md)."""
