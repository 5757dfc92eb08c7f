#!/usr/bin/env bash
# drp against the tools people would use instead, in one run, on one machine,
# on the same data. Writes BENCHMARKS.md (figures and ratios) at the top level.
#
#   bash bench/run.sh            # about 1 GB of PostgreSQL dump (DRP_BENCH_MB=1024)
#   DRP_BENCH_MB=256 bash bench/run.sh
#   DRP_BENCH_ONLY=pipeline bash bench/run.sh   # the pipeline part alone
#
# DRP_BENCH_ONLY=pipeline runs only the pipeline's rounds (zstd alone, drp's
# stream backed up plain and encrypted, and verified): the database is built
# only for its dump, which the stream is made of (a smaller DRP_BENCH_MB makes
# it quicker); no peers, no physical mode, no pgbench, no drill, no profile.
# Its rows replace the rows of the same name in bench/last-run.tsv, and
# BENCHMARKS.md is regenerated from the merged rows (report.py --merge-with).
#
# Starts its own services with tests/services/start.sh, installs the peers
# (restic, borg, pgBackRest) from Debian when missing. Logical runs (pg_dump)
# and physical runs (base backups, WAL archiving, restores replayed to the
# end of the archive) share the rounds; a last part archives the WAL of a
# pgbench write load (DRP_BENCH_PGBENCH_SECONDS, default 30, per archiver;
# DRP_BENCH_PGBENCH_SCALE, default 10). Timings are wall, user and system
# seconds and peak RSS from /usr/bin/time, plus the CPU time the PostgreSQL
# server spent meanwhile. Each round runs every tool once, in the
# same order (but for drp's stream backed up and verified plain and encrypted,
# each pair alternating which goes first); there are DRP_BENCH_REPS rounds
# (default 4), and every ratio is the median of the ratios within a round
# (paired runs, minutes apart at most).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MB=${DRP_BENCH_MB:-1024}
REPS=${DRP_BENCH_REPS:-4}
PGB_SECONDS=${DRP_BENCH_PGBENCH_SECONDS:-30}
PGB_SCALE=${DRP_BENCH_PGBENCH_SCALE:-10}
LEVEL=3
ONLY=${DRP_BENCH_ONLY:-}
case "$ONLY" in
    "" | pipeline) ;;
    *) echo "bench: DRP_BENCH_ONLY is empty (everything) or pipeline, not '$ONLY'" >&2; exit 2 ;;
esac
full() { [ -z "$ONLY" ]; } # true when the whole benchmark runs
STARTED=$(date -u +%Y-%m-%dT%H:%MZ)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/drp/target}

need=()
if full; then
    command -v restic >/dev/null || need+=(restic)
    command -v borg >/dev/null || need+=(borgbackup)
    command -v pgbackrest >/dev/null || need+=(pgbackrest)
fi
[ -x /usr/bin/time ] || need+=(time)
command -v zstd >/dev/null || need+=(zstd)
if [ ${#need[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
bash tests/services/setup.sh >/dev/null
# The agent as shipped, without the AWS SDKs (they play no part in these paths).
cargo build --release --locked -q -p drp-agent -p drp-coordinator --no-default-features
AGENT=$CARGO_TARGET_DIR/release/drp-agent
DRP=$CARGO_TARGET_DIR/release/drp

ENV_FILE=$(bash tests/services/start.sh 2>/dev/null)
SVC=$(dirname "$ENV_FILE")
WORK=$(mktemp -d /var/tmp/drp-bench.XXXXXX)
# DRP_BENCH_KEEP=1 keeps the work folder (logs, repositories) for a look after.
trap 'bash tests/services/stop.sh "$SVC"; [ "${DRP_BENCH_KEEP:-}" = 1 ] && echo "bench: kept $WORK" >&2 || rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM
# shellcheck disable=SC1090
set -a; . "$ENV_FILE"; set +a
chmod 755 "$WORK"
RESULTS=$WORK/results.tsv
: > "$RESULTS"
export PGHOST=127.0.0.1 PGPORT=$DRP_TEST_PG_PORT PGUSER=postgres PGPASSWORD=$DRP_TEST_PG_PASSWORD
PGBIN=/usr/lib/postgresql/15/bin

PGDATA=$SVC/pg/data
# Commands of the physical mode run as postgres: PostgreSQL refuses root, and
# the cluster export's policy, state and NAS folder are postgres's.
AS_PG="runuser -u postgres -- env TMPDIR=/tmp RUST_LOG=warn"
# CPU seconds of the PostgreSQL server's finished backends (the postmaster's
# reaped children): read before and after a run, the server's share of it.
server_cpu() {
    local pid
    pid=$(head -1 "$PGDATA/postmaster.pid")
    awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); print ($14 + $15) / hz }' "/proc/$pid/stat"
}

