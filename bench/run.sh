#!/usr/bin/env bash
# drp against the tools people would use instead, in one run, on one machine,
# on the same data. Writes BENCHMARKS.md (figures and ratios) at the top level.
#
#   bash bench/run.sh            # about 1 GB of PostgreSQL dump (DRP_BENCH_MB=1024)
#   DRP_BENCH_MB=256 bash bench/run.sh
#
# Starts its own services with tests/services/start.sh, installs the peers
# (restic, borg, pgBackRest) from Debian when missing. Timings are wall, user
# and system seconds and peak RSS from /usr/bin/time, plus the CPU time the
# PostgreSQL server spent meanwhile. Each round runs every tool once, in the
# same order; there are DRP_BENCH_REPS rounds (default 4), and every ratio is
# the median of the ratios within a round (paired runs, minutes apart at most).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MB=${DRP_BENCH_MB:-1024}
REPS=${DRP_BENCH_REPS:-4}
LEVEL=3
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/drp/target}

need=()
command -v restic >/dev/null || need+=(restic)
command -v borg >/dev/null || need+=(borgbackup)
command -v pgbackrest >/dev/null || need+=(pgbackrest)
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
trap 'bash tests/services/stop.sh "$SVC"; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM
# shellcheck disable=SC1090
set -a; . "$ENV_FILE"; set +a
chmod 755 "$WORK"
RESULTS=$WORK/results.tsv
: > "$RESULTS"
export PGHOST=127.0.0.1 PGPORT=$DRP_TEST_PG_PORT PGUSER=postgres PGPASSWORD=$DRP_TEST_PG_PASSWORD
PGBIN=/usr/lib/postgresql/15/bin

PGDATA=$SVC/pg/data
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
mkdir -p "$WORK/nas" "$WORK/stream"
STREAM=$WORK/stream/stream.bin
cat "$DUMP" "$DUMP" > "$STREAM"
STREAM_BYTES=$(stat -c %s "$STREAM")

# drp policies: the database to a local NAS and to S3; the stream as a tree.
cat > "$WORK/policy.yaml" <<YAML
host: bench
state_dir: $WORK/state
targets:
  nas: {kind: local, path: $WORK/nas}
  s3:
    kind: s3
    bucket: $DRP_TEST_S3_BUCKET
    prefix: bench
    endpoint: $DRP_TEST_S3_ENDPOINT
    region: garage
    access_key_id: {env: DRP_TEST_S3_KEY_ID}
    secret_access_key: {env: DRP_TEST_S3_SECRET}
  sftp:
    kind: sftp
    host: 127.0.0.1
    port: $DRP_TEST_SFTP_PORT
    user: root
    key: $DRP_TEST_SFTP_KEY
    path: $DRP_TEST_SFTP_ROOT/bench
    known_hosts: accept
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
YAML

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
archive-check=n
log-level-console=warn
[bench]
pg1-path=$PGDATA
pg1-port=$PGPORT
pg1-socket-path=$SVC/pg
CONF
chmod 644 "$WORK/pgbackrest.conf"
PGBR="su postgres -s /bin/sh -c 'pgbackrest --config=$WORK/pgbackrest.conf --stanza=bench"
su postgres -s /bin/sh -c "pgbackrest --config=$WORK/pgbackrest.conf --stanza=bench stanza-create" > "$WORK/pgbr-stanza.log" 2>&1 || echo "bench: pgBackRest stanza-create failed: $(tail -2 "$WORK/pgbr-stanza.log")" >&2

# Warm the tables: the first full read writes hint bits.
psql -q -d bench -c "select count(*), sum(length(note)) from orders" -c "select count(*) from customers" >/dev/null
$PGBIN/pg_dump -Fc -Z0 -d bench > /dev/null

