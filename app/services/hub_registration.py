"""Starts the Central Hub registration with the worker when `hub.url` is configured."""

from app.faust_app import app, settings
from app.hub import HubRegistration
from app.runtime import health

if settings.hub.url:
    hub_registration = app.service(HubRegistration(settings))
    health.add_section("central_hub", hub_registration.status)
