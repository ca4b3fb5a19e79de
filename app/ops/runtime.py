"""Process-wide runtime objects shared by the components of one worker."""

from prometheus_client import REGISTRY

from app.ops.health import HealthRegistry
from app.ops.metrics import LiveStateCollector, PipelineTimings
from app.pipeline.faust_app import settings

health = HealthRegistry(settings.service.name, settings.service.version)
pipeline_timings = PipelineTimings()

REGISTRY.register(LiveStateCollector(health))
