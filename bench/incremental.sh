#!/usr/bin/env bash
# The engine of incremental tree exports, measured on the suite's test tree
# (100 folders of 200 files of 64 B to 4 KiB, three 3 MiB files: about 20,000
# files): restic's first run, a second run after 1 % of the files changed
# (plus 50 added, 50 deleted and a large file moved), and a run killed with
# SIGKILL midway followed by `restic check` and a run that must succeed.
# Writes bench/incremental-last-run.tsv: time, peak RSS and bytes added per
# run, and the ratio second ÷ first.
#
# Usage: bench/incremental.sh [workdir]   (needs restic and GNU time)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=${1:-$(mktemp -d /tmp/drp-bench-incremental.XXXXXX)}
mkdir -p "$work"
tree=$work/tree repo=$work/repo
export RESTIC_PASSWORD=bench-key-not-a-secret RESTIC_PROGRESS_FPS=1
rm -rf "$tree" "$repo"

python3 - "$tree" <<'EOF'
import os, sys, random
root = sys.argv[1]
scripts = ["latin", "élan", "Ünïcode", "日本語", "кириллица", "العربية"]
for d in range(100):
    dd = os.path.join(root, f"{scripts[d % 6]}-{d:03}")
    os.makedirs(dd)
    for f in range(200):
        r = random.Random(d * 100000 + f)
        n = 64 + (d * 100000 + f) * 7919 % 4000
        with open(os.path.join(dd, f"{f:04}-{scripts[f % 6]}.txt"), "wb") as fh:
            fh.write(r.randbytes(n))
os.makedirs(os.path.join(root, "large"))
for i in range(3):
    with open(os.path.join(root, "large", f"master-{i}.wav"), "wb") as fh:
        fh.write(random.Random(7000000 + i).randbytes(3 << 20))
EOF

restic init -q -r "$repo" --repository-version 2

# run NAME: one backup, its wall time, peak RSS and bytes added.
run() {
    local name=$1
    /usr/bin/time -f '%e %M' -o "$work/$name.time" \
        restic -r "$repo" --json --compression auto backup . >"$work/$name.json" 2>"$work/$name.err" \
        < /dev/null || true
    local added
    added=$(grep '"message_type":"summary"' "$work/$name.json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data_added"])')
    read -r secs kb <"$work/$name.time"
    printf '%s\t%s\t%s\t%s\n' "$name" "$secs" "$kb" "$added"
}

cd "$tree"
{
    printf 'run\tseconds\tpeak_rss_kib\tbytes_added\n'
    run first
    python3 - "$tree" <<'EOF'
import os, sys, random
root = sys.argv[1]
scripts = ["latin", "élan", "Ünïcode", "日本語", "кириллица", "العربية"]
for d in range(5):
    for f in range(40):
        p = os.path.join(root, f"{scripts[d % 6]}-{d:03}", f"{f:04}-{scripts[f % 6]}.txt")
        open(p, "wb").write(random.Random(900000 + d * 1000 + f).randbytes(1500))
for f in range(50):
    open(os.path.join(root, "latin-006", f"new-{f}.txt"), "wb").write(random.Random(500000 + f).randbytes(1200))
for f in range(50):
    os.remove(os.path.join(root, "élan-007", f"{f:04}-{scripts[f % 6]}.txt"))
os.makedirs(os.path.join(root, "archive", "2024"))
os.rename(os.path.join(root, "large", "master-2.wav"), os.path.join(root, "archive", "2024", "master-2.wav"))
EOF
    run second
} >"$work/rows.tsv"

# SIGKILL midway through a run with 24 MiB of new data, then check and run again.
for i in 0 1 2 3 4 5; do head -c $((4 << 20)) /dev/urandom >"$tree/large/take-$i.bin"; done
restic -r "$repo" --json backup . >/dev/null 2>&1 </dev/null &
pid=$!
sleep 1.5
kill -9 "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
# The killed run's lock is stale: `unlock` removes only such locks.
restic -r "$repo" unlock -q >/dev/null 2>&1
killed_check=ok
restic -r "$repo" check -q >/dev/null 2>&1 || killed_check=failed
after_kill=ok
restic -r "$repo" backup -q . </dev/null >/dev/null 2>&1 || after_kill=failed

out=$here/incremental-last-run.tsv
{
    cat "$work/rows.tsv"
    awk -F'\t' 'NR==2{t=$2; b=$4; m=$3} NR==3{printf "second/first\t%.3f\t%.3f\t%.4f\n", $2/t, $3/m, $4/b}' "$work/rows.tsv"
    printf 'sigkill: restic unlock, then check\t%s\n' "$killed_check"
    printf 'sigkill: next run\t%s\n' "$after_kill"
    printf 'restic\t%s\n' "$(restic version | head -1)"
} >"$out"
cat "$out"
