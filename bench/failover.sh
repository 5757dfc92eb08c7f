#!/usr/bin/env bash
# Failover of a PostgreSQL primary, two ways, in the same rounds on the same
# data: promoting a warm standby (`standby:` in the standby host's policy,
# `kind: promote`), and the baseline, a failover by restore: the primary's
# newest base backup and its WAL archive restored onto the standby host
# (`restore_backup` `into:` the standby's export), then started. Each is a
# `drp drill` as in tests/suite/standby.rs: a heartbeat written into the
# primary, a pgbench write load running through the settle and at the
# failure, the primary killed (`pg_ctl -m immediate stop`), the loss
# detected, the service recovered and checked by SQL where it now runs. Each
# drill's JSON report gives the RTO (with its phases) and the heartbeat RPO.
#
# Real PostgreSQL 15 servers, run as `postgres` on Unix sockets; the primary
# archives with `drp-agent wal push` into a local NAS folder, with
# `archive_timeout` of DRP_BENCH_FAILOVER_ARCHIVE_TIMEOUT (10) seconds. A
# round takes a fresh base backup, sets the standby up from it, then runs the
# warm-standby drill and, once the primary is restarted, the restore drill;
# each round archives under host names of its own (pN, sN), so what one
# round's promoted or restored servers archive never reaches the next.
# Writes bench/failover.md (included in BENCHMARKS.md by report.py) and
# bench/failover-last-run.tsv.
#
#   bash bench/failover.sh           # DRP_BENCH_REPS=5 rounds by default
#   DRP_BENCH_FAILOVER_SCALE=20      # pgbench -i scale (20: about 300 MB)
#   DRP_BENCH_FAILOVER_TPS=200       # the write load's rate (pgbench -R)
#   DRP_BENCH_FAILOVER_SETTLE=20     # seconds of heartbeat and load before the kill
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${DRP_BENCH_REPS:-5}
SCALE=${DRP_BENCH_FAILOVER_SCALE:-20}
TPS=${DRP_BENCH_FAILOVER_TPS:-200}
SETTLE=${DRP_BENCH_FAILOVER_SETTLE:-20}
ARCHIVE_TIMEOUT=${DRP_BENCH_FAILOVER_ARCHIVE_TIMEOUT:-10}
PGBIN=/usr/lib/postgresql/15/bin
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/drp/target}
# Builds share one lock with everyone else's cargo on this machine.
flock -o "${DRP_CARGO_LOCK:-/tmp/drp-cargo.lock}" \
    cargo build --release --locked -q -p drp-agent -p drp-coordinator --no-default-features
AGENT=$CARGO_TARGET_DIR/release/drp-agent
DRP=$CARGO_TARGET_DIR/release/drp
for tool in pg_ctl initdb pgbench psql; do
    [ -x "$PGBIN/$tool" ] || { echo "bench: $PGBIN/$tool is missing: install postgresql-15 (tests/services/setup.sh)" >&2; exit 1; }
done
# PostgreSQL's server refuses root: it and drp (which starts private
# servers for restores) run as postgres; pgbench and psql connect as it.
AS_PG="runuser -u postgres --"
WORK=$(mktemp -d /var/tmp/drp-bench-failover.XXXXXX)
chmod 755 "$WORK"
PDATA=$WORK/primary
SDATA=$WORK/standby
PSOCK=$WORK/ps
SSOCK=$WORK/ss
LOAD_PID=
stop_server() { # DATA: stopped at once, if it runs
    [ -f "$1/postmaster.pid" ] && $AS_PG "$PGBIN/pg_ctl" -D "$1" -m immediate -w -t 30 stop > /dev/null 2>&1 || true
}
stop_load() {
    if [ -n "$LOAD_PID" ]; then kill "$LOAD_PID" 2> /dev/null || true; wait "$LOAD_PID" 2> /dev/null || true; fi
    LOAD_PID=
}
cleanup() {
    stop_load
    stop_server "$SDATA"
    stop_server "$PDATA"
    rm -rf "$WORK"
}
trap cleanup EXIT
STARTED=$(date -u +%Y-%m-%dT%H:%MZ)
mkdir -p "$PSOCK" "$SSOCK" "$WORK/nas"
chown -R postgres:postgres "$WORK"

