#!/usr/bin/env bash
# Starts the real services the suite talks to, each on loopback on a free
# port, in a fresh folder: PostgreSQL 15, MariaDB, Garage (S3), OpenSSH
# (SFTP) and BIND 9 (DNS), and a fleet of hosts as network namespaces with their own sshd. Prints the path of an env file describing them; tests read it
# through DRP_TEST_ENV. Stop everything with tests/services/stop.sh FOLDER.
set -euo pipefail

CACHE=${DRP_CACHE:-/var/cache/drp}
DIR=$(mktemp -d /tmp/drp-services.XXXXXX)
chmod 755 "$DIR"
ENV="$DIR/env"
log() { echo "start: $*" >&2; }
die() { echo "start: $* (see tests/services/start.sh; logs in $DIR)" >&2; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
secret() { head -c 18 /dev/urandom | base64 | tr -d '/+='; }
wait_for() { # seconds, command...
    local n=$1; shift
    for _ in $(seq 1 $((n * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    return 1
}

# --- PostgreSQL -----------------------------------------------------------
PGBIN=/usr/lib/postgresql/15/bin
PG_PORT=$(free_port)
PG_PASSWORD=$(secret)
mkdir -p "$DIR/pg"
chown postgres: "$DIR/pg"
echo "$PG_PASSWORD" > "$DIR/pg/pwfile"
chown postgres: "$DIR/pg/pwfile"
su postgres -s /bin/sh -c "$PGBIN/initdb -D '$DIR/pg/data' -U postgres --auth-local=trust --auth-host=scram-sha-256 --pwfile='$DIR/pg/pwfile' -E UTF8 --locale=C.UTF-8" > "$DIR/pg/initdb.log" 2>&1 \
    || die "PostgreSQL initdb failed"
su postgres -s /bin/sh -c "$PGBIN/pg_ctl -D '$DIR/pg/data' -l '$DIR/pg/log' -w -t 60 -o \"-c listen_addresses=127.0.0.1 -p $PG_PORT -c unix_socket_directories='$DIR/pg' -c fsync=off\" start" > /dev/null \
    || die "PostgreSQL did not start"
log "PostgreSQL on 127.0.0.1:$PG_PORT"

# --- MariaDB --------------------------------------------------------------
MY_PORT=$(free_port)
MY_PASSWORD=$(secret)
mkdir -p "$DIR/my"
mariadb-install-db --no-defaults --datadir="$DIR/my/data" --user=root --skip-test-db > "$DIR/my/install.log" 2>&1 \
    || die "MariaDB install-db failed"
mariadbd --no-defaults --user=root --datadir="$DIR/my/data" --port="$MY_PORT" --bind-address=127.0.0.1 \
    --socket="$DIR/my/sock" --pid-file="$DIR/my/pid" --log-error="$DIR/my/log" --innodb-flush-log-at-trx-commit=0 \
    --log-bin="$DIR/my/binlog" --binlog-format=ROW --server-id=1 &
wait_for 60 mariadb-admin --no-defaults --socket="$DIR/my/sock" -uroot ping || die "MariaDB did not start"
mariadb --no-defaults --socket="$DIR/my/sock" -uroot <<SQL || die "MariaDB user setup failed"
CREATE USER 'drp'@'127.0.0.1' IDENTIFIED BY '$MY_PASSWORD';
GRANT ALL PRIVILEGES ON *.* TO 'drp'@'127.0.0.1' WITH GRANT OPTION;
SQL
log "MariaDB on 127.0.0.1:$MY_PORT"

# --- Garage (S3) ------------------------------------------------------------
eval "$(bash "$(dirname "$0")/garage.sh" "$DIR/garage")" || die "Garage did not start"
log "Garage S3 on 127.0.0.1:${S3_PORT}"

# --- OpenSSH (SFTP) -----------------------------------------------------------
SFTP_PORT=$(free_port)
mkdir -p "$DIR/ssh" "$DIR/sftp" /run/sshd
ssh-keygen -q -t ed25519 -N '' -f "$DIR/ssh/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$DIR/ssh/client_key"
cp "$DIR/ssh/client_key.pub" "$DIR/ssh/authorized_keys"
cat > "$DIR/ssh/sshd_config" <<CONF
Port $SFTP_PORT
ListenAddress 127.0.0.1
HostKey $DIR/ssh/host_key
PidFile $DIR/ssh/pid
AuthorizedKeysFile $DIR/ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
MaxStartups 100
MaxSessions 100
Subsystem sftp internal-sftp
CONF
/usr/sbin/sshd -f "$DIR/ssh/sshd_config" -E "$DIR/ssh/log"
wait_for 30 python3 -c "import socket; socket.create_connection(('127.0.0.1', $SFTP_PORT), 1)" || die "sshd did not start"
log "SFTP on 127.0.0.1:$SFTP_PORT"

# --- btrfs on a loop device --------------------------------------------------
truncate -s 512M "$DIR/btrfs.img"
mkfs.btrfs -q "$DIR/btrfs.img" > "$DIR/mkfs.log" 2>&1 || die "mkfs.btrfs failed"
mkdir -p "$DIR/btrfs"
mount -o loop "$DIR/btrfs.img" "$DIR/btrfs" || die "cannot mount the btrfs image on a loop device"
log "btrfs on $DIR/btrfs"

# --- Fleet: hosts as network namespaces, each with its own sshd ---------------
# A bridge with no route anywhere joins them to this namespace, where the
# coordinator runs. Host N is namespace ${FLEET_NS}N at ${FLEET_NET}.$((10+N)),
# its sshd on port 22 there. Tests write each host's authorized_keys (the
# line pinning `drp-agent serve --stdio`) and policy. Host 2 also runs a
# PostgreSQL of its own, on its address.
FLEET_HOSTS=${DRP_FLEET_HOSTS:-17}
TAG=$(basename "$DIR" | tr -dc 'a-zA-Z0-9' | tail -c 6)
FLEET_NS="drp$TAG-h"
FLEET_LINK="vh$TAG"
FLEET_BR="drpbr$TAG"
FLEET_NET="10.$((200 + RANDOM % 50)).$((RANDOM % 250))"
FLEET="$DIR/fleet"
mkdir -p "$FLEET"
echo "$FLEET_BR" > "$FLEET/bridge"
ip link add "$FLEET_BR" type bridge || die "cannot create the fleet's bridge (needs root and network namespaces)"
ip addr add "$FLEET_NET.1/24" dev "$FLEET_BR"
ip link set "$FLEET_BR" up
ssh-keygen -q -t ed25519 -N '' -C drp-coordinator -f "$FLEET/coordinator_key"
ssh-keygen -q -t ed25519 -N '' -C stranger -f "$FLEET/stranger_key"
: > "$FLEET/known_hosts"
for i in $(seq 1 "$FLEET_HOSTS"); do
    NS="$FLEET_NS$i"
    H="$FLEET/h$i"
    ADDR="$FLEET_NET.$((10 + i))"
    mkdir -p "$H"
    echo "$NS" >> "$FLEET/namespaces"
    ip netns add "$NS" || die "cannot create network namespace $NS"
    ip link add "$FLEET_LINK$i" type veth peer name eth0 netns "$NS"
    ip link set "$FLEET_LINK$i" master "$FLEET_BR" up
    ip -n "$NS" addr add "$ADDR/24" dev eth0
    ip -n "$NS" link set eth0 up
    ip -n "$NS" link set lo up
    ssh-keygen -q -t ed25519 -N '' -f "$H/host_key"
    : > "$H/authorized_keys"
    cat > "$H/sshd_config" <<CONF
Port 22
ListenAddress $ADDR
HostKey $H/host_key
PidFile $H/sshd.pid
AuthorizedKeysFile $H/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin forced-commands-only
StrictModes no
UsePAM no
ClientAliveInterval 1
ClientAliveCountMax 3
MaxStartups 100
CONF
    ip netns exec "$NS" /usr/sbin/sshd -f "$H/sshd_config" -E "$H/sshd.log" || die "sshd in $NS did not start"
    echo "$ADDR $(cut -d' ' -f1,2 "$H/host_key.pub")" >> "$FLEET/known_hosts"
done
for i in $(seq 1 "$FLEET_HOSTS"); do
    wait_for 30 python3 -c "import socket; socket.create_connection(('$FLEET_NET.$((10 + i))', 22), 1)" \
        || die "sshd of fleet host $i did not answer"
done
mkdir -p "$FLEET/h2/pg"
chown postgres: "$FLEET/h2/pg"
cp "$DIR/pg/pwfile" "$FLEET/h2/pg/pwfile"
chown postgres: "$FLEET/h2/pg/pwfile"
su postgres -s /bin/sh -c "$PGBIN/initdb -D '$FLEET/h2/pg/data' -U postgres --auth-local=trust --auth-host=scram-sha-256 --pwfile='$FLEET/h2/pg/pwfile' -E UTF8 --locale=C.UTF-8" > "$FLEET/h2/pg/initdb.log" 2>&1 \
    || die "PostgreSQL initdb for fleet host 2 failed"
echo "host all all $FLEET_NET.0/24 scram-sha-256" >> "$FLEET/h2/pg/data/pg_hba.conf"
ip netns exec "${FLEET_NS}2" su postgres -s /bin/sh -c "$PGBIN/pg_ctl -D '$FLEET/h2/pg/data' -l '$FLEET/h2/pg/log' -w -t 60 -o \"-c listen_addresses=$FLEET_NET.12 -p 5432 -c unix_socket_directories='$FLEET/h2/pg' -c fsync=off\" start" > /dev/null \
    || die "PostgreSQL of fleet host 2 did not start"
log "fleet: $FLEET_HOSTS hosts in namespaces ${FLEET_NS}1.. on $FLEET_NET.0/24, PostgreSQL on $FLEET_NET.12"

# --- moto (EC2 and RDS API emulator) -------------------------------------------
MOTO_PORT=$(free_port)
MOTO=$(command -v moto_server || echo "python3 -m moto.server")
$MOTO -H 127.0.0.1 -p "$MOTO_PORT" > "$DIR/moto.log" 2>&1 &
echo $! > "$DIR/moto.pid"
wait_for 60 python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$MOTO_PORT/moto-api/')" || die "moto did not start"
log "EC2/RDS emulator on 127.0.0.1:$MOTO_PORT"

# --- BIND 9 (DNS updates signed with TSIG) ---------------------------------------
# shop.example. accepts updates signed with the key drp-test; locked.example.
# accepts none. Tests write their own names under shop.example.
DNS_PORT=$(free_port)
DNS="$DIR/dns"
mkdir -p "$DNS"
tsig-keygen -a hmac-sha256 drp-test > "$DNS/drp-test.key" || die "tsig-keygen failed"
sed -n 's/.*secret "\(.*\)";.*/\1/p' "$DNS/drp-test.key" > "$DNS/drp-test.secret"
[ -s "$DNS/drp-test.secret" ] || die "no secret in $DNS/drp-test.key"
chmod 600 "$DNS/drp-test.key" "$DNS/drp-test.secret"
for zone in shop locked; do
    cat > "$DNS/$zone.example.zone" <<ZONE
\$TTL 300
@    IN SOA ns1.$zone.example. hostmaster.$zone.example. (1 60 60 3600 60)
     IN NS  ns1.$zone.example.
ns1  IN A   127.0.0.1
www  IN A   10.0.0.1
ZONE
done
cat > "$DNS/named.conf" <<CONF
include "$DNS/drp-test.key";
options {
    directory "$DNS";
    pid-file none;
    session-keyfile none;
    listen-on port $DNS_PORT { 127.0.0.1; };
    listen-on-v6 { none; };
    recursion no;
    notify no;
    dnssec-validation no;
};
controls { };
zone "shop.example." { type primary; file "shop.example.zone"; allow-update { key drp-test; }; };
zone "locked.example." { type primary; file "locked.example.zone"; };
CONF
named -g -c "$DNS/named.conf" > "$DNS/log" 2>&1 &
echo $! > "$DNS/pid"
wait_for 30 sh -c "dig @127.0.0.1 -p $DNS_PORT shop.example. SOA +short +time=1 +tries=1 | grep -q ns1" \
    || die "named (BIND) did not answer for shop.example."
log "BIND on 127.0.0.1:$DNS_PORT"

cat > "$ENV" <<VARS
DRP_TEST_DIR=$DIR
DRP_TEST_PG_PORT=$PG_PORT
DRP_TEST_PG_PASSWORD=$PG_PASSWORD
DRP_TEST_MY_PORT=$MY_PORT
DRP_TEST_MY_PASSWORD=$MY_PASSWORD
DRP_TEST_MY_SOCKET=$DIR/my/sock
DRP_TEST_S3_ENDPOINT=http://127.0.0.1:$S3_PORT
DRP_TEST_S3_BUCKET=drp-test
DRP_TEST_S3_KEY_ID=$S3_KEY_ID
DRP_TEST_S3_SECRET=$S3_SECRET
DRP_TEST_GARAGE=$CACHE/tools/bin/garage
DRP_TEST_GARAGE_CONF=$DIR/garage/garage.toml
DRP_TEST_SFTP_PORT=$SFTP_PORT
DRP_TEST_SFTP_KEY=$DIR/ssh/client_key
DRP_TEST_SFTP_ROOT=$DIR/sftp
DRP_TEST_BTRFS=$DIR/btrfs
DRP_TEST_AWS_ENDPOINT=http://127.0.0.1:$MOTO_PORT
DRP_TEST_FLEET_DIR=$FLEET
DRP_TEST_FLEET_HOSTS=$FLEET_HOSTS
DRP_TEST_FLEET_NET=$FLEET_NET
DRP_TEST_FLEET_NS=$FLEET_NS
DRP_TEST_FLEET_LINK=$FLEET_LINK
DRP_TEST_FLEET_KEY=$FLEET/coordinator_key
DRP_TEST_FLEET_STRANGER_KEY=$FLEET/stranger_key
DRP_TEST_FLEET_KNOWN_HOSTS=$FLEET/known_hosts
DRP_TEST_FLEET_PG=$FLEET_NET.12
DRP_TEST_DNS_PORT=$DNS_PORT
DRP_TEST_DNS_TSIG_NAME=drp-test
DRP_TEST_DNS_TSIG_FILE=$DNS/drp-test.secret
DRP_TEST_DNS_TSIG_KEY=$DNS/drp-test.key
VARS
chmod 600 "$ENV"
echo "$ENV"