# measure NAME COMMAND: one timed run, appended to the results.
measure() {
    local name=$1; shift
    local before after
    sync # the previous run's writes go to disk now, not during this one
    before=$(server_cpu)
    if ! /usr/bin/time -f "%e %U %S %M" -o "$WORK/time" bash -c "$*" > /dev/null 2> "$WORK/err"; then
        echo "  $name: FAILED: $(tail -3 "$WORK/err" | tr '\n' ' ')" >&2
        echo -e "$name\tFAILED $(tail -1 "$WORK/err" | tr '\t' ' ')" >> "$RESULTS"
        return 0
    fi
    sleep 0.3 # lets the postmaster reap the run's backends
    after=$(server_cpu)
    local t
    t="$(tail -1 "$WORK/time") $(awk -v a="$after" -v b="$before" 'BEGIN { printf "%.2f", a - b }')"
    echo -e "$name\t$t" >> "$RESULTS"
    echo "  $name: $t" >&2
}

# The server archives its WAL (archive_mode needs a restart: pg_ctl with
# start.sh's options). Which command archives is switched by reload: `true`
# during the logical runs (their restores write GBs of WAL that nothing
# needs, discarded as with archiving off), drp's `wal push` during drp's
# physical runs, pgBackRest's `archive-push` during pgBackRest's, so each
# tool restores from its own archive.
# (The pipeline alone, DRP_BENCH_ONLY=pipeline, archives nothing: no restart.)
PG_OPTS="-c listen_addresses=127.0.0.1 -p $PGPORT -c unix_socket_directories='$SVC/pg' -c fsync=off"
if full; then
    psql -q -c "alter system set archive_mode = on" -c "alter system set archive_command = 'true'" \
        -c "alter system set archive_timeout = 60" >/dev/null
    $AS_PG $PGBIN/pg_ctl -D "$PGDATA" -m fast -w -t 120 stop >/dev/null
    $AS_PG $PGBIN/pg_ctl -D "$PGDATA" -l "$SVC/pg/log" -w -t 60 -o "$PG_OPTS" start >/dev/null
fi
# set_archive COMMAND: the server's archive_command from now on.
set_archive() {
    psql -q -c "alter system set archive_command = \$ac\$$1\$ac\$" -c "select pg_reload_conf()" >/dev/null
    for _ in $(seq 1 50); do
        [ "$(psql -XAtq -c 'show archive_command')" = "$1" ] && break
        sleep 0.1
    done
    sleep 0.5 # the archiver rereads its settings on the same signal
    psql -q -c "select pg_switch_wal()" >/dev/null
}
# ready_files: WAL files PostgreSQL waits to see archived.
ready_files() { find "$PGDATA/pg_wal/archive_status" -name '*.ready' 2>/dev/null | wc -l; }
# wait_archived SECONDS: until nothing waits (or the time is up).
wait_archived() {
    for _ in $(seq 1 $(( $1 * 10 ))); do [ "$(ready_files)" -eq 0 ] && return 0; sleep 0.1; done
    return 1
}

# Autovacuum would analyze each restored copy in the background and blur the
# server's CPU figures of whatever runs next; no run here depends on it.
psql -q -c "alter system set autovacuum = off" -c "select pg_reload_conf()" >/dev/null
echo "bench: building a database of about ${MB} MB of dump" >&2
psql -q -c "drop database if exists bench" -c "create database bench"
ROWS=$(( MB * 1024 * 1024 / 190 )) # about 190 bytes of dump per order
psql -q -v ON_ERROR_STOP=1 -d bench <<SQL
create table customers (id serial primary key, name text, email text, city text, created_at timestamptz);
insert into customers (name, email, city, created_at)
  select 'Customer ' || i, 'customer' || i || '@example.' || (array['com','fr','de','io'])[1 + i % 4],
         (array['Paris','Lyon','Berlin','Toronto','Osaka','Lisbon','Austin','Montreal'])[1 + (i * 7) % 8],
         now() - (i % 100000) * interval '17 minutes'
  from generate_series(1, greatest($ROWS / 20, 1000)) i;
create table orders (id bigserial primary key, customer_id int, total numeric(12,2), status text,
                     placed_at timestamptz, note text, details jsonb);
insert into orders (customer_id, total, status, placed_at, note, details)
  select 1 + (i::bigint * 7919) % greatest($ROWS / 20, 1000), round((random() * 500)::numeric, 2),
         (array['paid','shipped','refunded','pending'])[1 + i % 4],
         now() - i * interval '13 seconds',
         (array['gift wrap please','leave at the door','call before delivery','','fragile: glass'])[1 + i % 5]
           || ' ' || substr(md5(i::text), 1, 6 + i % 10),
         jsonb_build_object('items', 1 + i % 7, 'sku', 'SKU-' || (i * 31) % 50000, 'channel',
           (array['web','app','store'])[1 + i % 3], 'ref', md5((i * 13)::text))
  from generate_series(1, $ROWS) i;