psql_p() { "$PGBIN/psql" -h "$PSOCK" -U postgres -XAtq -v ON_ERROR_STOP=1 "$@"; }
start_primary() { # LOG
    $AS_PG "$PGBIN/pg_ctl" -D "$PDATA" -l "$1" -o "-k $PSOCK" -w -t 120 start > /dev/null
}
load() { # LOG: the write load on the primary, in the background, until it dies with it
    "$PGBIN/pgbench" -h "$PSOCK" -U postgres -n -c 2 -j 2 -R "$TPS" -T 900 bench > "$1" 2>&1 &
    LOAD_PID=$!
}

# The primary: its own cluster, archiving through drp into the NAS (the
# archive_command is in an included file each round rewrites).
$AS_PG "$PGBIN/initdb" -D "$PDATA" -U postgres --auth=trust --no-sync -E UTF8 > /dev/null
cat >> "$PDATA/postgresql.conf" <<EOF

# drp bench/failover.sh
port = 5432
listen_addresses = ''
archive_mode = on
archive_timeout = ${ARCHIVE_TIMEOUT}s
include_if_exists = 'bench-archive.conf'
EOF
start_primary "$WORK/primary-init.log"
psql_p -c "create database bench"
echo "bench: pgbench -i -s $SCALE" >&2
"$PGBIN/pgbench" -h "$PSOCK" -U postgres -i -s "$SCALE" -q bench > "$WORK/pgbench-init.log" 2>&1
DB_BYTES=$(psql_p -c "select pg_database_size('bench')")
$AS_PG "$PGBIN/pg_ctl" -D "$PDATA" -m fast -w stop > /dev/null
CLUSTER_BYTES=$(du -sb "$PDATA" | cut -f1)

source_of() { # SOCKET DATA: a postgres-cluster source
    printf '{kind: postgres-cluster, host: %s, port: 5432, user: postgres, bin_dir: %s, data_directory: %s}' "$1" "$PGBIN" "$2"
}
kill_primary="[$PGBIN/pg_ctl, -D, $PDATA, -m, immediate, -w, stop]"
drill_head() { # NAME POLICY HEARTBEAT-EXPORT READ-FROM
    printf 'name: %s\npolicy: %s\nobjectives: {rto: 10m, rpo: 30m}\n' "$1" "$2"
    printf 'heartbeat: {export: %s, read_from: %s, interval: 1s}\n' "$3" "$4"
    printf 'drill:\n  settle: %ss\n  inject:\n    - name: the primary is lost\n      action: {kind: command, destructive: true, run: %s}\n' "$SETTLE" "$kill_primary"
    printf 'steps:\n  - name: the primary is down\n    phase: detect\n    timeout: 30s\n'
    printf '    action: {kind: sql, export: %s, query: "select 1", until: fails, interval: 1s}\n' "$3"
}
verify_step() { # EXPORT
    printf '  - name: the bench database answers where the service now runs\n    phase: verify\n    timeout: 30s\n'
    printf '    action: {kind: sql, export: %s, database: bench, query: "select count(*) from pgbench_branches", expect: {value: "%s"}}\n' "$1" "$SCALE"
}

RESULTS=bench/failover-last-run.tsv
echo -e "run\tround\trto_s\trpo_heartbeat_s\tdetect_s\trestore_s\trestart_s\tverify_s\trestore_step" > "$RESULTS"
drill() { # NAME RUNBOOK ROUND
    local out="$WORK/$1-$3.json"
    (cd "$(dirname "$2")" && $AS_PG "$DRP" --json drill "$2" --yes --out reports > "$out" 2> "$WORK/$1-$3.err") || true
    python3 - "$out" "$1" "$3" >> "$RESULTS" <<'PY' || { echo "bench: $2 round $3 failed: $(tail -5 "$WORK/$1-$3.err")" >&2; exit 1; }
import json, sys
r = json.load(open(sys.argv[1]))
if r["status"] != "passed":
    sys.exit(f"status {r['status']}: {r.get('failure')}")
ph = r["rto"]["phases"]
f = lambda x: f"{x:.2f}" if x is not None else ""
# The restore phase's step says what it did and how long it took.
said = " ".join(s["message"] for s in r["steps"] if s["section"] == "main" and s["phase"] == "restore").split()
print("\t".join([sys.argv[2], sys.argv[3], f(r["rto"]["measured_seconds"]), f(r["rpo"]["heartbeat_seconds"]),
                 *(f(ph.get(p, 0.0)) for p in ("detect", "restore", "restart", "verify")), " ".join(said)]))
PY
}

