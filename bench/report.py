"""Turns bench/run.sh's raw timings into BENCHMARKS.md: figures and ratios
from one run (absolute times vary on shared machines; ratios are what count).

Each line of the results is one run: name, then wall, user and system
seconds, peak RSS in KiB and the CPU seconds the PostgreSQL server spent
meanwhile. The n-th run of every name belongs to round n; a ratio is the
median of the per-round ratios (runs of a round are minutes apart at most),
shown with its range over the rounds.

    report.py [--merge-with BASE.tsv] [--merged-out OUT.tsv] RESULTS DUMP_BYTES ZSTD_BYTES MB REPS [PROFILE STREAM_BYTES PGB_SECONDS PGB_SCALE]

--merge-with: RESULTS is a partial run (`DRP_BENCH_ONLY=pipeline`): its rows
replace the rows of the same names in BASE (a full run's bench/last-run.tsv),
and the report is made from the merged rows; --merged-out writes them (run.sh
then copies them to bench/last-run.tsv). The report goes to standard output.
Rows `info:KEY` carry each run's date, scale and sizes (`info:pipeline_KEY`
for a pipeline-only run's), so a merged report says which part is from which run.
"""
import os
import platform
import statistics
import subprocess
import sys
from collections import OrderedDict

args, opts = [], {}
argv = sys.argv[1:]
while argv:
    a = argv.pop(0)
    if a in ("--merge-with", "--merged-out"):
        opts[a] = argv.pop(0)
    else:
        args.append(a)
results, dump_bytes, zstd_bytes, mb, reps = args[0], int(args[1]), int(args[2]), args[3], args[4]
profile = args[5] if len(args) > 5 else None
stream_bytes = int(args[6]) if len(args) > 6 else dump_bytes
pgb_seconds = args[7] if len(args) > 7 else "30"
pgb_scale = args[8] if len(args) > 8 else "10"
HERE = os.path.dirname(os.path.abspath(__file__))


def read_rows(path):
    """The lines of a results file, as (name, figures)."""
    rows = []
    for line in open(path):
        line = line.rstrip("\n")
        if line.strip():
            name, figures = line.split("\t", 1)
            rows.append((name, figures))
    return rows


rows = read_rows(results)
if "--merge-with" in opts:
    # The new run's rows replace every row of the same name in the base; they
    # go, in their own order, where the first replaced row was (at the end
    # when none was), so the table keeps the rounds' order.
    base = read_rows(opts["--merge-with"]) if os.path.exists(opts["--merge-with"]) else []
    new_names = {n for n, _ in rows}
    at = next((i for i, (n, _) in enumerate(base) if n in new_names), None)
    kept = [r for r in base if r[0] not in new_names]
    if at is None:
        rows = kept + rows
    else:
        at = sum(1 for n, _ in base[:at] if n not in new_names)
        rows = kept[:at] + rows + kept[at:]
if "--merged-out" in opts:
    with open(opts["--merged-out"], "w") as f:
        f.writelines(f"{n}\t{fig}\n" for n, fig in rows)

runs = OrderedDict()
failed = {}
info = {}  # info:KEY -> value (sizes run.sh measured)
wal = OrderedDict()  # wal:ARCHIVER -> {key: value} (the pgbench part)
for name, figures in rows:
    if name.startswith("info:"):
        info[name[5:]] = figures.strip()
        continue
    if name.startswith("wal:"):
        wal[name[4:]] = dict(kv.split("=", 1) for kv in figures.split() if "=" in kv)
        continue
    if figures.startswith("FAILED"):
        failed[name] = figures[len("FAILED"):].strip()
        runs.setdefault(name, []).append(None)
        continue
    wall, user, sys_, rss, server = figures.split()
    runs.setdefault(name, []).append(
        {"wall": float(wall), "cpu": float(user) + float(sys_), "user": float(user), "sys": float(sys_), "rss": int(rss), "server": float(server)}
    )

# Each run's date, scale and sizes: the full run's from its info: rows (the
# command line's when the rows have none, as in files written before they
# existed), a pipeline-only run's from its info:pipeline_ rows.
dump_bytes = int(info.get("dump_bytes") or dump_bytes)
zstd_bytes = int(info.get("zstd_bytes") or zstd_bytes)
stream_bytes = int(info.get("stream_bytes") or stream_bytes)
mb = info.get("mb") or mb
reps = info.get("reps") or reps
# The pipeline's figures (zstd alone, drp's stream plain and encrypted).
p_dump = int(info.get("pipeline_dump_bytes") or dump_bytes)
p_zstd = int(info.get("pipeline_zstd_bytes") or zstd_bytes)
p_stream = int(info.get("pipeline_stream_bytes") or stream_bytes)
p_mb = info.get("pipeline_mb") or mb
p_reps = info.get("pipeline_reps") or reps
two_runs = "pipeline_date" in info


def ok(name):
    return [r for r in runs.get(name, []) if r]


def med(name, key="wall"):
    xs = [r[key] for r in ok(name)]
    return statistics.median(xs) if xs else None


def paired(a, b, invert=False):
    """Per-round ratios a/b (or b/a), for rounds where both ran."""
    xs = []
    for ra, rb in zip(runs.get(a, []), runs.get(b, [])):
        if ra and rb:
            xs.append(rb["wall"] / ra["wall"] if invert else ra["wall"] / rb["wall"])
    return xs


def cell(text):
    return text.replace("|", "\\|")


def version(cmd):
    try:
        out = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=20)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except Exception as e:  # a missing tool is said, not hidden
        return f"unavailable ({e})"


cpu = "unknown"
for line in open("/proc/cpuinfo"):
    if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
        break
