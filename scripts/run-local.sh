#!/usr/bin/env bash
# Installs everything and runs the service on the local stack: Kafka + NATS (devstack.stack),
# the OANDA-compatible price simulator, and `faust -A app worker`. Ctrl-C stops it all.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
PY=.venv/bin/python
mkdir -p .run

cleanup() {
    trap - EXIT INT TERM
    set +e  # a child's non-zero exit status must not abort the clean-up
    for pid in ${WORKER_PID:-} ${SIM_PID:-}; do kill -TERM "$pid" 2>/dev/null; done
    for pid in ${WORKER_PID:-} ${SIM_PID:-}; do wait "$pid" 2>/dev/null; done
    "$PY" -m devstack.stack down
}
trap cleanup EXIT INT TERM

"$PY" -m devstack.stack up
if "$PY" -c "import devstack.simulator" 2>/dev/null; then
    "$PY" -m devstack.simulator --port 8090 --mt5-port 18812 > .run/simulator.log 2>&1 &
    SIM_PID=$!
    # the simulator accepts any token; real accounts read theirs from these variables
    export OANDA_TOKEN_IC_MARKETS=${OANDA_TOKEN_IC_MARKETS:-sim} \
        OANDA_TOKEN_PEPPERSTONE=${OANDA_TOKEN_PEPPERSTONE:-sim} OANDA_TOKEN_FXCM=${OANDA_TOKEN_FXCM:-sim} \
        MT5_PASSWORD_IC_MARKETS=${MT5_PASSWORD_IC_MARKETS:-sim} \
        MT5_PASSWORD_PEPPERSTONE=${MT5_PASSWORD_PEPPERSTONE:-sim} MT5_PASSWORD_FXCM=${MT5_PASSWORD_FXCM:-sim}
fi
echo "run-local: worker starting; health at http://127.0.0.1:6066/health"
.venv/bin/faust -A app worker -l info &
WORKER_PID=$!
wait "$WORKER_PID"