for round in $(seq 1 "$REPS"); do
    R=$WORK/r$round
    mkdir -p "$R"
    nas="  nas: {kind: local, path: $WORK/nas}"
    printf 'host: p%s\nstate_dir: %s/state-p\ntargets:\n%s\nexports:\n  main:\n    source: %s\n    targets: [nas]\n' \
        "$round" "$R" "$nas" "$(source_of "$PSOCK" "$PDATA")" > "$R/primary.yaml"
    printf 'host: s%s\nstate_dir: %s/state-s\ntargets:\n%s\nstandby:\n  main:\n    of: {host: p%s, export: main}\n    data_directory: %s\n    host: %s\n    port: 5432\n    user: postgres\n    bin_dir: %s\n    archive_into: main\nexports:\n  main:\n    source: %s\n    targets: [nas]\n' \
        "$round" "$R" "$nas" "$round" "$SDATA" "$SSOCK" "$PGBIN" "$(source_of "$SSOCK" "$SDATA")" > "$R/standby.yaml"
    # The drills' policies: the standby host's with the primary named (the
    # heartbeat and the detection); the primary's with the standby host's
    # cluster named (where the restore lands).
    { cat "$R/standby.yaml"; printf '  primary:\n    source: %s\n    targets: [nas]\n' "$(source_of "$PSOCK" "$PDATA")"; } > "$R/warm-policy.yaml"
    { cat "$R/primary.yaml"; printf '  restored:\n    source: %s\n    targets: [nas]\n' "$(source_of "$SSOCK" "$SDATA")"; } > "$R/restore-policy.yaml"
    { drill_head failover-warm-standby warm-policy.yaml primary main
      printf '  - name: promote the warm standby\n    phase: restore\n    timeout: 3m\n    action: {kind: promote, standby: main, catch_up: 60s}\n'
      verify_step main; } > "$R/warm.yaml"
    { drill_head failover-by-restore restore-policy.yaml main restored
      printf '  - name: restore the newest base backup and the archive onto the standby host\n    phase: restore\n    timeout: 10m\n'
      printf '    action: {kind: restore_backup, export: main, point: before_failure, into: restored}\n'
      printf '  - name: start it\n    phase: restart\n    timeout: 2m\n'
      printf '    action: {kind: command, run: [%s/pg_ctl, -D, %s, -l, %s/restored.log, -o, "-k %s", -w, -t, "120", start]}\n' "$PGBIN" "$SDATA" "$R" "$SSOCK"
      verify_step restored; } > "$R/restore.yaml"
    echo "archive_command = '$AGENT wal push --policy $R/primary.yaml %p'" > "$PDATA/bench-archive.conf"
    chown -R postgres:postgres "$WORK"
    if [ "$round" = 1 ]; then $AS_PG "$AGENT" -q init --policy "$R/primary.yaml" > /dev/null; fi
    start_primary "$R/primary.log"

    echo "bench: round $round: base backup, standby set up from it" >&2
    $AS_PG "$AGENT" -q backup --policy "$R/primary.yaml" > /dev/null
    $AS_PG "$AGENT" -q standby init --policy "$R/standby.yaml" --yes > /dev/null 2> "$R/standby-init.log"
    $AS_PG "$PGBIN/pg_ctl" -D "$SDATA" -l "$R/standby.log" -o "-k $SSOCK" -w -t 120 start > /dev/null
    caught_up=0
    for _ in $(seq 1 120); do
        if $AS_PG "$AGENT" --json standby status --policy "$R/standby.yaml" 2> /dev/null | python3 -c '
import json, sys
s = json.load(sys.stdin)["standbys"][0]["state"]
sys.exit(0 if s.get("in_recovery") is True and s.get("behind_segments") == 0 else 1)'; then caught_up=1; break; fi
        sleep 1
    done
    [ "$caught_up" = 1 ] || { echo "bench: round $round: the standby did not catch up in 120 s: $(tail -5 "$R/standby.log")" >&2; exit 1; }

    echo "bench: round $round: warm-standby failover" >&2
    load "$R/load-warm.log"
    drill warm "$R/warm.yaml" "$round"
    stop_load
    $AS_PG "$PGBIN/pg_ctl" -D "$SDATA" -m fast -w -t 60 stop > /dev/null

    echo "bench: round $round: failover by restore" >&2
    start_primary "$R/primary.log"
    load "$R/load-restore.log"
    drill restore "$R/restore.yaml" "$round"
    stop_load
    $AS_PG "$PGBIN/pg_ctl" -D "$SDATA" -m fast -w -t 60 stop > /dev/null
    # What each restore kept aside, and the round's archives: not needed again.
    rm -rf "$WORK"/standby.drp-replaced-* "$WORK/nas/p$round" "$WORK/nas/s$round"