cores = int(subprocess.run("nproc", capture_output=True, text=True).stdout.strip())
mem = subprocess.run("free -g | awk '/Mem:/ {print $2}'", shell=True, capture_output=True, text=True).stdout.strip()

# The names run.sh gives its runs.
ZSTD = "zstd -T0 -3 (bound)"
ZSTD_SHA = "zstd -T0 -3 | sha256sum"
PIPE = "drp pipeline to local NAS"
PG_DUMP = "pg_dump -Fc -Z0 > /dev/null (producer bound)"
PG_DUMP_GZ = "pg_dump -Fc > /dev/null (gzip 6)"
PG_ZSTD = "pg_dump -Fc -Z0 | zstd -T0 -3 > file"
DRP_NAS = "drp-agent backup to local NAS"
DRP_S3 = "drp-agent backup to S3 (Garage)"
DRP_SFTP = "drp-agent backup to SFTP (OpenSSH)"
RESTIC = "restic backup --stdin"
BORG = "borg create (zstd,3) from stdin"
PGBR = "pgBackRest full backup (physical)"
PG_RESTORE = "pg_restore -j2 from a local file"
DRP_R_NAS = "drp-agent restore (-j2) from local NAS"
DRP_R_S3 = "drp-agent restore (-j2) from S3"
DRP_R_SFTP = "drp-agent restore (-j2) from SFTP"
RESTIC_R = "restic restore, then pg_restore -j2"
PGBR_R = "pgBackRest restore (data directory only)"
DRP_BASE = "drp-agent base backup (physical) to local NAS"
PG_BASE = "pg_basebackup -Ft -X fetch > /dev/null"
PG_BASE_ZSTD = "pg_basebackup -Ft -X fetch | zstd -T0 -3 > file"
PG_BASE_NONE = "pg_basebackup -Ft -X none > /dev/null (waits for the archive)"
DRP_PR = "drp-agent physical restore (replay to latest)"
PGBR_RR = "pgBackRest restore, replay to end of archive, stop"
SHELL = "ten trivial commands from a shell"
DRILL = "drp drill of ten trivial steps"
MEM_SMALL = "memory: drp pipeline, 100 MB"
MEM_BIG = PIPE
SEALED = "drp pipeline, encrypted (age), to local vault"
VERIFY = "drp verify of the pipeline's point"
VERIFY_SEALED = "drp verify of the encrypted point (--identity)"
# What `DRP_BENCH_ONLY=pipeline` runs (its rows replace these in a merge).
PIPELINE_ROWS = [ZSTD, ZSTD_SHA, PIPE, SEALED, VERIFY, VERIFY_SEALED]

out = []
p = out.append
p("# Benchmarks\n")
if two_runs and not any(n not in PIPELINE_ROWS for n in runs):
    p("Produced by `DRP_BENCH_ONLY=pipeline bash bench/run.sh` in one run on one machine: the pipeline's")
    p(f"runs alone ({info['pipeline_date']}); a full `bash bench/run.sh` adds the rest. Absolute times vary on")
    p("shared machines, the ratios are what to compare.\n")
elif two_runs:
    full_date = info.get("date")
    p("Produced by `bash bench/run.sh` on one machine, in two runs: a full one, and")
    p("`DRP_BENCH_ONLY=pipeline bash bench/run.sh`, whose rows take the place of the same rows of the full one. Rerun")
    p("them to check the figures: absolute times vary on shared machines, the ratios are what to compare.\n")
    p(f"*Which run each part comes from:* the pipeline-only run of {info['pipeline_date']} ({p_reps} rounds,")
    p(f"`DRP_BENCH_MB={p_mb}`) gave the pipeline's runs, {', '.join(f'`{n}`' for n in PIPELINE_ROWS)}:")
    p("so the pipeline's ratios, the encryption section and those rows of the tables. Everything else (the")
    p("database runs, physical mode, WAL archiving, the drill, the 100 MB slice's memory, the profile) is from the full run"
      + (f" of {full_date} ({reps} rounds, `DRP_BENCH_MB={mb}`)." if full_date else
         ", which precedes the pipeline-only one; its date is not recorded in its rows (nor are its sizes and rounds: those shown are the pipeline-only run's)."))
    p("The peak-RSS row compares the two runs' figures.\n")
else:
    p("Produced by `bash bench/run.sh` in one run on one machine; every figure below")
    p("comes from that run. Rerun it to check them: absolute times vary on shared")
    p("machines, the ratios are what to compare.\n")
p("## Machine and data\n")
p(f"- CPU: {cpu}, {cores} cores, {mem} GiB RAM; {platform.system()} {platform.release()}")
p("- Data: a PostgreSQL database of customers and orders (text, numeric, timestamps, jsonb) whose")
p(f"  `pg_dump -Fc -Z0` is {dump_bytes/1e6:.0f} MB (scale `DRP_BENCH_MB={mb}`); zstd -3 makes it")
p(f"  {zstd_bytes/1e6:.0f} MB, a ratio of {dump_bytes/zstd_bytes:.2f}. The PostgreSQL server runs on the same machine.")
p(f"- The pipeline runs (drp, and zstd alone) read the dump twice over as one {p_stream/1e9:.1f} GB file"
  + (f" (the pipeline-only run's dump, `DRP_BENCH_MB={p_mb}`: {p_dump/1e6:.0f} MB, {p_zstd/1e6:.0f} MB with zstd -3)." if p_stream != stream_bytes else "."))
