#!/usr/bin/env bash
# Catalogues of 10,000 points, on a local path (NAS) and on Garage S3: a
# backup's wall time over 10,000 points against over 10 (the same tiny
# directory export, two hosts in one repository, in the same rounds), and
# `list`, `status`, `prune --dry-run` and `verify --sample 3` over 10,000.
#
# The 10,000 points are made by `drp-agent index fill` (hidden): the export's
# first point, backed up for real, copied into 9,999 more, each with its own
# data object (the same bytes and digests) and manifest, an hour apart,
# written through the commit's own writes; then its index is rebuilt. Every
# one of them restores and verifies (the rounds' `verify --sample 3` reads
# three at random).
#
# Writes bench/catalogue.md (included in BENCHMARKS.md by report.py, and
# replaced in place in BENCHMARKS.md) and bench/catalogue-last-run.tsv.
#
#   bash bench/catalogue.sh             # DRP_BENCH_REPS=5 rounds by default
#   DRP_BENCH_ENV=FILE bash bench/catalogue.sh   # services already started (run.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${DRP_BENCH_REPS:-5}
POINTS=${DRP_BENCH_POINTS:-10000}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/drp/target}
[ -n "${DRP_BENCH_NO_BUILD:-}" ] || cargo build --release --locked -q -p drp-agent --no-default-features
AGENT=$CARGO_TARGET_DIR/release/drp-agent
if [ -n "${DRP_BENCH_ENV:-}" ]; then
    ENV_FILE=$DRP_BENCH_ENV
    STOP=""
else
    bash tests/services/setup.sh >/dev/null
    ENV_FILE=$(bash tests/services/start.sh 2>/dev/null)
    STOP="bash tests/services/stop.sh $(dirname "$ENV_FILE")"
fi
WORK=$(mktemp -d /var/tmp/drp-bench-catalogue.XXXXXX)
trap '$STOP; rm -rf "$WORK"' EXIT
# shellcheck disable=SC1090
set -a; . "$ENV_FILE"; set +a
STARTED=$(date -u +%Y-%m-%dT%H:%MZ)
PREFIX=catalogue-$(date +%s)

mkdir -p "$WORK/site" "$WORK/nas"
echo "<h1>catalogue</h1>" > "$WORK/site/index.html"
policy() { # HOST TARGET
    cat > "$WORK/$1-$2.yaml" <<YAML
host: $1
state_dir: $WORK/state-$1-$2
targets:
  nas: {kind: local, path: $WORK/nas}
  s3:
    kind: s3
    bucket: $DRP_TEST_S3_BUCKET
    prefix: $PREFIX
    endpoint: $DRP_TEST_S3_ENDPOINT
    region: garage
    access_key_id: {env: DRP_TEST_S3_KEY_ID}
    secret_access_key: {env: DRP_TEST_S3_SECRET}
exports:
  site:
    source: {kind: directory, path: $WORK/site}
    targets: [$2]
    retention: {keep_last: 24, keep_daily: 30, keep_monthly: 12}
YAML
}
RESULTS=bench/catalogue-last-run.tsv
echo -e "target\tround\tcommand\tpoints\twall_s" > "$RESULTS"
timed() { # TARGET ROUND COMMAND POINTS ARGS...
    local t0 t1
    t0=$EPOCHREALTIME
    "$AGENT" -q "${@:5}" > "$WORK/out" 2> "$WORK/err" || { echo "bench: $3 failed: $(tail -3 "$WORK/err")" >&2; exit 1; }
    t1=$EPOCHREALTIME
    echo -e "$1\t$2\t$3\t$4\t$(awk -v a="$t1" -v b="$t0" 'BEGIN { printf "%.4f", a - b }')" >> "$RESULTS"
}
for target in nas s3; do
    policy few "$target"; policy many "$target"
    "$AGENT" -q init --policy "$WORK/few-$target.yaml" > /dev/null
    for _ in $(seq 1 10); do "$AGENT" -q backup --policy "$WORK/few-$target.yaml" > /dev/null; done
    "$AGENT" -q backup --policy "$WORK/many-$target.yaml" > /dev/null
    "$AGENT" -q verify --policy "$WORK/many-$target.yaml" --latest > /dev/null
    t0=$EPOCHREALTIME
    "$AGENT" -q index fill --policy "$WORK/many-$target.yaml" -e site --count $((POINTS - 1))
    echo "bench: $target: $POINTS points made in $(awk -v a="$EPOCHREALTIME" -v b="$t0" 'BEGIN { printf "%.0f", a - b }') s" >&2
    for round in $(seq 1 "$REPS"); do
        # Alternating which goes first in a round.
        if [ $((round % 2)) = 1 ]; then order="few many"; else order="many few"; fi
        for who in $order; do
            n=10; [ "$who" = many ] && n=$POINTS
            timed "$target" "$round" backup "$n" backup --policy "$WORK/$who-$target.yaml"
        done
        p="$WORK/many-$target.yaml"
        timed "$target" "$round" list "$POINTS" list --policy "$p"
        timed "$target" "$round" status "$POINTS" status --policy "$p"
        timed "$target" "$round" "prune --dry-run" "$POINTS" prune --dry-run --policy "$p"
        timed "$target" "$round" "verify --sample 3" "$POINTS" verify --sample 3 --policy "$p"
    done
    listed=$("$AGENT" --json list --policy "$WORK/many-$target.yaml" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["points"]))')
    [ "$listed" -ge "$POINTS" ] || { echo "bench: $target lists $listed points, not $POINTS" >&2; exit 1; }