vacuum analyze;
select count(*) from orders; select count(*) from customers;
SQL
DUMP=$WORK/bench.dump
$PGBIN/pg_dump -Fc -Z0 -d bench -f "$DUMP"
DUMP_BYTES=$(stat -c %s "$DUMP")
ZSTD_BYTES=$(zstd -T0 -$LEVEL -c "$DUMP" | wc -c)
echo "bench: dump $DUMP_BYTES bytes, zstd -$LEVEL $ZSTD_BYTES bytes" >&2

# The pipeline's stream: the dump twice over, a multi-GB file.
mkdir -p "$WORK/nas" "$WORK/vault" "$WORK/stream"
STREAM=$WORK/stream/stream.bin
cat "$DUMP" "$DUMP" > "$STREAM"
STREAM_BYTES=$(stat -c %s "$STREAM")

# An age identity for the encrypted pipeline (the policy holds its public key
# only; the encrypted verify reads the private one with --identity).
OPS_AGE=$WORK/ops.age
OPS_PUBLIC=$("$AGENT" --json keys generate --out "$OPS_AGE" 2> "$WORK/keys.err" \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["public"])') \
    || { echo "bench: keys generate failed: $(tail -3 "$WORK/keys.err")" >&2; exit 1; }
case "$OPS_PUBLIC" in age1*) ;; *) echo "bench: keys generate printed no age1 public key" >&2; exit 1 ;; esac

# drp policies: the database to a local NAS and to S3; the stream as a tree,
# to the NAS unencrypted and, as stream-sealed, to a local vault encrypted to
# ops's key (every target encrypts to keys.recipients unless it says
# `encryption: none`, as the three measured before encryption existed do).
# drp_policy FILE SEALED: SEALED=1 writes the recipients, the vault and
# stream-sealed; 0 leaves them out (the drill's policy: its report is stored on
# every target of its policy, the same three as before).
drp_policy() {
    local keys="" vault="" sealed=""
    if [ "$2" = 1 ]; then
        keys="keys: {recipients: {ops: $OPS_PUBLIC}}"
        vault="  vault: {kind: local, path: $WORK/vault}"
        sealed="  stream-sealed:
    source: {kind: directory, path: $WORK/stream}
    targets: [vault]
    compression: {level: $LEVEL}"
    fi
    cat > "$1" <<YAML
host: bench
state_dir: $WORK/state
$keys
targets:
  nas: {kind: local, path: $WORK/nas, encryption: none}
  s3:
    kind: s3
    bucket: $DRP_TEST_S3_BUCKET
    prefix: bench
    endpoint: $DRP_TEST_S3_ENDPOINT
    region: garage
    access_key_id: {env: DRP_TEST_S3_KEY_ID}
    secret_access_key: {env: DRP_TEST_S3_SECRET}
    encryption: none
  sftp:
    kind: sftp
    host: 127.0.0.1
    port: $DRP_TEST_SFTP_PORT
    user: root
    key: $DRP_TEST_SFTP_KEY
    path: $DRP_TEST_SFTP_ROOT/bench
    known_hosts: accept
    encryption: none
$vault
exports:
  db-nas:
    source: {kind: postgres, host: 127.0.0.1, port: $PGPORT, user: postgres, database: bench, password: {env: PGPASSWORD}, bin_dir: $PGBIN, restore_jobs: 2}
    targets: [nas]
    compression: {level: $LEVEL}
  db-s3:
    source: {kind: postgres, host: 127.0.0.1, port: $PGPORT, user: postgres, database: bench, password: {env: PGPASSWORD}, bin_dir: $PGBIN, restore_jobs: 2}
    targets: [s3]
    compression: {level: $LEVEL}
  db-sftp:
    source: {kind: postgres, host: 127.0.0.1, port: $PGPORT, user: postgres, database: bench, password: {env: PGPASSWORD}, bin_dir: $PGBIN, restore_jobs: 2}
    targets: [sftp]
    compression: {level: $LEVEL}
  stream:
    source: {kind: directory, path: $WORK/stream}
    targets: [nas]
    compression: {level: $LEVEL}
$sealed
YAML
}
drp_policy "$WORK/policy.yaml" 1
drp_policy "$WORK/policy-drill.yaml" 0

# drp's repositories: created by init, as on a real host.
"$AGENT" -q init --policy "$WORK/policy.yaml" >/dev/null

