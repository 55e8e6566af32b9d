"""quiesce: make multi-process and multi-thread programs terminate correctly and gracefully."""