for rep in $(seq 1 "$REPS"); do
    echo "bench: round $rep of $REPS" >&2
    # restic and borg deduplicate: a fresh repository each round makes them
    # store the dump in full, as drp does, instead of finding it there.
    rm -rf "$WORK/restic" "$WORK/borg"
    restic init -q --repo "$WORK/restic" >/dev/null
    borg init --encryption=none "$WORK/borg" 2>/dev/null
    # The pipeline on the same bytes, read from the page cache by all three
    # (the restores of the previous round may have pushed the file out).
    cat "$STREAM" > /dev/null
    measure "zstd -T0 -$LEVEL (bound)" "zstd -q -T0 -$LEVEL -c '$STREAM' > /dev/null"
    measure "zstd -T0 -$LEVEL | sha256sum" "zstd -q -T0 -$LEVEL -c '$STREAM' | sha256sum"
    measure "drp pipeline to local NAS" "'$AGENT' -q backup --policy '$WORK/policy.yaml' --export stream"
    # PostgreSQL backups.
    measure "pg_dump -Fc -Z0 > /dev/null (producer bound)" "$PGBIN/pg_dump -Fc -Z0 -d bench > /dev/null"
    measure "pg_dump -Fc > /dev/null (gzip 6)" "$PGBIN/pg_dump -Fc -d bench > /dev/null"
    measure "pg_dump -Fc -Z0 | zstd -T0 -$LEVEL > file" "$PGBIN/pg_dump -Fc -Z0 -d bench | zstd -q -T0 -$LEVEL > '$WORK/plain.dump.zst'"
    measure "drp-agent backup to local NAS" "'$AGENT' -q backup --policy '$WORK/policy.yaml' --export db-nas"
    measure "drp-agent backup to S3 (Garage)" "'$AGENT' -q backup --policy '$WORK/policy.yaml' --export db-s3"
    measure "drp-agent backup to SFTP (OpenSSH)" "'$AGENT' -q backup --policy '$WORK/policy.yaml' --export db-sftp"
    measure "restic backup --stdin" "$PGBIN/pg_dump -Fc -Z0 -d bench | restic -q --repo '$WORK/restic' backup --stdin --stdin-filename bench.dump --compression auto"
    measure "borg create (zstd,$LEVEL) from stdin" "$PGBIN/pg_dump -Fc -Z0 -d bench | borg create --compression zstd,$LEVEL '$WORK/borg::r$rep' -"
    measure "pgBackRest full backup (physical)" "$PGBR --type=full backup'"
    # Restores of the same database; the baseline's dump file from the cache too.
    cat "$DUMP" > /dev/null
    measure "pg_restore -j2 from a local file" "psql -q -c 'drop database if exists r1' -c 'create database r1' && $PGBIN/pg_restore -j2 -d r1 '$DUMP'"
    measure "drp-agent restore (-j2) from local NAS" "psql -q -c 'drop database if exists r2' && '$AGENT' -q restore --policy '$WORK/policy.yaml' --export db-nas --to r2 --yes --workdir '$WORK'"
    measure "drp-agent restore (-j2) from S3" "psql -q -c 'drop database if exists r3' && '$AGENT' -q restore --policy '$WORK/policy.yaml' --export db-s3 --to r3 --yes --workdir '$WORK'"
    measure "drp-agent restore (-j2) from SFTP" "psql -q -c 'drop database if exists r5' && '$AGENT' -q restore --policy '$WORK/policy.yaml' --export db-sftp --to r5 --yes --workdir '$WORK'"
    measure "restic restore, then pg_restore -j2" "rm -rf '$WORK/rr' && restic -q --repo '$WORK/restic' restore latest --target '$WORK/rr' && psql -q -c 'drop database if exists r4' -c 'create database r4' && $PGBIN/pg_restore -j2 -d r4 '$WORK/rr/bench.dump'"
    measure "pgBackRest restore (data directory only)" "rm -rf '$WORK/pgbr-restore' && install -d -o postgres -m 700 '$WORK/pgbr-restore' && $PGBR --pg1-path=$WORK/pgbr-restore restore'"
    # The restored copies go, so every round backs up the same cluster.
    for db in r1 r2 r3 r4 r5; do psql -q -c "drop database if exists $db"; done
    rm -rf "$WORK/rr" "$WORK/pgbr-restore" "$WORK/plain.dump.zst"
done

# Drill overhead: a runbook of ten trivial steps, against running the ten
# commands in a row from a shell.
cat > "$WORK/trivial.yaml" <<YAML
name: trivial
policy: policy.yaml
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
    measure "drp drill of ten trivial steps" "cd '$WORK' && '$DRP' -q drill trivial.yaml --yes"
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
    perf record -q -F 999 -o "$WORK/perf.data" "$AGENT" -q backup --policy "$WORK/policy.yaml" --export stream >/dev/null 2>&1
    { perf report -i "$WORK/perf.data" --stdio --no-children --sort sym -g none 2>/dev/null | grep '%' | grep -v '^#'
      echo "--- threads"
      perf report -i "$WORK/perf.data" --stdio --no-children --sort pid -g none 2>/dev/null | grep '%' | grep -v '^#'
    } > "$PROFILE" || true
else
    echo "perf is not installed: no profile" > "$PROFILE"
fi

cp "$RESULTS" bench/last-run.tsv
python3 bench/report.py "$RESULTS" "$DUMP_BYTES" "$ZSTD_BYTES" "$MB" "$REPS" "$PROFILE" "$STREAM_BYTES" > BENCHMARKS.md
cp "$PROFILE" bench/last-profile.txt
echo "bench: wrote BENCHMARKS.md (raw figures in bench/last-run.tsv)" >&2
