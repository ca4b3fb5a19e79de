"""Faust plumbing: the app, the topics, and the delivery engine (outputs -> state -> offsets)."""
