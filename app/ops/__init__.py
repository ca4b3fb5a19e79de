"""Operating the worker: health, metrics, Central Hub registration and the web views."""
