"""Background services of the worker that are neither sources nor agents (autodiscovered)."""