done

python3 - "$RESULTS" "$REPS" "$STARTED" "$SCALE" "$TPS" "$SETTLE" "$ARCHIVE_TIMEOUT" "$DB_BYTES" "$CLUSTER_BYTES" "$("$PGBIN/postgres" --version)" > bench/failover.md <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
reps, started, scale, tps, settle, at = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6], int(sys.argv[7])
db_bytes, cluster_bytes, pg_version = int(sys.argv[8]), int(sys.argv[9]), sys.argv[10]
PHASES = ("detect", "restore", "restart", "verify")
by = {k: {int(r["round"]): r for r in rows if r["run"] == k} for k in ("warm", "restore")}
def col(k, c):
    return [float(r[c]) for r in by[k].values() if r[c] != ""]
def med(k, c):
    xs = col(k, c)
    return statistics.median(xs) if xs else float("nan")
def rng(k, c):
    xs = col(k, c)
    return f"{min(xs):.1f}–{max(xs):.1f}" if xs else "n/a"
ratios = sorted(float(by["warm"][i]["rto_s"]) / float(by["restore"][i]["rto_s"]) for i in by["warm"] if i in by["restore"])
print("## Failover: promoting a warm standby against restoring the newest backup")
print()
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown CPU")
cores = len([l for l in open("/proc/cpuinfo") if l.startswith("processor")])
print(f"From `bash bench/failover.sh` ({started}, {reps} rounds; {cpu}, {cores} cores; {pg_version}).")
print(f"A primary archiving its WAL with `drp-agent wal push` into a local NAS folder, **`archive_timeout = {at}s`**; the")
print(f"`bench` database from `pgbench -i -s {scale}` ({db_bytes / 1e6:.0f} MB; {cluster_bytes / 1e6:.0f} MB for the whole cluster).")
print(f"Each failover is a `drp drill`: a heartbeat row a second, a pgbench write load (2 clients, {tps} tps)")
print(f"during the {settle} s settle and at the failure, the primary killed (`pg_ctl -m immediate stop`), the loss")
print("detected by SQL, the service recovered, then `select count(*) from pgbench_branches` where it now runs.")
print("RTO is from the kill to that check passing; the heartbeat RPO is from the kill back to the newest")
print("heartbeat found where the service now runs. In each round, on the same data:")
print()
print("- **warm standby**: a standby set up (`drp-agent standby init`) from the base backup the round takes")
print("  first, replaying the primary's archive and caught up before the load starts; the drill promotes it")
print("  (`kind: promote`, which first waits until it has replayed every archived segment);")
print("- **restore** (the baseline): the primary restarted after that drill, then the same drill restoring the")
print("  newest base backup (the round's) and the archive to just before the kill onto the standby host's")
print("  cluster (`restore_backup` `into:` its export), then starting it (`pg_ctl start`).")
print()
# How much WAL each restore replayed: from its base backup's consistency to where the replay stopped.
import re
from datetime import datetime
def span(r):
    m = re.search(r"consistent at (\S+?), its WAL replayed to (\S+)", r["restore_step"])
    t = lambda x: datetime.fromisoformat(re.sub(r"(\.\d{6})\d*", r"\1", x).replace("Z", "+00:00"))
    return (t(m.group(2)) - t(m.group(1))).total_seconds() if m else None