p("  drp backs it up to a local target unencrypted (`nas`, `encryption: none`) and, as the export")
p("  `stream-sealed`, to another encrypted to the policy's one recipient (`vault`), and verifies both points.")
if info.get("phys_bytes") and info.get("db_bytes"):
    p(f"- On disk the database takes {int(info['db_bytes'])/1e9:.2f} GB, and the whole cluster (what a physical backup copies,")
    p(f"  as restored) {int(info['phys_bytes'])/1e9:.2f} GB.")
p(f"- {reps} rounds; each round runs every tool once, in the order of the table below (drp's plain and")
p("  encrypted runs of the stream alternate which goes first). A ratio is the")
p("  median of the ratios within each round, with their range over the rounds. Before each run the")
p("  page cache is flushed to disk (`sync`); the files read (the stream, the baseline's dump) are read")
p("  once beforehand so every tool finds them in memory; the restored copies are dropped at the end of")
p("  each round, so every round backs up the same cluster; autovacuum is off during the benchmark.")
p(f"- Versions: {version('/usr/lib/postgresql/15/bin/pg_dump --version')}; {version('zstd --version')};")
p(f"  {version('restic version')}; {version('borg --version')}; {version('pgbackrest version')};")
p(f"  {version('${CARGO_TARGET_DIR:-/var/cache/drp/target}/release/drp-agent --version')} (release build, zstd level 3, both cores).")
p("- Exact commands: see `bench/run.sh` (each `measure` line). Peers use their documented")
p("  settings: restic `--compression auto`, borg `--compression zstd,3`, pgBackRest `compress-type=zst`,")
p("  `compress-level=3`, `process-max=2`, `start-fast=y`, and its archive check on (its default: a backup")
p("  waits until its WAL is in its archive, as drp's does). restic and borg get a fresh repository every")
p("  round, so they store the dump in full as drp does. drp's policy names the PostgreSQL 15 binaries")
p("  (`bin_dir`), as the baselines call them.")
p("- Physical mode: the server runs with `archive_mode = on` and `archive_timeout = 60`, and the")
p("  `archive_command` is switched by reload within each round: `true` during the logical runs (their")
p("  restores write GBs of WAL that no one needs, discarded as when archiving is off), drp's `wal push`")
p("  for drp's base backup and physical restore, pgBackRest's `archive-push` for its backup and restores;")
p("  so each tool restores from its own archive, from the backup it just took to the archive's end. The")
p("  physical runs come last in each round, after the restored databases are dropped (every round backs")
p("  up the same cluster). drp's `postgres-cluster` export runs as the postgres user with its own policy,")
p("  state folder and NAS folder; pg_basebackup, drp and pgBackRest all reach the server through its")
p("  Unix socket; every physical restore goes to a fresh folder, removed after.\n")

p("## Raw figures\n")
p("Median of the rounds (every run: `bench/last-run.tsv`: name, wall, user, system seconds, peak RSS KiB,")
p("server CPU seconds). *server CPU* is what the PostgreSQL server's backends spent during the run.\n")
p("| run | wall s (median) | wall s (best) | user s | sys s | server CPU s | peak RSS MiB |")
p("| --- | --- | --- | --- | --- | --- | --- |")
for name in runs:
    rs = ok(name)
    if not rs:
        p(f"| {cell(name)} | failed: {cell(failed.get(name, ''))} | | | | | |")
        continue
    p(
        f"| {cell(name)} | {med(name):.2f} | {min(r['wall'] for r in rs):.2f} | {med(name, 'user'):.2f} | "
        f"{med(name, 'sys'):.2f} | {med(name, 'server'):.2f} | {max(r['rss'] for r in rs)/1024:.0f} |"
    )
p("")

verdicts = {}
p("## Ratios and targets\n")
p("| comparison | ratio (median) | range | target | verdict |")
p("| --- | --- | --- | --- | --- |")


def row(key, desc, xs, target=None, below=True):
    if not xs:
        p(f"| {cell(desc)} | n/a | | {target or '—'} | not measured (a run failed) |")
        return
    m = statistics.median(xs)
    verdict = "—"
    if target:
        limit = float(target.split()[1].rstrip("×"))
        met = m <= limit if below else m >= limit
        verdict = "met" if met else "MISSED"
        verdicts[key] = (m, met)
    p(f"| {cell(desc)} | {m:.2f}× | {min(xs):.2f}–{max(xs):.2f} | {target or '—'} | {verdict} |")


row("nas", "drp backup to local NAS ÷ pg_dump -Fc -Z0 to /dev/null", paired(DRP_NAS, PG_DUMP), "≤ 1.05×")
row("s3", "drp backup to S3 ÷ pg_dump -Fc -Z0 to /dev/null", paired(DRP_S3, PG_DUMP), "≤ 1.05×")
row("sftp", "drp backup to SFTP ÷ pg_dump -Fc -Z0 to /dev/null", paired(DRP_SFTP, PG_DUMP), "≤ 1.05×")
row("gz", "drp backup to local NAS ÷ pg_dump -Fc (its default gzip) to /dev/null", paired(DRP_NAS, PG_DUMP_GZ), "≤ 1.05×")
row("restore", "drp restore from local NAS ÷ pg_restore -j2 from a local file", paired(DRP_R_NAS, PG_RESTORE), "≤ 1.10×")
row("restore-s3", "drp restore from S3 ÷ pg_restore -j2 from a local file", paired(DRP_R_S3, PG_RESTORE), "≤ 1.10×")
row("restore-sftp", "drp restore from SFTP ÷ pg_restore -j2 from a local file", paired(DRP_R_SFTP, PG_RESTORE), "≤ 1.10×")
row("pipe", "drp pipeline throughput ÷ zstd -T0 -3 alone", paired(PIPE, ZSTD, invert=True), "≥ 0.90×", below=False)
row("pipe-sha", "drp pipeline throughput ÷ zstd -T0 -3 | sha256sum", paired(PIPE, ZSTD_SHA, invert=True), "≥ 0.90×", below=False)
for key, peer in [("pgzstd", PG_ZSTD), ("restic", RESTIC), ("borg", BORG), ("pgbr", PGBR)]:
    row(key, f"drp backup to local NAS ÷ {peer}", paired(DRP_NAS, peer), "≤ 1.00×")
