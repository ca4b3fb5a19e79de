#!/usr/bin/env bash
# Installs everything the service and its tests need on a fresh Debian machine:
# nats-server (Debian), Java 17 + Maven (only where missing; Maven resolves the Kafka
# broker jars), promtool (Debian's prometheus package: the alert rule tests), chromium +
# chromedriver (the status page's browser test) and npm (the page's charting library,
# web/package-lock.json), a Python venv in .venv with the package and its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || need_apt+=(nats-server)
command -v java >/dev/null 2>&1 || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need_apt+=(maven)
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)  # devstack up --secure: throwaway CA
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "install: apt-get install ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -o DPkg::Lock::Timeout=600 \
        "${need_apt[@]}" >/dev/null
fi

# The status page's charting library, from the npm registry at the locked version (served
# by the worker from web/node_modules; never a CDN, never committed).
if [ ! web/node_modules/.package-lock.json -nt web/package-lock.json ]; then
    (cd web && npm ci --omit=dev --no-audit --no-fund --loglevel=error)
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[test]'
echo "install: done ($(.venv/bin/python --version), $(.venv/bin/pip show faust-streaming | grep ^Version))"
