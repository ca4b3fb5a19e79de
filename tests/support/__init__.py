"""Shared test machinery: the real local stack, a worker subprocess, Kafka helpers."""
