#!/usr/bin/env bash
# io_uring activity of a running Flumen broker, from the kernel's tracepoints.
set -euo pipefail

SCRIPT_NAME=uring-trace.sh
# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

usage() {
    cat <<'EOF'
Usage: perf/uring-trace.sh [OPTIONS]

Two phases, one after the other:
 1. count: perf stat --per-thread -p <pid> -e io_uring:<every tracepoint this
    kernel has>,syscalls:sys_enter_io_uring_enter for --seconds; table of
    rates per thread (submissions, completions, punts to io-wq, poll arms,
    task-work adds, waits for completions, io_uring_enter calls).
 2. sample: perf record -a -e io_uring:... for --record-seconds, then
    perf script piped into lib/uring-summary.awk, which follows each request
    of the broker's rings from submission to completion and reports
    submissions per opcode, the share punted to io-wq worker threads
    (io_uring_queue_async_work) or parked on a poll (io_uring_poll_arm) and on
    what (socket, segment file, eventfd, from /proc/<pid>/fd), submit-to-
    complete latency per opcode/target/path, error results, where the events
    ran, and what was still in flight when the window closed.
The tracepoints are detected on the running kernel (perf list 'io_uring:*');
older kernels (< 5.19 or so) have io_uring_submit_sqe instead of
io_uring_submit_req and numeric opcodes; both work.

Options:
  --pid PID             Broker to trace. Default: pgrep -o -x flumen, else
                        pgrep -o -f 'flumen serve'.
  --seconds N           Counting window (phase 1). Default 10.
  --record-seconds N    Event sample window (phase 2). Default 3; 0 skips
                        phase 2. Under load the broker's rings fire ~150k
                        events/s: 3 s is ~50 MB of perf.data.
  --events LIST         Comma-separated io_uring tracepoints to use instead of
                        all available, e.g. submit_req,complete,queue_async_work
                        (io_uring:io_uring_complete and io_uring_complete work
                        too). The summary needs submit_req (or submit_sqe) and
                        complete to follow requests.
  --keep-script         Keep the full perf script text (events.txt); by
                        default only its first 2000 lines (events.head.txt).
  --out DIR             Results directory. Default:
                        perf/results/uring-trace-<UTC timestamp>/
  -h, --help            This help.

Writes: counts.txt (phase 1 table), perf-stat.csv, summary.txt (phase 2),
latency.txt, uring.data, fds.txt, events.head.txt, threads.tsv, meta.txt.
Needs root (or kernel.perf_event_paranoid = -1 and a readable tracefs):
phase 2 records on all CPUs, because completions and wakeups of the broker's
requests also happen in other threads (io-wq workers, the client that sent
the bytes, softirq).
EOF
}

PID="" SECONDS_WIN=10 REC_SECONDS=3 EVENTS_OPT="" KEEP_SCRIPT=0 OUTDIR=""
ORIG_ARGS="$0 $*"
while [[ $# -gt 0 ]]; do
    case $1 in
        --pid) need_value "$1" $#; PID=$2; shift 2 ;;
        --seconds) need_value "$1" $#; SECONDS_WIN=$2; shift 2 ;;
        --record-seconds) need_value "$1" $#; REC_SECONDS=$2; shift 2 ;;
        --events) need_value "$1" $#; EVENTS_OPT=$2; shift 2 ;;
        --keep-script) KEEP_SCRIPT=1; shift ;;
        --out) need_value "$1" $#; OUTDIR=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done
check_seconds "$SECONDS_WIN"
check_seconds "$REC_SECONDS"

require_perf
find_broker_pid "$PID"
ensure_tracefs

