#!/usr/bin/env bash
# Install or upgrade the edgeops agent on a device: a venv with the wheel (no extras: onnxruntime, numpy,
# paho-mqtt, cryptography only), a config, the release key(s), a hardened systemd unit. Idempotent: run it
# again with a newer wheel to upgrade; an existing agent.toml is never overwritten.
#
#   sudo install-agent.sh --wheel edgeops-0.2.0-py3-none-any.whl --device-id press-17 \
#       --broker mqtts://broker.example:8883 --public-key release.pub [--public-key old.pub] \
#       [--label site=berlin ...] [--credentials press-17.env] [--ca-file ca.crt] [--http 127.0.0.1:8765]
#
# Paths can be moved (for tests or unusual layouts) with PREFIX, ETC_DIR, DATA_DIR, UNIT_DIR; NO_SYSTEMD=1
# skips systemctl and NO_USER=1 skips creating the service user. See docs/agent-operations.md.
set -euo pipefail

PREFIX=${PREFIX:-/opt/edgeops-agent}
ETC_DIR=${ETC_DIR:-/etc/edgeops-agent}
DATA_DIR=${DATA_DIR:-/var/lib/edgeops-agent}
UNIT_DIR=${UNIT_DIR:-/etc/systemd/system}
SERVICE_USER=${SERVICE_USER:-edgeops-agent}
PYTHON=${PYTHON:-python3}
HERE=$(cd "$(dirname "$0")" && pwd)

die() { echo "install-agent: $*" >&2; exit 2; }

wheel="" device="" broker="mqtt://127.0.0.1:1883" http="127.0.0.1:8765" credentials="" ca_file=""
keys=() labels=()
while [ "$#" -gt 0 ]; do
    case $1 in
        --wheel) wheel=${2:?}; shift 2 ;;
        --device-id) device=${2:?}; shift 2 ;;
        --broker) broker=${2:?}; shift 2 ;;
        --public-key) keys+=("${2:?}"); shift 2 ;;
        --label) labels+=("${2:?}"); shift 2 ;;
        --http) http=${2:?}; shift 2 ;;
        --credentials) credentials=${2:?}; shift 2 ;;
        --ca-file) ca_file=${2:?}; shift 2 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
[ -n "$wheel" ] && [ -f "$wheel" ] || die "--wheel FILE is required and must exist"
if [ ! -f "$ETC_DIR/agent.toml" ]; then
    [ -n "$device" ] || die "--device-id is required for a first install"
    [ "${#keys[@]}" -gt 0 ] || die "--public-key is required for a first install"
fi
for key in "${keys[@]}"; do [ -f "$key" ] || die "public key $key does not exist"; done
if [ "${NO_USER:-0}" != 1 ] && [ "$(id -u)" -ne 0 ]; then die "run as root (or set NO_USER=1 and your own paths)"; fi

# 1. service user (no home, no shell)
if [ "${NO_USER:-0}" != 1 ] && ! id "$SERVICE_USER" >/dev/null 2>&1; then
    useradd --system --no-create-home --home-dir "$DATA_DIR" --shell /usr/sbin/nologin "$SERVICE_USER"
fi

# 2. venv with the wheel, no extras; --system-site-packages never (the agent must not see host packages)
[ -x "$PREFIX/venv/bin/python" ] || "$PYTHON" -m venv "$PREFIX/venv"
"$PREFIX/venv/bin/python" -m pip install --quiet --upgrade "$wheel"
"$PREFIX/venv/bin/edgeops-agent" --version

# 3. config, keys, credentials (root-owned, readable by the service group)
install -d -m 0750 "$ETC_DIR" "$ETC_DIR/keys"
key_list=""
for key in "${keys[@]}"; do
    install -m 0644 "$key" "$ETC_DIR/keys/$(basename "$key")"
    key_list="$key_list\"$ETC_DIR/keys/$(basename "$key")\", "
done
if [ -n "$ca_file" ]; then install -m 0644 "$ca_file" "$ETC_DIR/ca.crt"; fi
if [ -n "$credentials" ]; then install -m 0640 "$credentials" "$ETC_DIR/agent.env"; fi
if [ ! -f "$ETC_DIR/agent.toml" ]; then
    {
        echo "# written by install-agent.sh; every key: $HERE/agent.example.toml"
        echo "device_id = \"$device\""
        echo "data_dir = \"$DATA_DIR\""
        echo "broker_url = \"$broker\""
        echo "public_keys = [${key_list%, }]"
        echo "http = \"$http\""
        echo "username = \"$device\"  # the Mosquitto ACL expects username == device id"
        if [ -n "$ca_file" ]; then echo "ca_file = \"$ETC_DIR/ca.crt\""; fi
        echo "[labels]"
        for label in "${labels[@]}"; do echo "${label%%=*} = \"${label#*=}\""; done
    } >"$ETC_DIR/agent.toml"
    chmod 0640 "$ETC_DIR/agent.toml"
else
    echo "install-agent: keeping the existing $ETC_DIR/agent.toml"
fi
install -d -m 0750 "$DATA_DIR"
if [ "${NO_USER:-0}" != 1 ]; then
    chown -R "root:$SERVICE_USER" "$ETC_DIR"
    chown "$SERVICE_USER:$SERVICE_USER" "$DATA_DIR"
fi

# 4. unit (paths rewritten when moved), then (re)start
install -d "$UNIT_DIR"
sed -e "s#/opt/edgeops-agent#$PREFIX#g" -e "s#/etc/edgeops-agent#$ETC_DIR#g" \
    -e "s#/var/lib/edgeops-agent#$DATA_DIR#g" "$HERE/edgeops-agent.service" >"$UNIT_DIR/edgeops-agent.service"
if [ "${NO_SYSTEMD:-0}" != 1 ]; then
    systemctl daemon-reload
    systemctl enable edgeops-agent.service
    systemctl restart edgeops-agent.service
    systemctl --no-pager --lines=5 status edgeops-agent.service || true
fi
echo "install-agent: done ($PREFIX/venv, $ETC_DIR/agent.toml, $UNIT_DIR/edgeops-agent.service)"
