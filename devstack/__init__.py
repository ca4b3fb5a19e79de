"""Developer tools outside the service package: the local Kafka + NATS stack, the simulator."""