# Which io_uring tracepoints does this kernel have?
mapfile -t avail < <(perf list 'io_uring:*' 2>/dev/null | awk '/Tracepoint event/ {sub(/^io_uring:/, "", $1); print $1}')
if [[ ${#avail[@]} -eq 0 ]]; then
    for d in "$TRACEFS"/events/io_uring/io_uring_*; do [[ -d $d ]] && avail+=("$(basename "$d")"); done
fi
[[ ${#avail[@]} -gt 0 ]] || die "this kernel has no io_uring tracepoints (CONFIG_IO_URING off, or tracefs unreadable)"
if [[ -n $EVENTS_OPT ]]; then
    IFS=, read -r -a want <<<"$EVENTS_OPT"
    chosen=()
    for e in "${want[@]}"; do
        e=${e#io_uring:}
        [[ $e == io_uring_* ]] || e="io_uring_$e"
        if printf '%s\n' "${avail[@]}" | grep -qx "$e"; then chosen+=("$e"); else log "skipping $e: not on this kernel"; fi
    done
    [[ ${#chosen[@]} -gt 0 ]] || die "none of --events exist here; available: ${avail[*]}"
else
    chosen=("${avail[@]}")
fi
ev_list=$(printf 'io_uring:%s,' "${chosen[@]}"); ev_list=${ev_list%,}
stat_list=$ev_list
tracepoint_exists syscalls:sys_enter_io_uring_enter && stat_list="$stat_list,syscalls:sys_enter_io_uring_enter"

probe_attach "$BROKER_PID" "io_uring:${chosen[0]}"
make_outdir uring-trace "$OUTDIR"
write_meta "$OUT/meta.txt" "$BROKER_PID" "$ORIG_ARGS"
write_threads "$BROKER_PID" "$OUT/threads.tsv"
{
    echo "available io_uring tracepoints: ${avail[*]}"
    echo "used: $ev_list"
} >>"$OUT/meta.txt"

# ---- phase 1: counts per thread --------------------------------------------
log "phase 1: counting io_uring events of pid $BROKER_PID for ${SECONDS_WIN}s -> $OUT"
t0=$(date +%s.%N)
if ! perf stat --per-thread -p "$BROKER_PID" -e "$stat_list" -x, -o "$OUT/perf-stat.csv" \
        -- sleep "$SECONDS_WIN" 2>"$OUT/stat.log"; then
    cat "$OUT/stat.log" >&2
    die "perf stat failed (log in $OUT/stat.log)"
fi
t1=$(date +%s.%N)
awk -F, -v wall="$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')" '
    /^#/ || NF < 4 { next }
    {
        if (!match($1, /-[0-9]+$/)) next
        tid = substr($1, RSTART + 1); c = substr($1, 1, RSTART - 1)
        e = $4; sub(/^io_uring:io_uring_/, "", e); sub(/^syscalls:sys_enter_/, "", e)
        v = ($2 ~ /^[0-9.]+$/) ? $2 : 0
        val[tid, e] += v; comm[tid] = c; tot[e] += v; if (v > 0) seen[tid] = 1
    }
    END {
        split("submit_req submit_sqe complete queue_async_work poll_arm task_add task_work_run cqring_wait io_uring_enter fail_link req_failed cqe_overflow short_write", cols, " ")
        printf "Window %.2f s, events per second per thread (threads with no io_uring events left out).\n", wall
        printf "%-7s %-16s", "TID", "THREAD"
        for (i = 1; i in cols; i++) if (cols[i] in tot) printf " %11s", substr(cols[i], 1, 11)
        printf "\n"
        for (t in seen) {
            printf "%-7s %-16s", t, comm[t]
            for (i = 1; i in cols; i++) if (cols[i] in tot) printf " %11.0f", val[t, cols[i]] / wall
            printf "\n"
        }
        printf "%-24s", "TOTAL"
        for (i = 1; i in cols; i++) if (cols[i] in tot) printf " %11.0f", tot[cols[i]] / wall
        printf "\n\n"
        printf "submit = SQEs submitted; complete = CQEs posted; queue_async_work = punted to an io-wq\n"
        printf "worker (blocking work); poll_arm = op waited for fd readiness; task_add/task_work_run =\n"
        printf "completion work queued to/run by the ring owner; cqring_wait = owner blocked for CQEs;\n"
        printf "io_uring_enter = the system call. Counted only in the broker threads (perf stat -p):\n"
        printf "task_add fired from other threads (e.g. a client send waking a poll) is not in this table.\n"
        if (tot["submit_req"] + tot["submit_sqe"] > 0 && tot["io_uring_enter"] > 0)
            printf "\nSQEs per io_uring_enter: %.2f (batching: higher is cheaper)\n", (tot["submit_req"] + tot["submit_sqe"]) / tot["io_uring_enter"]
        if (tot["submit_req"] + tot["submit_sqe"] > 0)
            printf "punted to io-wq: %.2f%% of submissions; poll-armed: %.2f%%\n", 100 * tot["queue_async_work"] / (tot["submit_req"] + tot["submit_sqe"]), 100 * tot["poll_arm"] / (tot["submit_req"] + tot["submit_sqe"])
    }' "$OUT/perf-stat.csv" >"$OUT/counts.txt"
# sort the per-thread rows by tid, keeping header and footer in place
awk 'NR <= 2 {print; next} /^[0-9]/ {print | "sort -n"; next} {close("sort -n"); print}' "$OUT/counts.txt" >"$OUT/counts.tmp" &&
    mv "$OUT/counts.tmp" "$OUT/counts.txt"
cat "$OUT/counts.txt"

# ---- phase 2: sample of events, followed request by request ---------------
if awk -v s="$REC_SECONDS" 'BEGIN {exit !(s > 0)}'; then
    log "phase 2: recording io_uring events on all CPUs for ${REC_SECONDS}s"
    # What the file descriptors are, to name the targets of the requests:
    # sampled every 50 ms while recording, since segment/index files are
    # opened and closed all the time and their numbers reused.
    (
        while kill -0 "$BROKER_PID" 2>/dev/null; do
            find /proc/"$BROKER_PID"/fd -mindepth 1 -maxdepth 1 -printf '%f\t%l\n' 2>/dev/null || true
            sleep 0.05
        done
    ) >"$OUT/fds.samples" &
    fd_sampler=$!
    trap 'kill "$fd_sampler" 2>/dev/null || true' EXIT
    if ! perf record -a -e "$ev_list" -o "$OUT/uring.data" -- sleep "$REC_SECONDS" 2>"$OUT/record.log"; then
        cat "$OUT/record.log" >&2
        die "perf record failed (log in $OUT/record.log)"
    fi
    kill "$fd_sampler" 2>/dev/null || true
    wait "$fd_sampler" 2>/dev/null || true
    trap - EXIT
    grep -E 'Captured' "$OUT/record.log" >&2 || true
    check_record_log "$OUT/record.log" "$REC_SECONDS"
    { printf '#fd\ttarget (every target seen while recording)\n'; sort -u "$OUT/fds.samples" | sort -t $'\t' -k1,1n; } >"$OUT/fds.txt"
    rm -f "$OUT/fds.samples"
    script_out=/dev/null
    [[ $KEEP_SCRIPT -eq 1 ]] && script_out="$OUT/events.txt"
    perf script -i "$OUT/uring.data" -F comm,pid,tid,cpu,time,event,trace 2>"$OUT/script.log" |
        tee "$script_out" |
        tee >(first_n 2000 >"$OUT/events.head.txt") |
        awk -v pid="$BROKER_PID" -v lat="$OUT/latency.tsv" -v rings="$OUT/rings.tsv" \
            -f "$PERF_LIB/uring-summary.awk" "$OUT/fds.txt" - >"$OUT/summary.txt"
    # Latency percentiles per ring / opcode / target / path.
    touch "$OUT/latency.tsv"
    {
        echo "== Submit-to-complete latency (microseconds), broker rings =="
        echo "path: inline = completed during submission or from the ring owner's task work; poll = waited"
        echo "for fd readiness first; io-wq = punted to a worker thread. Long latencies on POLL_ADD of a"
        echo "socket or READ of an eventfd are waits for a client or for another shard, not slow I/O;"
        echo "TIMEOUT and the WRITE linked to it (no fd) are glommio's timers, cancelled and re-armed."
        printf '%-38s %-14s %-16s %-7s %8s %9s %9s %9s %10s %10s\n' RING OPCODE TARGET PATH COUNT P50 P90 P99 MAX TOTAL_MS
        sort -t $'\t' -k1,1 -k2,2 -k3,3 -k4,4 -k5,5n "$OUT/latency.tsv" |
            awk -F'\t' -v rings="$OUT/rings.tsv" '
                BEGIN { while ((getline l < rings) > 0) { split(l, a, "\t"); name[a[1]] = a[2] } }
                function flush(   p50, p90, p99) {
                    if (n == 0) return
                    p50 = v[int((n - 1) * 0.50) + 1]; p90 = v[int((n - 1) * 0.90) + 1]; p99 = v[int((n - 1) * 0.99) + 1]
                    printf "%s\t%.3f\t%-38s %-14s %-16s %-7s %8d %9.1f %9.1f %9.1f %10.1f %10.1f\n", name[r], sum, name[r], op, kind, path, n, p50, p90, p99, v[n], sum / 1000
                }
                !($1 in name) { next }
                { key = $1 FS $2 FS $3 FS $4
                  if (key != prev) { flush(); prev = key; n = 0; sum = 0; r = $1; op = $2; kind = $3; path = $4 }
                  v[++n] = $5; sum += $5 }
                END { flush() }' | sort -t $'\t' -k1,1 -k2,2nr | cut -f3-
    } >"$OUT/latency.txt"
    gzip -f "$OUT/latency.tsv"
    echo >>"$OUT/summary.txt"
    cat "$OUT/latency.txt" >>"$OUT/summary.txt"
    echo
    cat "$OUT/summary.txt"
fi
log "done: $OUT"
