"""External-data collectors: one module per provider, each a poller plus a pure parser.

A collector only fetches and writes the exact response body to `raw.external.data`;
the context agent parses it, so replaying the raw topic reproduces the context stream.
"""
