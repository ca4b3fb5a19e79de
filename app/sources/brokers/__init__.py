"""Live broker price feeds: the kind registry, one client module per kind, the feeds service."""