row("restic-r", f"drp restore from local NAS ÷ {RESTIC_R}", paired(DRP_R_NAS, RESTIC_R), "≤ 1.00×")
row(None, f"drp restore from local NAS ÷ {PGBR_R}", paired(DRP_R_NAS, PGBR_R))
row("base", f"drp base backup (physical) ÷ {PG_BASE} (`--checkpoint=fast`)", paired(DRP_BASE, PG_BASE), "≤ 1.10×")
row("base-zstd", f"drp base backup (physical) ÷ {PG_BASE_ZSTD}", paired(DRP_BASE, PG_BASE_ZSTD), "≤ 1.00×")
row(None, f"drp base backup (physical) ÷ {PG_BASE_NONE}", paired(DRP_BASE, PG_BASE_NONE))
row("base-pgbr", f"drp base backup (physical) ÷ {PGBR}", paired(DRP_BASE, PGBR), "≤ 1.00×")
row("phys-r-dir", f"drp physical restore ÷ {PGBR_R} (not the same work: no replay)", paired(DRP_PR, PGBR_R), "≤ 1.10×")
row("phys-r", f"drp physical restore ÷ {PGBR_RR} (like for like)", paired(DRP_PR, PGBR_RR), "≤ 1.10×")
if "drp" in wal:
    w = wal["drp"]
    try:
        end = int(w.get("backlog", w.get("ready_end", "")))
        met = end <= 2
        verdicts["wal-backlog"] = (end, met)
        p(f"| WAL files waiting at the end of {pgb_seconds} s of pgbench, drp's `wal push` as archive_command | {end} (most during the run: {w.get('ready_max', '?')}) | | ≤ 2 files | {'met' if met else 'MISSED'} |")
    except ValueError:
        p(f"| WAL files waiting at the end of pgbench, drp's `wal push` | n/a | | ≤ 2 files | not measured (wal status failed) |")
small, big = ok(MEM_SMALL), ok(MEM_BIG) if MEM_BIG else []
if small and big:
    s_rss, b_rss = max(r["rss"] for r in small), max(r["rss"] for r in big)
    met = b_rss <= 64 * 1024 and b_rss <= s_rss * 1.25
    verdicts["rss"] = (b_rss / 1024, met)
    p(f"| peak RSS of drp-agent, 100 MB stream → {p_stream/1e9:.1f} GB stream | {s_rss/1024:.0f} → {b_rss/1024:.0f} MiB | | ≤ 64 MiB, flat | {'met' if met else 'MISSED'} |")
sh_, dr = med(SHELL), med(DRILL)
if sh_ is not None and dr is not None:
    p(f"| drill of ten trivial steps − the same commands from a shell | {(dr - sh_)*1000:.0f} ms added | | — | orchestration, preflight, heartbeat and the report stored on each of the policy's three targets (local, S3, SFTP; `settle: 0s`) |")
p("")

p("## Encryption (age, X25519 + ChaCha20-Poly1305)\n")
p(f"The same {p_stream/1e9:.1f} GB stream at the same zstd level (-3), in the same rounds, backed up and then")
p("verified once unencrypted and once encrypted to one X25519 recipient: the compressed stream is encrypted")
p("once per recipient set (not per target), streamed in 64 KiB authenticated chunks, and the encrypted verify")
p("decrypts it with `--identity` before checking the digests as the plain one does. Throughput ratio:")
p("the plain run's wall time ÷ the encrypted run's, per round (their order alternates), median of the rounds.\n")
p("| comparison | ratio (median) | range | target | verdict |")
p("| --- | --- | --- | --- | --- |")
row("enc-backup", "backup of the stream: encrypted ÷ plain throughput", paired(SEALED, PIPE, invert=True), "≥ 0.95×", below=False)
row("enc-verify", "verify --latest of its point (decrypting): encrypted ÷ plain throughput", paired(VERIFY_SEALED, VERIFY, invert=True), "≥ 0.95×", below=False)
p("")

p("## CPU: what the machine had to do\n")
p(f"Wall time cannot be below the CPU work divided by the {cores} cores. For the PostgreSQL runs the")
p("server's backends work too (they run `COPY` and format every row), on the same cores.\n")
p("| run | client CPU s | server CPU s | total CPU s | bound: total ÷ cores, s | wall s |")
p("| --- | --- | --- | --- | --- | --- |")
for name in [PG_DUMP, PG_ZSTD, DRP_NAS, DRP_S3, DRP_SFTP, RESTIC, BORG, PG_BASE, PG_BASE_ZSTD, PG_BASE_NONE, DRP_BASE, PGBR, ZSTD, ZSTD_SHA, PIPE, SEALED, VERIFY, VERIFY_SEALED]:
    if ok(name):
        c, s = med(name, "cpu"), med(name, "server")
        p(f"| {cell(name)} | {c:.2f} | {s:.2f} | {c+s:.2f} | {(c+s)/cores:.2f} | {med(name):.2f} |")
p("")

