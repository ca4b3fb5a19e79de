"""Benchmarks of the ingestion pipeline: `python -m bench.run` (see bench/run.py)."""
