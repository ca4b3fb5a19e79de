"""Process-wide runtime objects shared by the components of one worker."""

from prometheus_client import REGISTRY

from app.faust_app import settings
from app.health import HealthRegistry
from app.metrics import LiveStateCollector

health = HealthRegistry(settings.service.name, settings.service.version)

REGISTRY.register(LiveStateCollector(health))