if wal:
    p("## WAL archiving under a write load\n")
    p(f"`pgbench -c 4 -j 2 -T {pgb_seconds}` (TPC-B-like, scale {pgb_scale}) on the same server, once with drp's")
    p("`wal push` as `archive_command` (`archive_timeout = 60`), once with PostgreSQL's documented")
    p("`test ! -f DIR/%f && cp %p DIR/%f` (which does not fsync; drp writes each file durably, compressed,")
    p("with its digest). Both run through the same small wrapper that logs each call's wall time as the")
    p("archiver waits for it; *waiting* counts the `.ready` files in `pg_wal/archive_status`, sampled every")
    p("second during the run. drp's own figures (from `drp-agent --json wal status`, taken the moment")
    p("pgbench ends) time a push from reading the file to every target holding it. When several files")
    p("wait, drp's `wal push` also pushes up to three more ahead of PostgreSQL's requests (`wal_parallel: 4`)")
    p("and the calls for those return at once; " + (
        "here no more than one file ever waited, so every call pushed its own file.\n"
        if all(w.get("ready_max", "0") in ("0", "1") for w in wal.values())
        else "here files did wait at times (see *most waiting*).\n"))
    p("| archive_command | pgbench tps | WAL written MB | files archived | calls | call p50 ms | call p99 ms | drp push p50 / p99 ms | waiting at end | most waiting | drained after s |")
    p("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")

    def ms(v):
        try:
            return f"{float(v) * 1000:.0f}"
        except (TypeError, ValueError):
            return "—"

    for archiver, w in wal.items():
        label = "drp-agent wal push" if archiver == "drp" else "cp (documented example)" if archiver == "cp" else archiver
        own = f"{ms(w.get('push_p50'))} / {ms(w.get('push_p99'))}" if archiver == "drp" else "—"
        try:
            walmb = f"{int(w.get('wal_bytes', 0)) / 1e6:.0f}"
        except ValueError:
            walmb = "?"
        end = w.get("ready_end", "?")
        if archiver == "drp" and "backlog" in w:
            end = f"{w['backlog']} (drp) / {end} (.ready)"
        p(f"| {label} | {float(w.get('tps') or 0):.0f} | {walmb} | {w.get('archived', '?')} | {w.get('calls', '?')} | {ms(w.get('call_p50'))} | {ms(w.get('call_p99'))} | {own} | {end} | {w.get('ready_max', '?')} | {w.get('drained_s') or 'not within 120'} |")
    failed_calls = {a: w.get("failed", "0") for a, w in wal.items() if w.get("failed", "0") not in ("0", "")}
    if failed_calls:
        p("")
        p("Failed `archive_command` calls (PostgreSQL retries them): " + "; ".join(f"{a}: {n}" for a, n in failed_calls.items()) + ".")
    p("")

p("## Restore throughput and the 5-minute RTO\n")
db_bytes = int(info.get("db_bytes") or 0)
phys_bytes = int(info.get("phys_bytes") or 0)
for name in [DRP_R_NAS, DRP_R_S3, DRP_R_SFTP]:
    w = med(name)
    if w:
        mbps = dump_bytes / 1e6 / w
        disk = f" ({db_bytes / 1e6 / w:.0f} MB/s, **{db_bytes / 1e6 / w * 300 / 1000:.1f} GB**, of database on disk)" if db_bytes else ""
        p(f"- {name}: {mbps:.0f} MB/s of dump, so about **{mbps*300/1000:.1f} GB** of `pg_dump` restores inside a 5-minute RTO on this machine{disk} (restore alone; detection and restart come on top).")
for name in [DRP_PR, PGBR_RR]:
    w = med(name)
    if w and phys_bytes:
        mbps = phys_bytes / 1e6 / w
        p(f"- {name}: {mbps:.0f} MB/s of data directory ({phys_bytes / 1e6:.0f} MB restored in {w:.1f} s), so about **{mbps*300/1000:.1f} GB**")
        p("  of cluster inside a 5-minute RTO, counting the WAL replayed here (the few segments written since the base")
        p("  backup); a day of WAL since the last base backup adds its replay time on top.")
p(f"- Every restore here reads its repository from the page cache and writes into it ({mem} GiB of RAM, a")
p(f"  {phys_bytes / 1e9:.1f} GB cluster); past the machine's memory, the disks' speed sets these figures, and the lines above")
p("  are upper bounds.")
p("")

if profile and os.path.exists(profile):
    lines = open(profile).read().splitlines()
    syms, threads = [], []
    target = syms
    for ln in lines:
        if ln.startswith("--- threads"):
            target = threads
            continue
        parts = ln.split()
        if parts and parts[0].endswith("%"):
            target.append((float(parts[0].rstrip("%")), " ".join(parts[1:])))
    if syms:
        groups = OrderedDict((k, 0.0) for k in ["zstd compression", "SHA-256", "kernel (reads, writes, scheduling)", "memory copies", "other"])
        for pct, sym in syms:
            s = sym.replace("[.] ", "").replace("[k] ", "")
            if sym.startswith("[k]"):
                groups["kernel (reads, writes, scheduling)"] += pct
            elif s.startswith(("ZSTD", "HUF_", "FSE_", "HIST_", "ZSTDMT")):
                groups["zstd compression"] += pct
            elif "sha2" in s or "sha256" in s:
                groups["SHA-256"] += pct
            elif "memmove" in s or "memcpy" in s or "memset" in s:
                groups["memory copies"] += pct
            else:
                groups["other"] += pct
        p("## Profile of the pipeline\n")
        p("`perf record -F 999` of one `drp-agent backup` of the stream as a directory tree, in this run")
        p("(`bench/last-profile.txt`). Share of the CPU samples:\n")
        p("| where | share |")
        p("| --- | --- |")
        for k, v in groups.items():
            p(f"| {k} | {v:.1f} % |")
        if threads:
            named = OrderedDict()
            for pct, t in threads:
                label = t.split(":", 1)[-1] if ":" in t else t
                named[label] = named.get(label, 0.0) + pct
            p("")
            p("By thread: " + "; ".join(f"`{k}` {v:.1f} %" for k, v in named.items() if v >= 0.5) + ".")
            p("`drp-compress` includes zstd's worker threads, which take their creator's name.")
        p("")