spans = [x for x in (span(r) for r in by["restore"].values()) if x is not None]
wal = f" ({statistics.median(spans):.0f} s of it at the median)" if spans else ""
print(f"The restore replays only the WAL written since the round's base backup{wal}: it is the best case")
print("for a restore, not a nightly backup with a day of WAL behind it.")
print()
print("| failover | RTO (median) | RTO range | heartbeat RPO (median) | RPO range | " + " | ".join(f"{p} (median)" for p in PHASES) + " |")
print("| --- | --- | --- | --- | --- | " + " | ".join("---" for _ in PHASES) + " |")
for k, name in (("warm", "promote the warm standby"), ("restore", "restore base backup + archive, start")):
    print(f"| {name} | {med(k, 'rto_s'):.1f} s | {rng(k, 'rto_s')} s | {med(k, 'rpo_heartbeat_s'):.1f} s | {rng(k, 'rpo_heartbeat_s')} s | "
          + " | ".join(f"{med(k, p + '_s'):.1f} s" for p in PHASES) + " |")
print()
w_rto, w_rpo = med("warm", "rto_s"), med("warm", "rpo_heartbeat_s")
w_rto_max, w_rpo_max = max(col("warm", "rto_s")), max(col("warm", "rpo_heartbeat_s"))
r_rpo_max = max(col("restore", "rpo_heartbeat_s"))
def held(x, limit):
    return "holds" if x <= limit else "MISSED"
print(f"- Warm-standby RTO ÷ restore RTO: **{statistics.median(ratios):.2f}×** (range {ratios[0]:.2f}–{ratios[-1]:.2f} over the rounds):")
print(f"  the restore takes {1 / statistics.median(ratios):.0f}× as long.")
print(f"- Goals for the warm standby: RTO ≤ 60 s **{held(w_rto_max, 60)}** (worst round {w_rto_max:.1f} s); RPO ≤ archive_timeout")
print(f"  ({at} s) **{held(w_rpo_max, at)}** (worst round {w_rpo_max:.1f} s). Both failovers read the same archive, and")
print("  each loses what the primary had not archived when it died: the segment being written, at most")
print("  `archive_timeout` of commits old, as the heartbeat measures it to within its interval (1 s) and a push.")
print(f"  The restore's worst round: {r_rpo_max:.1f} s. The two drills of a round kill the primary at other points of its")
print(f"  {at} s archiving cycle, so within a round their RPOs differ.")
def dominant(k):
    ph = {p: med(k, p + "_s") for p in PHASES}
    top = max(ph, key=ph.get)
    return top, ph[top], ph[top] / med(k, "rto_s")
t, s, share = dominant("warm")
print(f"- What dominates the warm standby's RTO: the {t} phase ({s:.1f} s of {w_rto:.1f} s, {share:.0%}), the `promote` step. It")
print("  first waits until the standby has replayed every segment the archive holds (an immediate stop archives")
print("  nothing more; the standby asks its `restore_command` for the next segment every")
print("  `wal_retrieve_retry_interval`, 5 s by default, so it can be one segment behind), then runs `pg_promote`.")
if max(col("warm", "restore_s")) < 1:
    print(f"  Here it took at most {max(col('warm', 'restore_s')):.1f} s in any round: the standby had replayed the last archived segment")
    print("  already (a wait for one more fetch would show as seconds), so the phase is the promotion itself.")
else:
    print(f"  In some rounds it waited for the standby to fetch the last segment: the phase reached {max(col('warm', 'restore_s')):.1f} s.")
print("  Nothing is restarted: the promoted server is already running.")
t, s, share = dominant("restore")
print(f"- What dominates the restore's RTO: the {t} phase ({s:.1f} s of {med('restore', 'rto_s'):.1f} s, {share:.0%}): the base backup received,")
print("  decompressed and both digests checked, `pg_verifybackup`, a private server replaying the archive to")
print("  the kill, its checkpoint, the swap; its time grows with the database and with the WAL since the backup,")
print("  where a warm standby's does not.")
print("- Raw figures per round: `bench/failover-last-run.tsv`. Detection is the first failed `select 1`")
print("  (polled each second) in both.")
print()
PY
echo "bench: wrote bench/failover.md and $RESULTS" >&2
# BENCHMARKS.md carries the section (report.py includes bench/failover.md
# when it regenerates the file): replaced in place, or added at the end.
python3 - <<'PY'
md = open("BENCHMARKS.md").read()
section = open("bench/failover.md").read()
start = md.find("## Failover: ")
if start >= 0:
    end = md.find("\n## ", start + 1)
    md = md[:start] + section + (md[end + 1:] if end >= 0 else "")
else:
    md = md.rstrip("\n") + "\n\n" + section
open("BENCHMARKS.md", "w").write(md)
PY
