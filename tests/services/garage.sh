#!/usr/bin/env bash
# Starts a single-node Garage (S3) in FOLDER on loopback, with a bucket
# `drp-test` and a key allowed on it. Prints shell assignments: S3_PORT,
# S3_KEY_ID, S3_SECRET, GARAGE_PID. With the folder of a Garage started
# before (its garage.toml exists), only restarts the server on its data.
set -euo pipefail
DIR=${1:?usage: tests/services/garage.sh FOLDER}
CACHE=${DRP_CACHE:-/var/cache/drp}
GARAGE="$CACHE/tools/bin/garage"
[ -x "$GARAGE" ] || { echo "garage is not installed: run tests/services/setup.sh" >&2; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_for() { local n=$1; shift; for _ in $(seq 1 $((n * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done; return 1; }
G() { "$GARAGE" -c "$DIR/garage.toml" "$@"; }
mkdir -p "$DIR"
FRESH=0
if [ ! -f "$DIR/garage.toml" ]; then
    FRESH=1
    S3_PORT=$(free_port); RPC_PORT=$(free_port); ADMIN_PORT=$(free_port)
    cat > "$DIR/garage.toml" <<TOML
metadata_dir = "$DIR/meta"
data_dir = "$DIR/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$RPC_PORT"
rpc_public_addr = "127.0.0.1:$RPC_PORT"
rpc_secret = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$S3_PORT"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$ADMIN_PORT"
TOML
    chmod 600 "$DIR/garage.toml"
else
    S3_PORT=$(sed -n 's/^api_bind_addr = "127.0.0.1:\([0-9]*\)"/\1/p' "$DIR/garage.toml" | head -1)
fi
"$GARAGE" -c "$DIR/garage.toml" server >> "$DIR/log" 2>&1 &
echo $! > "$DIR/pid"
wait_for 60 G status || { echo "Garage did not start (log: $DIR/log)" >&2; exit 1; }
if [ "$FRESH" = 1 ]; then
    NODE=$(G node id -q 2>/dev/null | cut -d@ -f1)
    G layout assign -z dc1 -c 1G "$NODE" > /dev/null
    G layout apply --version 1 > /dev/null
    wait_for 30 G bucket create drp-test
    KEY_OUT=$(G key create drp-test-key)
    echo "$KEY_OUT" | awk -F': *' '/Key ID/ {print $2; exit}' > "$DIR/key_id"
    echo "$KEY_OUT" | awk -F': *' '/Secret key/ {print $2; exit}' > "$DIR/secret"
    [ -s "$DIR/key_id" ] && [ -s "$DIR/secret" ] || { echo "could not read the Garage key: $KEY_OUT" >&2; exit 1; }
    G bucket allow --read --write --owner drp-test --key drp-test-key > /dev/null
fi
# The S3 API answers once the layout is applied.
wait_for 30 python3 -c "import socket; socket.create_connection(('127.0.0.1', $S3_PORT), 1)"
echo "S3_PORT=$S3_PORT"
echo "S3_KEY_ID=$(cat "$DIR/key_id")"
echo "S3_SECRET=$(cat "$DIR/secret")"
echo "GARAGE_PID=$(cat "$DIR/pid")"
