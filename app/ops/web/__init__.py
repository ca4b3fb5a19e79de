"""Web views served by the worker's faust web server."""
