"""quiesce._pools: see docs/architecture.md."""
