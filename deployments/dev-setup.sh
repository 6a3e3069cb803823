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
say() { echo "dev-setup: $*"; }
if [ ! -x .venv/bin/python ]; then
    say "creating .venv/ with $("$PY" --version 2>&1)"
    "$PY" -m venv .venv
fi
stamp=.venv/.edgeops-installed
# pip's own warnings about a moved location are noise here; everything else it says is shown, so a
# two-minute install is never silent: progress bars on a terminal, a line per package when piped.
quiet_location() { grep -v '^WARNING: Location' >&2 || true; }
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    say "installing edgeops with its control and dev extras into .venv/ (about two minutes the first time)"
    .venv/bin/python -m pip install -q --upgrade pip 2> >(quiet_location)
    .venv/bin/python -m pip install --progress-bar on -e ".[control,dev]" 2> >(quiet_location)
    .venv/bin/python -c "import edgeops, edge_agent, prefect, sklearn, skl2onnx, onnxruntime, paho.mqtt, mypy"
    touch "$stamp"
    say "done: .venv/bin/edgeops and .venv/bin/edgeops-agent are installed"
else
    say ".venv/ is up to date (delete .venv/.edgeops-installed to reinstall)"
fi
