#!/usr/bin/env bash
# Per-thread (per-shard) software counters of a running Flumen broker.
set -euo pipefail

SCRIPT_NAME=shard-stat.sh
# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

usage() {
    cat <<'EOF'
Usage: perf/shard-stat.sh [OPTIONS]

Counts, per thread of the broker, over one window:
  perf stat --per-thread -p <pid> -e task-clock,context-switches,
      cpu-migrations,page-faults,major-faults,raw_syscalls:sys_enter,
      syscalls:sys_enter_io_uring_enter,syscalls:sys_enter_futex,
      io_uring:io_uring_submit_req,io_uring:io_uring_queue_async_work
(tracepoints the kernel lacks are left out), plus the deltas of
/proc/<tid>/schedstat (on-CPU time, time runnable but waiting for a CPU) and
/proc/<tid>/status (voluntary / involuntary context switches), and prints a
table per thread with its name and role (shard executor, blocking pool,
io-wq worker, main).

Options:
  --pid PID        Broker to measure. Default: pgrep -o -x flumen, else
                   pgrep -o -f 'flumen serve'.
  --seconds N      Length of the window. Default 10.
  --events LIST    Extra perf events to count, comma separated (e.g.
                   syscalls:sys_enter_fdatasync,sched:sched_wakeup). They get
                   their own columns in table.txt.
  --shards-only    Only the shard executor threads in the table (all threads
                   are still in perf-stat.csv).
  --out DIR        Results directory. Default:
                   perf/results/shard-stat-<UTC timestamp>/
  -h, --help       This help.

Writes: table.txt (the tables), table.tsv (same, machine readable),
perf-stat.csv (raw perf stat -x, output), schedstat.tsv, threads.tsv,
meta.txt. Needs perf and root (or kernel.perf_event_paranoid = -1) for the
tracepoint counters.
EOF
}

PID="" SECONDS_WIN=10 EXTRA="" SHARDS_ONLY=0 OUTDIR=""
ORIG_ARGS="$0 $*"
while [[ $# -gt 0 ]]; do
    case $1 in
        --pid) need_value "$1" $#; PID=$2; shift 2 ;;
        --seconds) need_value "$1" $#; SECONDS_WIN=$2; shift 2 ;;
        --events) need_value "$1" $#; EXTRA=$2; shift 2 ;;
        --shards-only) SHARDS_ONLY=1; shift ;;
        --out) need_value "$1" $#; OUTDIR=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done
check_seconds "$SECONDS_WIN"

require_perf
find_broker_pid "$PID"
probe_attach "$BROKER_PID" task-clock
ensure_tracefs

events=(task-clock context-switches cpu-migrations page-faults major-faults)
missing=()
for tp in raw_syscalls:sys_enter syscalls:sys_enter_io_uring_enter syscalls:sys_enter_futex \
          io_uring:io_uring_submit_req io_uring:io_uring_queue_async_work; do
    if tracepoint_exists "$tp"; then events+=("$tp"); else missing+=("$tp"); fi
done
# Older kernels name the submission tracepoint io_uring_submit_sqe.
if ! tracepoint_exists io_uring:io_uring_submit_req && tracepoint_exists io_uring:io_uring_submit_sqe; then
    events+=(io_uring:io_uring_submit_sqe)
fi
extra_events=()
if [[ -n $EXTRA ]]; then
    IFS=, read -r -a extra_events <<<"$EXTRA"
    events+=("${extra_events[@]}")
