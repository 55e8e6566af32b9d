"""quiesce._proc: see docs/architecture.md."""
