"""quiesce._core: see docs/architecture.md."""