done

python3 - "$RESULTS" "$REPS" "$POINTS" "$STARTED" > bench/catalogue.md <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
reps, points, started = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
names = {"nas": "local path (NAS)", "s3": "Garage S3"}
limit = {"nas": 0.5, "s3": 2.0}
def wall(t, c, n=None):
    return {int(r["round"]): float(r["wall_s"]) for r in rows
            if r["target"] == t and r["command"] == c and (n is None or int(r["points"]) == n)}
print(f"## Catalogue: {points:,} points")
print()
print(f"From `bash bench/catalogue.sh` ({started}, {reps} rounds). One repository per target holds two hosts'")
print(f"exports of the same tiny folder: one with 10 points, one with {points:,}. The {points:,} points are the")
print(f"export's first point, backed up for real, copied by `drp-agent index fill` (hidden) into {points - 1:,} more:")
print("each its own data object (same bytes and digests) and manifest, an hour apart, written through the")
print("commit's own writes, then the index rebuilt; each verifies and restores like any point. In each round")
print("both backups run (alternating which goes first), then each read command once over the large export.")
print("Wall time of `drp-agent` as run from a shell, process start included; medians over the rounds.")
print()
print("| target | backup over 10 | backup over %s | ratio (median of rounds) | list | status | prune --dry-run | verify --sample 3 |" % f"{points:,}")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
notes = []
for t in ("nas", "s3"):
    few, many = wall(t, "backup", 10), wall(t, "backup", points)
    if not few:
        continue
    ratios = sorted(many[i] / few[i] for i in few if i in many)
    ratio = statistics.median(ratios)
    cells = []
    for c in ("list", "status", "prune --dry-run", "verify --sample 3"):
        m = statistics.median(wall(t, c).values())
        cells.append(f"{m:.3f} s")
        if m > limit[t]:
            notes.append(f"- {names[t]}: `{c}` takes {m:.2f} s, over the {limit[t]} s target.")
    print(f"| {names[t]} | {statistics.median(few.values()):.3f} s | {statistics.median(many.values()):.3f} s | "
          f"{ratio:.2f}× ({ratios[0]:.2f}–{ratios[-1]:.2f}) | " + " | ".join(cells) + " |")
    if ratio > 1.10:
        notes.append(f"- {names[t]}: a backup over {points:,} points takes {ratio:.2f}× its time over 10, over the 1.10× target.")
print()
print(f"Targets: a backup over {points:,} points within 10 % of its time over 10; `list`, `status`,")
print("`prune --dry-run` and `verify --sample 3` within 0.5 s on a local path and 2 s on S3.")
print("\n".join(notes) if notes else "Every target is met in this run.")
print()
PY
echo "bench: wrote bench/catalogue.md and $RESULTS" >&2
python3 - <<'PY'
md = open("BENCHMARKS.md").read()
section = open("bench/catalogue.md").read()
start = md.find("## Catalogue: ")
if start >= 0:
    end = md.find("\n## ", start + 1)
    md = md[:start] + section + (md[end + 1:] if end >= 0 else "")
else:
    md = md.rstrip("\n") + "\n\n" + section
open("BENCHMARKS.md", "w").write(md)
PY