# Peers, and the physical mode (not in DRP_BENCH_ONLY=pipeline).
if full; then
    # Peers' repositories (restic and borg get a fresh one every round, below).
    export RESTIC_PASSWORD=bench-only BORG_PASSPHRASE=bench-only BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
    mkdir -p "$WORK/pgbackrest" && chown postgres: "$WORK/pgbackrest"
    cat > "$WORK/pgbackrest.conf" <<CONF
[global]
repo1-path=$WORK/pgbackrest
compress-type=zst
compress-level=$LEVEL
process-max=2
start-fast=y
log-level-console=warn
[bench]
pg1-path=$PGDATA
pg1-port=$PGPORT
pg1-socket-path=$SVC/pg
CONF
    chmod 644 "$WORK/pgbackrest.conf"
    PGBR="su postgres -s /bin/sh -c 'pgbackrest --config=$WORK/pgbackrest.conf --stanza=bench"
    su postgres -s /bin/sh -c "pgbackrest --config=$WORK/pgbackrest.conf --stanza=bench stanza-create" > "$WORK/pgbr-stanza.log" 2>&1 || echo "bench: pgBackRest stanza-create failed: $(tail -2 "$WORK/pgbr-stanza.log")" >&2

    # The cluster export (physical mode): its own policy, state and NAS folder,
    # postgres's; the WAL part below gets another of each, so its latency figures
    # are its own pushes only.
    CL=$WORK/cluster
    PHYS=$WORK/phys # restores land here: a fresh folder every time, removed after
    install -d -o postgres -m 700 "$CL" "$CL/nas" "$CL/nas-wal" "$PHYS" "$PHYS/sock"
    cluster_policy() { # FILE STATE NAS
        cat > "$1" <<YAML
host: bench
state_dir: $2
targets:
  nasc: {kind: local, path: $3}
exports:
  cluster:
    source: {kind: postgres-cluster, host: $SVC/pg, port: $PGPORT, user: postgres, bin_dir: $PGBIN, data_directory: $PGDATA}
    targets: [nasc]
    compression: {level: $LEVEL}
YAML
        chown postgres: "$1" && chmod 600 "$1"
    }
    CPOL=$CL/policy.yaml
    cluster_policy "$CPOL" "$CL/state" "$CL/nas"
    $AS_PG "$AGENT" -q init --policy "$CPOL" >/dev/null
    DRP_PUSH="$AGENT wal push --policy $CPOL --export cluster %p"
    PGBR_PUSH="pgbackrest --config=$WORK/pgbackrest.conf --stanza=bench archive-push %p"
    # A pgBackRest restore brought to the same end as drp's: PostgreSQL replays
    # pgBackRest's archive (the restore_command pgBackRest wrote) until it
    # promotes, then stops cleanly (fast shutdown, its checkpoint), as drp's
    # private server does; also a private socket, no TCP, no archiving.
    cat > "$WORK/recover.sh" <<'SH'
#!/bin/bash
# recover.sh DATADIR SOCKETDIR BINDIR
set -euo pipefail
dir=$1 sock=$2 bin=$3
"$bin/postgres" -D "$dir" -c listen_addresses= -c unix_socket_directories="$sock" -c port=5432 \
    -c archive_mode=off > "$sock/server.log" 2>&1 &
pid=$!
until [ "$("$bin/psql" -XAtq -h "$sock" -p 5432 -d postgres -c 'select pg_is_in_recovery()' 2>/dev/null)" = f ]; do
    kill -0 $pid 2>/dev/null || { grep -E 'FATAL|PANIC|ERROR' "$sock/server.log" | tail -3 >&2; exit 1; }
    sleep 0.1
done
kill -INT $pid
wait $pid
SH
    chmod 755 "$WORK/recover.sh"
fi

# Warm the tables: the first full read writes hint bits.
if full; then
    psql -q -d bench -c "select count(*), sum(length(note)) from orders" -c "select count(*) from customers" >/dev/null
    $PGBIN/pg_dump -Fc -Z0 -d bench > /dev/null
fi

# plain_sealed PLAIN_NAME PLAIN_COMMAND SEALED_NAME SEALED_COMMAND: the same
# run unencrypted and encrypted, one after the other, the plain one first in
# odd rounds and second in even ones (report.py pairs them by round).
plain_sealed() {
    if [ $((rep % 2)) -eq 1 ]; then
        measure "$1" "$2"; measure "$3" "$4"
    else
        measure "$3" "$4"; measure "$1" "$2"
    fi
}

