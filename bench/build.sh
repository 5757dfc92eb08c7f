#!/usr/bin/env bash
# How long README command 1 takes to build on this machine, cold: each
# option in a fresh target folder, from a clean checkout of HEAD, one after
# the other. Writes bench/build.md (included in BENCHMARKS.md by report.py).
#
#   bash bench/build.sh          # about 15 minutes on 2 cores
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WT=$(mktemp -d /var/tmp/drp-build-bench.XXXXXX)
trap 'git -C "$ROOT" worktree remove --force "$WT/src" >/dev/null 2>&1; rm -rf "$WT"' EXIT
git worktree add -q "$WT/src" HEAD
STARTED=$(date -u +%Y-%m-%dT%H:%MZ)
RESULTS="$WT/results.tsv"
measure() { # NAME DESCRIPTION CARGO_ARGS...
    local name=$1 what=$2; shift 2
    local t0 t1
    t0=$EPOCHREALTIME
    (cd "$WT/src" && CARGO_TARGET_DIR="$WT/target-$name" cargo build --locked -q "$@")
    t1=$EPOCHREALTIME
    echo -e "$name\t$what\t$(awk -v a="$t1" -v b="$t0" 'BEGIN { printf "%.0f", a - b }')\t$*" >> "$RESULTS"
    rm -rf "$WT/target-$name"
}
measure quick "the \`quick\` profile (opt-level 1, no debug info), without the AWS SDKs: README command 1" --profile quick --no-default-features --bin drp
measure release-noaws "release, without the AWS SDKs" --release --no-default-features --bin drp
measure dev-noaws "debug, without the AWS SDKs" --no-default-features --bin drp
python3 - "$RESULTS" "$STARTED" "$(nproc)" > bench/build.md <<'PY'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
print("## First run: building `drp` cold")
print()
print(f"From `bash bench/build.sh` ({sys.argv[2]}, {sys.argv[3]} cores): `cargo build` of the `drp` binary in a fresh")
print("target folder, from a clean checkout, with the crates already downloaded.")
print()
print("| build | seconds | cargo arguments |")
print("| --- | --- | --- |")
for name, what, secs, args in rows:
    print(f"| {what} | {secs} | `{args}` |")
print()
print("- The full release build with the AWS SDKs (`cargo build --release`, what the packages ship) takes about")
print("  19 minutes on such a machine, most of it `aws-sdk-ec2`; the demo needs none of the SDKs.")
print("- On the critical path of the release build: the bundled C libraries (SQLite, aws-lc for rustls, zstd)")
print("  build beside the Rust crates, then `drp-core` and `drp-coordinator` compile one after the other;")
print("  opt-level 1 shortens both (the C libraries are compiled at the profile's level too).")
print()
PY
echo "bench: wrote bench/build.md" >&2
