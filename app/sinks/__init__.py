"""Output sinks that mirror market-data-stream elsewhere (NATS)."""