for rep in $(seq 1 "$REPS"); do
    echo "bench: round $rep of $REPS" >&2
    if full; then
        # restic and borg deduplicate: a fresh repository each round makes them
        # store the dump in full, as drp does, instead of finding it there.
        rm -rf "$WORK/restic" "$WORK/borg"
        restic init -q --repo "$WORK/restic" >/dev/null
        borg init --encryption=none "$WORK/borg" 2>/dev/null
    fi
    # The pipeline on the same bytes, read from the page cache by all three
    # (the restores of the previous round may have pushed the file out).
    cat "$STREAM" > /dev/null
    measure "zstd -T0 -$LEVEL (bound)" "zstd -q -T0 -$LEVEL -c '$STREAM' > /dev/null"
    measure "zstd -T0 -$LEVEL | sha256sum" "zstd -q -T0 -$LEVEL -c '$STREAM' | sha256sum"
    # The same stream unencrypted to the NAS and encrypted (age) to the vault,
    # then each point read back in full (verify --latest: decompressed, and
    # decrypted with the identity, both digests checked; nothing restored).
    plain_sealed "drp pipeline to local NAS" "'$AGENT' -q backup --policy '$WORK/policy.yaml' --export stream" \
        "drp pipeline, encrypted (age), to local vault" "'$AGENT' -q backup --policy '$WORK/policy.yaml' --export stream-sealed"
    plain_sealed "drp verify of the pipeline's point" "'$AGENT' -q verify --policy '$WORK/policy.yaml' --export stream --latest" \
        "drp verify of the encrypted point (--identity)" "'$AGENT' -q verify --policy '$WORK/policy.yaml' --export stream-sealed --latest --identity '$OPS_AGE'"
    full || continue # DRP_BENCH_ONLY=pipeline: the stream's runs alone
    # PostgreSQL backups.
    measure "pg_dump -Fc -Z0 > /dev/null (producer bound)" "$PGBIN/pg_dump -Fc -Z0 -d bench > /dev/null"
    measure "pg_dump -Fc > /dev/null (gzip 6)" "$PGBIN/pg_dump -Fc -d bench > /dev/null"
    measure "pg_dump -Fc -Z0 | zstd -T0 -$LEVEL > file" "$PGBIN/pg_dump -Fc -Z0 -d bench | zstd -q -T0 -$LEVEL > '$WORK/plain.dump.zst'"
    measure "drp-agent backup to local NAS" "'$AGENT' -q backup --policy '$WORK/policy.yaml' --export db-nas"
    measure "drp-agent backup to S3 (Garage)" "'$AGENT' -q backup --policy '$WORK/policy.yaml' --export db-s3"
    measure "drp-agent backup to SFTP (OpenSSH)" "'$AGENT' -q backup --policy '$WORK/policy.yaml' --export db-sftp"
    measure "restic backup --stdin" "$PGBIN/pg_dump -Fc -Z0 -d bench | restic -q --repo '$WORK/restic' backup --stdin --stdin-filename bench.dump --compression auto"
    measure "borg create (zstd,$LEVEL) from stdin" "$PGBIN/pg_dump -Fc -Z0 -d bench | borg create --compression zstd,$LEVEL '$WORK/borg::r$rep' -"
    # Restores of the same database; the baseline's dump file from the cache too.
    cat "$DUMP" > /dev/null
    measure "pg_restore -j2 from a local file" "psql -q -c 'drop database if exists r1' -c 'create database r1' && $PGBIN/pg_restore -j2 -d r1 '$DUMP'"
    measure "drp-agent restore (-j2) from local NAS" "psql -q -c 'drop database if exists r2' && '$AGENT' -q restore --policy '$WORK/policy.yaml' --export db-nas --to r2 --yes --workdir '$WORK'"
    measure "drp-agent restore (-j2) from S3" "psql -q -c 'drop database if exists r3' && '$AGENT' -q restore --policy '$WORK/policy.yaml' --export db-s3 --to r3 --yes --workdir '$WORK'"
    measure "drp-agent restore (-j2) from SFTP" "psql -q -c 'drop database if exists r5' && '$AGENT' -q restore --policy '$WORK/policy.yaml' --export db-sftp --to r5 --yes --workdir '$WORK'"
    measure "restic restore, then pg_restore -j2" "rm -rf '$WORK/rr' && restic -q --repo '$WORK/restic' restore latest --target '$WORK/rr' && psql -q -c 'drop database if exists r4' -c 'create database r4' && $PGBIN/pg_restore -j2 -d r4 '$WORK/rr/bench.dump'"
    # The restored copies go, so every round backs up the same cluster.
    for db in r1 r2 r3 r4 r5; do psql -q -c "drop database if exists $db"; done
    rm -rf "$WORK/rr" "$WORK/plain.dump.zst"
    # Physical: drp archives the WAL from here on, then backs up; its restore
    # replays its own archive from that backup to the archive's end.
    psql -q -c checkpoint
    set_archive "$DRP_PUSH"
    measure "drp-agent base backup (physical) to local NAS" "$AS_PG '$AGENT' -q backup --policy '$CPOL' --export cluster"
    measure "pg_basebackup -Ft -X fetch > /dev/null" "$PGBIN/pg_basebackup -h '$SVC/pg' -p $PGPORT -U postgres -Ft -X fetch --checkpoint=fast -D - > /dev/null"
    # The same work as drp's but the digests and the wait for the archive:
    # the copy compressed as drp compresses it, into a file.
    measure "pg_basebackup -Ft -X fetch | zstd -T0 -$LEVEL > file" "$PGBIN/pg_basebackup -h '$SVC/pg' -p $PGPORT -U postgres -Ft -X fetch --checkpoint=fast -D - | zstd -q -T0 -$LEVEL > '$WORK/base.tar.zst'"
    rm -f "$WORK/base.tar.zst"
    # The same without WAL (-X none): the server then waits until the last
    # segment is archived (by drp's wal push), as it does for drp's backup.
    measure "pg_basebackup -Ft -X none > /dev/null (waits for the archive)" "$PGBIN/pg_basebackup -h '$SVC/pg' -p $PGPORT -U postgres -Ft -X none --checkpoint=fast -D - > /dev/null"
    wait_archived 60 || echo "bench: WAL still waiting for drp's wal push" >&2
    # Each restore into a folder that does not exist yet; removing the last
    # one's files is not part of the next one's time.
    measure "drp-agent physical restore (replay to latest)" "$AS_PG '$AGENT' -q restore --policy '$CPOL' --export cluster --latest --to '$PHYS/drp' --yes"
    if [ ! -f "$WORK/phys.bytes" ] && [ -d "$PHYS/drp" ]; then du -sb "$PHYS/drp" | cut -f1 > "$WORK/phys.bytes"; fi
    rm -rf "$PHYS/drp" "$PHYS"/.drp-restore-*
    # pgBackRest the same way, from its own archive.
    set_archive "$PGBR_PUSH"
    measure "pgBackRest full backup (physical)" "$PGBR --type=full backup'"
    wait_archived 60 || echo "bench: WAL still waiting for pgBackRest's archive-push" >&2
    # The like-for-like restore first: the first restore after a backup runs
    # slower than the next one (about 0.5 to 1.5 s here, for drp and
    # pgBackRest alike), and drp's is a first one.
    measure "pgBackRest restore, replay to end of archive, stop" "install -d -o postgres -m 700 '$PHYS/pgbr' && $PGBR --pg1-path=$PHYS/pgbr restore' && $AS_PG '$WORK/recover.sh' '$PHYS/pgbr' '$PHYS/sock' '$PGBIN'"
    rm -rf "$PHYS/pgbr"
    measure "pgBackRest restore (data directory only)" "install -d -o postgres -m 700 '$PHYS/pgbr' && $PGBR --pg1-path=$PHYS/pgbr restore'"
    rm -rf "$PHYS/pgbr"
    set_archive true
