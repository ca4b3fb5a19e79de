"""`GET /health`: the service's health as the design document lists it."""

from __future__ import annotations

from faust.web import Request, Response, View

from app.faust_app import app
from app.runtime import health


@app.page("/health")
class HealthView(View):
    async def get(self, request: Request) -> Response:
        return self.json(health.report())
