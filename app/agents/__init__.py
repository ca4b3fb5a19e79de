"""Faust agents: raw topics -> validation -> tables -> market-data-stream -> NATS."""
