"""`python -m app ...` is the same as `faust -A app ...`."""

from app.pipeline.faust_app import app

app.main()
