"""Starts the Central Hub registration with the worker when `hub.url` is configured."""

from app.ops.hub import HubRegistration
from app.ops.runtime import health
from app.pipeline.faust_app import app, settings

if settings.hub.url:
    hub_registration = app.service(HubRegistration(settings))
    health.add_section("central_hub", hub_registration.status)
