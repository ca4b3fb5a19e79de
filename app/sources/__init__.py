"""Sources: broker streams, external collectors and historical imports -> raw topics."""
