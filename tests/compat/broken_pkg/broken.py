"""Fails on import, as a module with a bug would."""

raise RuntimeError("bug at import")
