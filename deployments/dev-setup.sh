#!/usr/bin/env bash
# Create .venv/ and install edgeops with the control-plane and dev extras. Idempotent: a second run is quick.
set -euo pipefail
cd "$(dirname "$0")/.."
# The demo and the tests run real brokers: install Debian's mosquitto when it is missing and we may.
if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q mosquitto
    else
        echo "dev-setup: the demo and the tests need the mosquitto binary (apt-get install mosquitto)" >&2
    fi
fi
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.edgeops-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
    .venv/bin/python -m pip install -q -e ".[control,dev]" 2>&1 | grep -v '^WARNING: Location' || true
    .venv/bin/python -c "import edgeops, edge_agent, prefect, sklearn, skl2onnx, onnxruntime, paho.mqtt, mypy"
    touch "$stamp"
fi