history = os.path.join(HERE, "history.md")
if os.path.exists(history):
    p(open(history).read().rstrip() + "\n")

# The analysis, with this run's figures.
p("## Where the time goes, and what is not met\n")
if ok(DRP_NAS) and ok(PG_DUMP) and ok(PG_ZSTD):
    pd_c, pd_s, pd_w = med(PG_DUMP, "cpu"), med(PG_DUMP, "server"), med(PG_DUMP)
    d_c, d_s, d_w = med(DRP_NAS, "cpu"), med(DRP_NAS, "server"), med(DRP_NAS)
    pz_c, pz_s, pz_w = med(PG_ZSTD, "cpu"), med(PG_ZSTD, "server"), med(PG_ZSTD)
    total = d_c + d_s
    bound = total / cores
    need = total / (cores * 1.05 * pd_w)
    p(f"- **Backup vs `pg_dump` alone** ({verdicts.get('nas', (0,))[0]:.2f}×). `pg_dump -Z0` to /dev/null is bound by the server's single")
    p(f"  backend: it works {pd_s:.2f} CPU-s in {pd_w:.2f} s, and the client {pd_c:.2f}. A backup also compresses: drp-agent with")
    p(f"  `pg_dump` spends {d_c:.2f} CPU-s and the server {d_s:.2f}, {total:.2f} CPU-s that fill both cores for {bound:.2f} s even if")
    p(f"  nothing ever waited ({bound / pd_w:.2f}× `pg_dump` alone). drp keeps the {cores} cores {total / (cores * d_w):.0%} busy over its")
    p(f"  {d_w:.2f} s; `pg_dump | zstd -T0` into a file, the same compression without the digests, keeps them")
    p(f"  {(pz_c + pz_s) / (cores * pz_w):.0%} busy and takes {pz_w:.2f} s, so drp takes {verdicts.get('pgzstd', (0,))[0]:.2f}× its time. Meeting 1.05× would need the")
    p(f"  cores {need:.0%} busy from the first byte to the last, with the database server and the compressor")
    pz_ratio = verdicts.get('pgzstd', (0,))[0]
    same = "already as fast as `pg_dump | zstd`" if pz_ratio <= 1.02 else f"within {pz_ratio:.2f}× of `pg_dump | zstd` (whose runs vary as much from round to round)"
    p(f"  sharing them. The pipeline is {same}, so the plan is not in it: measure")
    p("  again where the database has cores of its own (4 cores, or the server on another host), where")
    p("  compression stops competing with the producer; and offer `pg_dump -j` (directory format, one")
    p("  backend per table) for databases whose size is spread over several large tables.")
    if ok(DRP_S3):
        p(f"  To S3 ({verdicts.get('s3', (0,))[0]:.2f}×) and SFTP ({verdicts.get('sftp', (0,))[0]:.2f}×) the server (Garage, OpenSSH's `sshd` with its")
        p("  encryption) runs on the same two cores and takes its share of them; its CPU is not in these figures.")
if ok(PIPE) and ok(ZSTD):
    z_c, d_c, z_w, d_w = med(ZSTD, "cpu"), med(PIPE, "cpu"), med(ZSTD), med(PIPE)
    hashed = p_stream * (1 + p_zstd / p_dump)
    sha = hashed / 1.7e9
    p(f"- **Pipeline vs `zstd -T0` alone** ({verdicts.get('pipe', (0,))[0]:.2f}×). drp spends {d_c:.2f} CPU-s against zstd's {z_c:.2f}, {d_c - z_c:.2f} more.")
    p("  The two SHA-256 digests every point carries, of the raw and of the stored stream, account for it:")
    p(f"  {hashed / 1e9:.1f} GB at the SHA extensions' speed (about 1.7 GB/s here) is about {sha:.2f} CPU-s. zstd -3 runs only about")
    p("  eight times slower than SHA-256 per core, so the digests are not negligible next to it: with both")
    p(f"  cores busy all the time, drp could reach {z_w / ((z_c + sha) / cores):.2f}× zstd alone at best. It keeps them")
    p(f"  {d_c / (cores * d_w):.0%} busy against zstd's {z_c / (cores * z_w):.0%}; against `zstd | sha256sum`, which hashes one")
    p(f"  stream, drp is {verdicts.get('pipe-sha', (0,))[0]:.2f}× as fast. Hashing runs on the thread that feeds zstd (threads of their")
    p("  own measure no better, above). Plan: none that keeps both SHA-256 digests; the few points of utilization")
    p("  left (the archiver thread taking turns with zstd's workers) are worth a few hundredths at most.")