fi
ev_list=$(IFS=,; echo "${events[*]}")
# One tracepoint is enough to learn whether we may use them at all.
if [[ ${#events[@]} -gt 5 ]]; then probe_attach "$BROKER_PID" "${events[5]}"; fi

make_outdir shard-stat "$OUTDIR"
write_meta "$OUT/meta.txt" "$BROKER_PID" "$ORIG_ARGS"
echo "events:        $ev_list" >>"$OUT/meta.txt"
[[ ${#missing[@]} -eq 0 ]] || echo "not on this kernel: ${missing[*]}" >>"$OUT/meta.txt"

# snapshot TAG: tid, on-cpu ns, runqueue-wait ns, timeslices, vol cs, invol cs.
snapshot() {
    local t tid
    for t in /proc/"$BROKER_PID"/task/*; do
        tid=$(basename "$t")
        read -r run wait slices <"$t/schedstat" 2>/dev/null || continue
        awk -v tid="$tid" -v r="$run" -v w="$wait" -v s="$slices" -v comm="$(cat "$t/comm" 2>/dev/null)" '
            /^voluntary_ctxt_switches/ {v = $2} /^nonvoluntary_ctxt_switches/ {n = $2}
            END {printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", tid, comm, r, w, s, v, n}' "$t/status" 2>/dev/null || true
    done
}

log "counting pid $BROKER_PID for ${SECONDS_WIN}s -> $OUT"
write_threads "$BROKER_PID" "$OUT/threads.tsv"
t0=$(date +%s.%N)
snapshot >"$OUT/schedstat.before"
if ! perf stat --per-thread -p "$BROKER_PID" -e "$ev_list" -x, -o "$OUT/perf-stat.csv" \
        -- sleep "$SECONDS_WIN" 2>"$OUT/stat.log"; then
    cat "$OUT/stat.log" >&2
    die "perf stat failed (log in $OUT/stat.log)"
fi
snapshot >"$OUT/schedstat.after"
t1=$(date +%s.%N)
# Threads born during the window: add them to threads.tsv.
write_threads "$BROKER_PID" "$OUT/threads.end.tsv"
awk -F'\t' 'NR == FNR {seen[$1] = 1; print; next} FNR > 1 && !($1 in seen)' \
    "$OUT/threads.tsv" "$OUT/threads.end.tsv" >"$OUT/threads.tmp" && mv "$OUT/threads.tmp" "$OUT/threads.tsv"
rm -f "$OUT/threads.end.tsv"

awk -F'\t' -v OFS='\t' '
    NR == FNR {b[$1] = $0; next}
    ($1 in b) {split(b[$1], x, "\t")
        print $1, $2, ($3 - x[3]) / 1e6, ($4 - x[4]) / 1e6, $5 - x[5], $6 - x[6], $7 - x[7]}' \
    "$OUT/schedstat.before" "$OUT/schedstat.after" |
    { printf 'tid\tcomm\toncpu_ms\trunq_wait_ms\ttimeslices\tvol_cs\tinvol_cs\n'; sort -n; } >"$OUT/schedstat.tsv"
rm -f "$OUT/schedstat.before" "$OUT/schedstat.after"

extra_cols=$(IFS=,; echo "${extra_events[*]:-}")
awk -F'\t' -v wall="$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')" -v shards_only="$SHARDS_ONLY" \
    -v extra="$extra_cols" -v tsv="$OUT/table.tsv" '
    function num(v) { return (v ~ /^[0-9.]+$/) ? v + 0 : 0 }
    function rate(v) { return sprintf("%.0f", v / wall) }
    # threads.tsv
    FILENAME ~ /threads.tsv$/ { if (FNR > 1) { comm[$1] = $2; role[$1] = $3; tids[$1] = 1 } next }
    FILENAME ~ /schedstat.tsv$/ { if (FNR > 1) { oncpu[$1] = $3; rqw[$1] = $4; vcs[$1] = $6; ics[$1] = $7; tids[$1] = 1; if (!($1 in comm)) comm[$1] = $2 } next }
    # perf-stat.csv: "comm-tid,value,unit,event,..."
    /^#/ || NF == 0 { next }
    {
        n = split($0, f, ",")
        thr = f[1]; i = match(thr, /-[0-9]+$/)
        if (!i) next
        tid = substr(thr, RSTART + 1); c = substr(thr, 1, RSTART - 1)
        tids[tid] = 1; if (!(tid in comm)) comm[tid] = c
        v[tid, f[4]] = num(f[2])
    }
    END {
        ne = split(extra, ex, ",")
        h1 = sprintf("%-7s %-16s %-24s %7s %9s %9s %8s %8s %6s %9s %6s", "TID", "THREAD", "ROLE",
            "CPU%", "RUNQ-WAIT", "CS/s", "VOL-CS", "INVOL-CS", "MIGR", "PGFLT/s", "MAJFLT")
        h2 = sprintf("%-7s %-16s %10s %12s %10s %10s %10s", "TID", "THREAD", "SYSCALL/s",
            "URING_ENTER/s", "FUTEX/s", "SQE/s", "PUNT/s")
        for (e = 1; e <= ne; e++) h2 = h2 sprintf(" %14s", substr(ex[e], index(ex[e], ":") + 1) "/s")
        printf "tid\tcomm\trole\tcpu_pct\trunq_wait_ms\tcs_per_s\tvol_cs\tinvol_cs\tmigrations\tpgfault_per_s\tmajfault\tsyscalls_per_s\tio_uring_enter_per_s\tfutex_per_s\tsqe_per_s\tpunt_per_s" > tsv
        for (e = 1; e <= ne; e++) printf "\t%s_per_s", ex[e] > tsv
        printf "\n" > tsv
        # sort tids numerically
        m = 0; for (t in tids) order[++m] = t + 0
        for (i = 2; i <= m; i++) { x = order[i]; j = i - 1; while (j > 0 && order[j] > x) { order[j + 1] = order[j]; j-- } order[j + 1] = x }
        print "Window: " sprintf("%.2f", wall) " s. CPU% = task-clock / window (100 = one core). RUNQ-WAIT = ms runnable"
        print "but not running (from /proc/<tid>/schedstat: CPU contention). VOL-CS = the thread blocked;"
        print "INVOL-CS = it was preempted. SQE = io_uring requests submitted; PUNT = requests handed to"
        print "io-wq worker threads (blocking work: buffered writes, fsync, openat, statx ...)."
        print ""
        print "== CPU and scheduling =="
        print h1
        for (i = 1; i <= m; i++) {
            t = order[i]; r = (t in role) ? role[t] : (comm[t] ~ /^iou-wrk-/ ? "io-wq worker (exited)" : "(exited)")
            if (shards_only && r != "shard executor") continue
            tc = v[t, "task-clock"]
            if (tc == 0 && (t in oncpu)) tc = oncpu[t]
            sq = v[t, "io_uring:io_uring_submit_req"] + v[t, "io_uring:io_uring_submit_sqe"]
            printf "%-7s %-16s %-24s %7.1f %9.1f %9s %8s %8s %6d %9s %6d\n", t, comm[t], substr(r, 1, 24),
                100 * tc / 1000 / wall, rqw[t], rate(v[t, "context-switches"]),
                (t in vcs) ? vcs[t] : "-", (t in ics) ? ics[t] : "-", v[t, "cpu-migrations"],
                rate(v[t, "page-faults"]), v[t, "major-faults"]
            line[t] = sprintf("%-7s %-16s %10s %12s %10s %10s %10s", t, comm[t],
                rate(v[t, "raw_syscalls:sys_enter"]), rate(v[t, "syscalls:sys_enter_io_uring_enter"]),
                rate(v[t, "syscalls:sys_enter_futex"]), rate(sq), rate(v[t, "io_uring:io_uring_queue_async_work"]))
            printf "%s\t%s\t%s\t%.1f\t%.1f\t%s\t%s\t%s\t%d\t%s\t%d\t%s\t%s\t%s\t%s\t%s", t, comm[t], r,
                100 * tc / 1000 / wall, rqw[t], rate(v[t, "context-switches"]),
                (t in vcs) ? vcs[t] : "", (t in ics) ? ics[t] : "", v[t, "cpu-migrations"],
                rate(v[t, "page-faults"]), v[t, "major-faults"],
                rate(v[t, "raw_syscalls:sys_enter"]), rate(v[t, "syscalls:sys_enter_io_uring_enter"]),
                rate(v[t, "syscalls:sys_enter_futex"]), rate(sq), rate(v[t, "io_uring:io_uring_queue_async_work"]) > tsv
            for (e = 1; e <= ne; e++) {
                line[t] = line[t] sprintf(" %14s", rate(v[t, ex[e]]))
                printf "\t%s", rate(v[t, ex[e]]) > tsv
            }
            printf "\n" > tsv
        }
        print ""
        print "== System calls and io_uring (per second) =="
        print h2
        for (i = 1; i <= m; i++) if (order[i] in line) print line[order[i]]
    }' "$OUT/threads.tsv" "$OUT/schedstat.tsv" "$OUT/perf-stat.csv" >"$OUT/table.txt"

cat "$OUT/table.txt"
log "done: $OUT"
