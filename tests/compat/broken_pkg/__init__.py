"""A package whose module fails to import (autodiscovery test)."""
