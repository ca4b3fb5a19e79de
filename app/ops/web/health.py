"""`GET /health`: the service's health as the design document lists it."""

from __future__ import annotations

from faust.web import Request, Response, View

from app.ops.runtime import health
from app.pipeline.faust_app import app


@app.page("/health")
class HealthView(View):
    async def get(self, request: Request) -> Response:
        return self.json(health.report())