done

# meta PREFIX: this run's date, scale and sizes, as info: rows (report.py reads
# them; a pipeline-only run's are prefixed, so that merged into a full run's
# rows, each part keeps its own).
meta() {
    { echo -e "info:${1}date\t$STARTED"
      echo -e "info:${1}mb\t$MB"
      echo -e "info:${1}reps\t$REPS"
      echo -e "info:${1}dump_bytes\t$DUMP_BYTES"
      echo -e "info:${1}zstd_bytes\t$ZSTD_BYTES"
      echo -e "info:${1}stream_bytes\t$STREAM_BYTES"
    } >> "$RESULTS"
}
# write_report [REPORT.PY OPTIONS]: BENCHMARKS.md from the results, written
# only once report.py has succeeded.
write_report() {
    python3 bench/report.py "$@" "$RESULTS" "$DUMP_BYTES" "$ZSTD_BYTES" "$MB" "$REPS" "$PROFILE" "$STREAM_BYTES" "$PGB_SECONDS" "$PGB_SCALE" > "$WORK/BENCHMARKS.md"
    cp "$WORK/BENCHMARKS.md" BENCHMARKS.md
}
if ! full; then
    # The pipeline alone: its rows replace those of the same name in
    # bench/last-run.tsv (the full run's other rows and the profile stay).
    meta pipeline_
    PROFILE=bench/last-profile.txt
    write_report --merge-with bench/last-run.tsv --merged-out "$WORK/merged.tsv"
    cp "$WORK/merged.tsv" bench/last-run.tsv
    echo "bench: wrote BENCHMARKS.md from bench/last-run.tsv with this run's pipeline rows merged in" >&2
    exit 0
fi

