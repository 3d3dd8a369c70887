#!/usr/bin/env bash
# The `estate` service of docker-compose.yaml (profile demo): runs the simulated CRM estate and makes
# it reachable from the Airflow containers without changing its rule that it listens on loopback only.
#   1. start a fresh estate: an sshd per environment, the config-DB cluster, the release repository;
#   2. relay each port its connections use from this container's compose-network address to
#      127.0.0.1 (socat), so workers and the triggerer reach it as host "$ESTATE_PUBLISHED_HOST";
#   3. import those connections, pointed at that host, into Airflow's metadata database.
# The keys and the release repository are read by the workers from the shared estate volume.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

export ESTATE_ROOT="${ESTATE_ROOT:-/tmp/crm-estate}"
published_host="${ESTATE_PUBLISHED_HOST:-estate}"
relays=()

stop() {
  trap - TERM INT
  echo "estate: stopping"
  kill "${relays[@]}" 2>/dev/null || true
  python -m crm_estate down || true
}
trap 'stop; exit 0' TERM INT

# The estate is demo data rebuilt at every start: pid files and a cluster's postmaster.pid left by a
# previous container would name processes that no longer exist.
mkdir -p "$ESTATE_ROOT"
find "$ESTATE_ROOT" -mindepth 1 -delete
python -m crm_estate up

address="$(hostname -i | awk '{print $1}')"
published="$ESTATE_ROOT/connections.compose.json"
python "$here/publish_connections.py" --connections "$ESTATE_ROOT/connections.json" \
  --host "$published_host" --output "$published" > "$ESTATE_ROOT/relayed-ports"
mapfile -t ports < "$ESTATE_ROOT/relayed-ports"
for port in "${ports[@]}"; do
  socat "TCP-LISTEN:${port},bind=${address},fork,reuseaddr" "TCP:127.0.0.1:${port}" &
  relays+=("$!")
done
if [ "${#relays[@]}" -eq 0 ]; then
  sleep infinity &  # nothing to relay (no customer configs): stay up until stopped
  relays+=("$!")
fi

airflow connections import --overwrite "$published"
touch "$ESTATE_ROOT/.published"
echo "estate: up; ports ${ports[*]:-none} relayed on ${address} as host ${published_host}"

# Stay in the foreground; if a relay dies, stop and exit non-zero so compose restarts the service.
wait -n "${relays[@]}" || true
echo "estate: a relay exited" >&2
stop
exit 1
