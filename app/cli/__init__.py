"""Operator commands: `faust -A app <command>` (also `python -m app` and `ingest`)."""