echo -e "info:phys_bytes\t$(cat "$WORK/phys.bytes" 2>/dev/null || echo 0)" >> "$RESULTS"
# Where drp's physical restore spends its time, once more outside the rounds:
# its progress events end when the base backup is received, decompressed,
# unpacked and both digests checked; then come pg_verifybackup, the replay
# in the private server and the swap.
t0=$(date +%s.%N)
if $AS_PG "$AGENT" restore --policy "$CPOL" --export cluster --latest --to "$PHYS/drp" --yes > /dev/null 2> "$WORK/phys-restore.err"; then
    t1=$(date +%s.%N)
    stage=$(grep -o '"seconds":[0-9.]*,"status":"finished"' "$WORK/phys-restore.err" | tail -1 | grep -o '[0-9.]*' | head -1)
    echo -e "info:phys_stage_s\t${stage:-}" >> "$RESULTS"
    echo -e "info:phys_total_s\t$(awk -v a="$t1" -v b="$t0" 'BEGIN { printf "%.2f", a - b }')" >> "$RESULTS"
fi
rm -rf "$PHYS/drp" "$PHYS"/.drp-restore-*
# pg_verifybackup alone, on a plain copy just written (in the page cache, as
# in drp's restore).
$AS_PG $PGBIN/pg_basebackup -h "$SVC/pg" -p "$PGPORT" -U postgres -Fp -X none --checkpoint=fast -D "$PHYS/plain"
sync
t0=$(date +%s.%N)
if $AS_PG $PGBIN/pg_verifybackup --no-parse-wal --quiet "$PHYS/plain"; then
    echo -e "info:verify_s\t$(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN { printf "%.2f", a - b }')" >> "$RESULTS"
fi
rm -rf "$PHYS/plain"
echo -e "info:db_bytes\t$(psql -XAtq -c "select pg_database_size('bench')")" >> "$RESULTS"

# WAL archiving under a write load: pgbench on a database of its own, once
# with drp's `wal push` as archive_command, once with `cp` (PostgreSQL's
# documented example, no fsync). Both through the same wrapper, which logs
# each call's wall time as PostgreSQL waits for it; a sampler counts the
# files waiting (`.ready`) every second.
echo "bench: WAL archiving under pgbench (scale $PGB_SCALE, ${PGB_SECONDS}s per archiver)" >&2
psql -q -c "drop database if exists pgb" -c "create database pgb"
$PGBIN/pgbench -i -s "$PGB_SCALE" -q pgb > "$WORK/pgbench-init.log" 2>&1
WPOL=$CL/policy-wal.yaml
cluster_policy "$WPOL" "$CL/state-wal" "$CL/nas-wal"
$AS_PG "$AGENT" -q init --policy "$WPOL" >/dev/null
install -d -o postgres -m 700 "$CL/cp-archive"
cat > "$WORK/timed.sh" <<'SH'
#!/bin/bash
# timed.sh LOG COMMAND...: runs COMMAND (a shell command line), appends its
# start, end and exit status to LOG.
log=$1; shift
t0=$EPOCHREALTIME
eval "$@"
rc=$?
echo "$t0 $EPOCHREALTIME $rc" >> "$log"
exit $rc
SH
chmod 755 "$WORK/timed.sh"
cat > "$WORK/walstatus.py" <<'PY'
import json, sys
j = json.load(sys.stdin)
f = lambda v: "" if v is None else v
print(f"backlog={j['backlog_files']} push_p50={f(j['push_p50_seconds'])} push_p99={f(j['push_p99_seconds'])} "
      f"stored={sum(t['files'] for t in j['targets'])}")
