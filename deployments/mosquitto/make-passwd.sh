#!/usr/bin/env bash
# Add or update Mosquitto users with fresh random passwords, without putting a password on a command line.
#
#   make-passwd.sh PASSWD_FILE OUT_DIR USER [USER ...]
#
# For each USER (a device id, or edgeops-control) a random password is generated, hashed into PASSWD_FILE
# (created when missing; other users in it are kept) and written to OUT_DIR/USER.env as
# EDGEOPS_AGENT_PASSWORD=... (mode 0600) for the device's /etc/edgeops-agent/agent.env. Re-running it for a
# user rotates that user's password. Reload Mosquitto afterwards (systemctl reload mosquitto).
# The shipped mosquitto.conf has two password files, one per listener: devices go in
# /etc/mosquitto/edgeops-devices.passwd, the control plane (edgeops-control) in edgeops-control.passwd.
set -euo pipefail

if [ "$#" -lt 3 ]; then
    echo "usage: $0 PASSWD_FILE OUT_DIR USER [USER ...]" >&2
    exit 2
fi
passwd_file=$1
out_dir=$2
shift 2
command -v mosquitto_passwd >/dev/null || { echo "$0: mosquitto_passwd not found (apt-get install mosquitto)" >&2; exit 2; }

umask 077
mkdir -p "$out_dir"
plain=$(mktemp)
trap 'rm -f "$plain"' EXIT

for user in "$@"; do
    case $user in
        *[!A-Za-z0-9_.-]* | "" | .* | *..*) echo "$0: invalid user name '$user'" >&2; exit 2 ;;
    esac
    password=$(head -c 24 /dev/urandom | base64 | tr -d '/+=' | head -c 32)
    printf '%s:%s\n' "$user" "$password" >>"$plain"
    printf 'EDGEOPS_AGENT_PASSWORD=%s\n' "$password" >"$out_dir/$user.env"
done

# mosquitto_passwd -U hashes a plain "user:password" file in place; merge it with the existing entries.
mosquitto_passwd -U "$plain"
if [ -f "$passwd_file" ]; then
    cut -d: -f1 "$plain" | while read -r user; do mosquitto_passwd -D "$passwd_file" "$user" >/dev/null; done
    cat "$plain" >>"$passwd_file"
else
    cp "$plain" "$passwd_file"
fi
chmod 0640 "$passwd_file" 2>/dev/null || true
echo "updated $passwd_file for: $*; credentials in $out_dir/<user>.env"