if ok(SEALED) and ok(PIPE):
    s_c, d_c, s_w, d_w = med(SEALED, "cpu"), med(PIPE, "cpu"), med(SEALED), med(PIPE)
    stored = p_stream * p_zstd / p_dump
    line = (f"- **Encryption** (backup {verdicts.get('enc-backup', (0,))[0]:.2f}× the plain throughput"
            + (f", verify {verdicts['enc-verify'][0]:.2f}×" if "enc-verify" in verdicts else "") + ").")
    p(line + f" The encrypted backup spends {s_c:.2f} CPU-s against {d_c:.2f}, {s_c - d_c:+.2f},")
    p(f"  for about {stored / 1e9:.2f} GB of compressed stream encrypted (in {s_w:.2f} s against {d_w:.2f} s of wall time).")
    if ok(VERIFY_SEALED) and ok(VERIFY):
        vs_c, v_c = med(VERIFY_SEALED, "cpu"), med(VERIFY, "cpu")
        p(f"  Its verify, decrypting, spends {vs_c:.2f} CPU-s against {v_c:.2f} ({vs_c - v_c:+.2f}), in {med(VERIFY_SEALED):.2f} s against {med(VERIFY):.2f} s.")
        p(f"  Both verifies keep the two cores busy ({v_c / med(VERIFY):.1f} and {vs_c / med(VERIFY_SEALED):.1f} CPU-s per second of wall time):")
        p("  decompression, each digest and decryption run on threads of their own (decrypting")
        p("  on the decompressing thread instead measures 0.75× on this machine), so the decryption's CPU costs wall time")
        p("  as on one core. With a core free for it the gap closes. The plaintext is read straight into the")
        p("  chunks zstd reads; what is left is age's own copy of each 64 KiB chunk out of its buffer, and the")
        p("  cipher itself.")
if ok(DRP_R_NAS) and ok(PG_RESTORE):
    gap = med(DRP_R_NAS) - med(PG_RESTORE)
    p(f"- **Restore vs `pg_restore`** ({verdicts.get('restore', (0,))[0]:.2f}×). drp receives the point, decompresses it and checks both")
    p("  digests *before* touching the database (a restore applies nothing it has not verified), so the dump is staged in a file that")
    p("  `pg_restore -j2` then reads (parallel restore needs a seekable file); after that the two do the same")
    p(f"  work. The difference, {gap:.1f} s here, is the staging: decompression, both digests and the file write")
    p("  already run on separate threads, so what is left is zstd decompressing the whole point on one core.")
    p("  `drp-agent restore --json` reports the staging as the `seconds` of the transfer: 1.4 to 3.1 s for")
    p("  this dump in a separate check on this machine, with the staging file on disk or")
    p("  on tmpfs alike (the file is not the cost). From S3 and SFTP the download adds to it, and their")
    p("  servers run on the same two cores. Plan: write the stored stream as independent zstd frames (say every 32 MiB,")
    p("  their offsets in the manifest) so a restore decompresses them on every core; that is a new")
    p("  repository format version, kept readable beside version 1. Restoring from a pipe would be faster")
    p("  still and would load unverified data; drp does not do it.")
if ok(PGBR) and ok(DRP_NAS):
    b_c, b_s = med(PGBR, "cpu"), med(PGBR, "server")
    d_c, d_s = med(DRP_NAS, "cpu"), med(DRP_NAS, "server")
    p(f"- **pgBackRest does different work** (drp takes {verdicts.get('pgbr', (0,))[0]:.2f}× its backup time). It copies the data directory's")
    p(f"  files: a physical backup that needs no `COPY` from the server ({b_c + b_s:.2f} CPU-s in all, against {d_c + d_s:.2f} for")
    p("  drp's logical dump, of which the server's backend does a good part), restorable only into the same")
    p("  PostgreSQL major version and only after replaying WAL (the physical pairs below compare drp's")
    p("  physical mode with it). A logical dump is portable across versions and restorable table by")
    p(f"  table; drp makes one in {verdicts.get('pgzstd', (0,))[0]:.2f}× the time of `pg_dump | zstd` (see the first point).")
if ok(DRP_BASE) and ok(PG_BASE):
    d_c, d_s, d_w = med(DRP_BASE, "cpu"), med(DRP_BASE, "server"), med(DRP_BASE)
    f_w = med(PG_BASE)
    gb = phys_bytes / 1e9 if phys_bytes else 0
    p(f"- **Physical base backup vs `pg_basebackup` to /dev/null** ({verdicts.get('base', (0,))[0]:.2f}×). `pg_basebackup -X fetch` to /dev/null")
    p(f"  copies the data directory's files out of the page cache and compresses nothing: {f_w:.2f} s for {gb:.1f} GB, the")
    p(f"  server's walsender doing most of it. drp stores the same tar compressed (zstd -3) with its two digests:")
    p(f"  {d_c:.2f} CPU-s, and {d_s:.2f} for the server, {(d_c + d_s) / cores:.2f} s on {cores} cores even if nothing ever waited.")
    if ok(PG_BASE_ZSTD):
        p(f"  `pg_basebackup | zstd -T0 -3 > file`, the same compression without the digests, takes {med(PG_BASE_ZSTD):.2f} s: drp")
        p(f"  takes {verdicts.get('base-zstd', (0,))[0]:.2f}× its time.")
    if ok(PG_BASE_NONE):
        p(f"  drp's backup also waits (it is taken with `-X none`: its WAL is in the archive) until the server sees the")
        p("  last segment archived, and PostgreSQL checks that once a second: `pg_basebackup -X none` to /dev/null")
        p(f"  takes {med(PG_BASE_NONE) - f_w:.2f} s more than `-X fetch`.")
    if ok(PG_BASE_ZSTD) and ok(PG_BASE_NONE):
        z_c, z_s = med(PG_BASE_ZSTD, "cpu"), med(PG_BASE_ZSTD, "server")
        gap = d_w - med(PG_BASE_ZSTD)
        extra = (d_c + d_s) - (z_c + z_s)
        p(f"  Of the {gap:.2f} s between drp and `pg_basebackup | zstd`, that wait is about {med(PG_BASE_NONE) - f_w:.2f} s, and drp's")
        rest = gap - (med(PG_BASE_NONE) - f_w) - extra / cores
        p(f"  {extra:.2f} CPU-s more (the two SHA-256 digests, mostly) about {extra / cores:.2f} s on {cores} cores; the rest, about {rest:.2f} s,")
        p(f"  is drp keeping the cores less busy ({(d_c + d_s) / (cores * d_w):.0%} over its run, the wait included, against {(z_c + z_s) / (cores * med(PG_BASE_ZSTD)):.0%}).")
    p("  The 1.10× target, against a copy that stores nothing, is out of reach for any tool that stores the")
    p("  backup compressed and waits for its WAL to be archived; pgBackRest, which does both, takes")
    p(f"  {med(PGBR) if ok(PGBR) else float('nan'):.2f} s, and drp {verdicts.get('base-pgbr', (0,))[0]:.2f}× its time. Plan: none in the pipeline for this ratio; where")
    p("  storage is cheap and CPU is not, a cluster export's `compression: {level: 1}` is the lever to")
    p("  measure next.")