PY
wal_run() { # NAME ARCHIVE_COMMAND
    local name=$1 log=$WORK/wal-$1.log
    install -o postgres -m 600 /dev/null "$log"
    set_archive "$WORK/timed.sh $log $2"
    wait_archived 60 || true
    psql -q -c checkpoint
    : > "$log"
    local lsn0 arch0 fail0
    read -r lsn0 arch0 fail0 < <(psql -XAtq -F ' ' -c "select pg_current_wal_lsn(), archived_count, failed_count from pg_stat_archiver")
    ( while :; do ready_files; sleep 1; done ) > "$WORK/wal-$name.ready" &
    local sampler=$!
    $PGBIN/pgbench -n -c 4 -j 2 -T "$PGB_SECONDS" pgb > "$WORK/pgbench-$name.log" 2>&1 || echo "bench: pgbench failed: $(tail -2 "$WORK/pgbench-$name.log")" >&2
    local ready_end lsn1 arch1 fail1
    ready_end=$(ready_files)
    read -r lsn1 arch1 fail1 < <(psql -XAtq -F ' ' -c "select pg_current_wal_lsn(), archived_count, failed_count from pg_stat_archiver")
    kill "$sampler" && wait "$sampler" 2>/dev/null || true
    local status=""
    if [ "$name" = drp ]; then
        status=$($AS_PG "$AGENT" --json wal status --policy "$WPOL" --export cluster 2>/dev/null \
            | python3 "$WORK/walstatus.py" || echo "status=failed")
    fi
    local t0 drained=""
    t0=$(date +%s.%N)
    wait_archived 120 && drained=$(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN { printf "%.1f", a - b }')
    local calls
    calls=$(python3 - "$log" <<'PY'
import math, sys
xs = sorted(float(e) - float(s) for s, e, rc in (l.split() for l in open(sys.argv[1]) if l.strip()))
pct = lambda p: xs[max(1, math.ceil(p / 100 * len(xs))) - 1] if xs else ""
print(f"calls={len(xs)} call_p50={pct(50)} call_p99={pct(99)} call_max={xs[-1] if xs else ''}")
PY
)
    local tps
    tps=$(awk '/^tps/ { print $3; exit }' "$WORK/pgbench-$name.log")
    echo -e "wal:$name\ttps=${tps:-} wal_bytes=$(psql -XAtq -c "select pg_wal_lsn_diff('$lsn1', '$lsn0')::bigint") archived=$((arch1 - arch0)) failed=$((fail1 - fail0)) ready_end=$ready_end ready_max=$(sort -n "$WORK/wal-$name.ready" | tail -1) drained_s=$drained $calls $status" >> "$RESULTS"
    tail -1 "$RESULTS" >&2
}
wal_run drp "$AGENT wal push --policy $WPOL --export cluster %p"
wal_run cp "test ! -f $CL/cp-archive/%f \&\& cp %p $CL/cp-archive/%f"
set_archive true
psql -q -c "drop database if exists pgb"

# Drill overhead: a runbook of ten trivial steps, against running the ten
# commands in a row from a shell.
cat > "$WORK/trivial.yaml" <<YAML
name: trivial
policy: policy-drill.yaml
objectives: {rto: 5m, rpo: 30m}
drill:
  settle: 0s
  inject:
    - {name: inject, action: {kind: command, run: "true"}}
steps:
$(for i in 1 2 3 4 5 6 7 8 9; do echo "  - {name: step-$i, phase: restore, action: {kind: command, run: \"true\"}}"; done)
  - {name: verify, phase: verify, action: {kind: command, run: "true"}}
YAML
for rep in $(seq 1 "$REPS"); do
    measure "ten trivial commands from a shell" "for i in 1 2 3 4 5 6 7 8 9 10 11; do sh -c true; done"
    # Its verdict is FAILED by design (exit 8): no step restores anything, so
    # the RPO is not shown; what is timed is the orchestration around it.
    measure "drp drill of ten trivial steps" "cd '$WORK' && { '$DRP' -q drill trivial.yaml --yes > drill.out; rc=\$?; [ \$rc -eq 0 ] || { [ \$rc -eq 8 ] && grep -q 'nothing was restored' drill.out; }; }"
done

# Memory: a 100 MB slice of the stream, against the whole stream (the
# pipeline runs above).
mkdir -p "$WORK/small"
head -c 100000000 "$DUMP" > "$WORK/small/part.bin"
sed -e "s#path: $WORK/stream#path: $WORK/small#" "$WORK/policy.yaml" > "$WORK/policy-small.yaml"
for rep in $(seq 1 "$REPS"); do
    measure "memory: drp pipeline, 100 MB" "'$AGENT' -q backup --policy '$WORK/policy-small.yaml' --export stream"
done

# Where the pipeline's CPU goes: a sampled profile of one run, by function and by thread.
PROFILE=$WORK/profile.txt
if command -v perf >/dev/null; then
    perf record -q -F 999 -o "$WORK/perf.data" "$AGENT" -q backup --policy "$WORK/policy.yaml" --export stream >/dev/null 2>&1 \
        || echo "bench: the profiled backup failed" >&2
    { perf report -i "$WORK/perf.data" --stdio --no-children --sort sym -g none 2>/dev/null | grep '%' | grep -v '^#'
      echo "--- threads"
      perf report -i "$WORK/perf.data" --stdio --no-children --sort pid -g none 2>/dev/null | grep '%' | grep -v '^#'
    } > "$PROFILE" || true
else
    echo "perf is not installed: no profile" > "$PROFILE"
fi

# Catalogues of 10,000 points (NAS and Garage S3), on these services:
# bench/catalogue.md, which the report includes.
if full; then
    DRP_BENCH_ENV=$ENV_FILE bash bench/catalogue.sh
fi

meta ""
cp "$RESULTS" bench/last-run.tsv
write_report
cp "$PROFILE" bench/last-profile.txt
echo "bench: wrote BENCHMARKS.md (raw figures in bench/last-run.tsv)" >&2
