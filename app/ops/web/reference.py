"""`GET /reference/{symbol}`: the latest live-versus-Dukascopy deviation per broker.

The `reference-check` command writes one JSON file per symbol under
`historical.results_dir`; this view serves it, so the check can run anywhere that
shares the data directory without the worker having to run it.
"""

from __future__ import annotations

import json

from faust.web import Request, Response, View

from app.core.models import normalise_symbol
from app.ops.reference_results import result_path
from app.pipeline.faust_app import app, settings


@app.page("/reference/{symbol}/")
class ReferenceView(View):
    async def get(self, request: Request, symbol: str) -> Response:
        name = normalise_symbol(symbol)
        if not name.isalnum():
            return self.json({"error": f"bad symbol {symbol!r}"}, status=400)
        path = result_path(settings, name)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return self.json(
                {"symbol": name, "error": "no reference check has run for this symbol"},
                status=404,
            )
        return self.json(data)
