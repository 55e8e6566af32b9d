"""quiesce._scope: see docs/architecture.md."""
