"""quiesce._cli: see docs/architecture.md."""
