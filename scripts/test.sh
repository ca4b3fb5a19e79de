#!/usr/bin/env bash
# Installs everything, then runs the whole test suite (lint, unit, integration and fault
# tests). The tests start their own Kafka and NATS on their own ports (tests/conftest.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/pytest -q -p no:cacheprovider "$@"
