"""`GET /livez`: liveness only (the process serves HTTP); open even with a web token."""

from __future__ import annotations

from faust.web import Request, Response, View

from app.ops.web_auth import LIVENESS_PATH
from app.pipeline.faust_app import app


@app.page(LIVENESS_PATH)
class LivenessView(View):
    async def get(self, request: Request) -> Response:
        return self.json({"status": "alive"})
