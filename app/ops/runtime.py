"""Process-wide runtime objects shared by the components of one worker."""

from prometheus_client import REGISTRY

from app import __version__
from app.ops.health import HealthRegistry
from app.ops.metrics import LiveStateCollector, PipelineTimings
from app.pipeline.faust_app import settings

health = HealthRegistry(settings.service.name, __version__)
pipeline_timings = PipelineTimings()

REGISTRY.register(LiveStateCollector(health))
