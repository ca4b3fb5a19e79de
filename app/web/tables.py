"""JSON views of the tables."""

from __future__ import annotations

from faust.web import Request, Response, View

from app.faust_app import app
from app.tables.raw_counts import raw_counts


@app.page("/tables/raw-counts")
class RawCountsView(View):
    async def get(self, request: Request) -> Response:
        return self.json(dict(raw_counts.items()))
