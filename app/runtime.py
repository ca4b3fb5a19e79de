"""Process-wide runtime objects shared by the components of one worker."""

from app.faust_app import settings
from app.health import HealthRegistry

health = HealthRegistry(settings.service.name, settings.service.version)