if ok(DRP_PR) and ok(PGBR_RR):
    stage, total = info.get("phys_stage_s"), info.get("phys_total_s")
    v = None
    p(f"- **Physical restore vs pgBackRest** ({verdicts.get('phys-r', (0,))[0]:.2f}× like for like; {verdicts.get('phys-r-dir', (0,))[0]:.2f}× against its data-directory")
    p("  copy alone). drp's figure is the whole restore: the base backup received, decompressed and unpacked,")
    p("  both digests checked, `pg_verifybackup`, a private PostgreSQL server (socket only) replaying drp's")
    p("  archive from that backup to its end, promoted, stopped cleanly (fast shutdown, its checkpoint), the")
    p("  directory moved in place. pgBackRest's *data directory only* figure stops after its copy: PostgreSQL")
    p("  has replayed nothing, not even to consistency, so it is not the same work. The like-for-like figure")
    p("  adds to it what drp's private server does: PostgreSQL started on the restored directory (socket only,")
    p("  no archiving), replaying pgBackRest's own archive through the `restore_command` pgBackRest wrote, until")
    p("  it promotes, then a fast shutdown; both end with a stopped, consistent directory that holds every")
    p("  archived change (a few segments here, written since the backup).")
    if stage and total:
        p(f"  In one more drp restore after the rounds, {float(stage):.1f} s of its {float(total):.1f} s went to receiving, decompressing and")
        p("  unpacking the stream and checking its digests; the rest to `pg_verifybackup`, which reads every file")
        v = info.get("verify_s")
    p(f"  again ({float(v):.1f} s for this cluster on a fresh copy, timed alone after the rounds), the replay and the swap." if v else
      "  again, the replay and the swap.")
    p("  Order matters here: the first restore in a row runs slower than the next ones (in a check by hand")
    p("  beside a run: drp 5.0 s then 4.3 s, pgBackRest's copy 4.6 s then 2.9 s), so each round runs drp's restore and then")
    p("  pgBackRest's like-for-like one as the first of their kind; pgBackRest's data-directory-only restore")
    p("  comes second, which flatters it.")
    p("  pgBackRest restores with two processes, decompressing each file on its own, and checks each file as")
    p("  it writes it. Plan: the independent zstd frames planned for logical restores (decompression on every")
    p("  core), and checking the manifest's per-file checksums while unpacking, instead of a second read")
    p("  of the whole directory.")
if "drp" in wal:
    w, c = wal["drp"], wal.get("cp", {})
    try:
        nfiles = int(w["archived"]) + int(w["ready_end"])
        rate = float(pgb_seconds) / max(nfiles, 1)
        p50 = float(w["call_p50"])
        p(f"- **WAL archiving under pgbench.** pgbench writes {int(w['wal_bytes']) / 1e6:.0f} MB of WAL in {pgb_seconds} s, a segment every {rate:.1f} s;")
        p(f"  drp's `wal push` takes {p50 * 1000:.0f} ms per call at the median ({float(w['call_p99']) * 1000:.0f} ms p99) as the archiver waits for it,")
        if c.get("call_p50"):
            p(f"  `cp` {float(c['call_p50']) * 1000:.0f} ms. drp's call starts the agent, compresses the file, hashes it, writes it durably and")
            p("  records the push; `cp` copies into the page cache.")
        most, end = w.get("ready_max", "?"), w.get("backlog", w.get("ready_end"))
        if str(most) == str(end):
            p(f"  The backlog stays at {end} file(s) throughout and at the end (target met): at that")
        else:
            p(f"  The backlog peaks at {most} file(s) and is {end} when pgbench ends (target met): at that")
        p(f"  latency one archiver alone keeps up with about {16.8 / p50:.0f} MB/s of WAL, {16.8 / p50 / (int(w['wal_bytes']) / 1e6 / float(pgb_seconds)):.0f}× this load. pgbench runs")
        if c.get("tps"):
            p(f"  {float(w['tps']):.0f} tps with drp archiving and {float(c['tps']):.0f} with `cp` (one run each, so within the noise of this shared")
            p("  machine; drp's compression does take CPU from the database on two cores).")
    except (KeyError, ValueError):
        p("- WAL archiving under pgbench: incomplete figures (see the table above).")
p("- restic's `--stdin` and borg read the same dump as drp; both chunk it and deduplicate, which costs")
p("  CPU on a first backup and saves it on later ones.")
p("")
# The sections of the other scripts (runs of their own): bench/fleet.sh, bench/build.sh, bench/failover.sh,
# bench/catalogue.sh (also run by run.sh).
for section in ("bench/fleet.md", "bench/build.md", "bench/failover.md", "bench/catalogue.md"):
    try:
        with open(section) as f:
            p(f.read().rstrip("\n"))
            p("")
    except FileNotFoundError:
        pass
print("\n".join(out))
