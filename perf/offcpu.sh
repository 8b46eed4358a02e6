#!/usr/bin/env bash
# Off-CPU time of a running Flumen broker: where its threads block or are
# preempted, and how long they wait for a CPU once woken. No BPF needed.
set -euo pipefail

SCRIPT_NAME=offcpu.sh
# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

usage() {
    cat <<'EOF'
Usage: perf/offcpu.sh [OPTIONS]

Two methods, run one after the other (each --seconds long):

 stacks: perf record -e sched:sched_switch --call-graph dwarf --switch-events
         -t <the broker's long-lived threads> (main, shards, blocking pools;
         io-wq workers they spawn during the window are followed, ones that
         already exist are not: attaching to threads that exit makes perf
         6.1 spin). Each context switch of a broker thread records the stack
         it left the CPU with (kernel + user), and the PERF_RECORD_SWITCH
         out/in pair how long it stayed off. lib/offcpu-fold.awk folds the
         stacks weighted by that time (microseconds) into offcpu.folded and
         inferno-flamegraph draws offcpu.svg, and offcpu.nonidle.svg without
         the idle waits (shard parked in io_cqring_wait, io-wq worker or
         blocking-pool thread with nothing to do). The leaf of each tower says why
         it left: [S sleep] (blocked), [R preempted] (runnable, CPU taken by
         another task), [D uninterruptible]. offcpu-summary.txt has, per
         thread, off-CPU time split sleep/preempted, and the top blocking
         points (state: kernel wait function <- first user frame).
 sched:  perf sched record (system-wide sched_switch/wakeup/migrate) then
         perf sched timehist -p <pid>: per thread, run time, off-CPU wait
         by the state it left in (sleep / preempted / D) and scheduling
         delay (wakeup -> running: the CPU was busy with someone else).
         Writes timehist.txt and sched-summary.txt.

Options:
  --pid PID          Broker to measure. Default: pgrep -o -x flumen, else
                     pgrep -o -f 'flumen serve'.
  --seconds N        Length of each window. Default 8.
  --mode M           stacks, sched or both (default both).
  --every N          Keep the stack of only one switch in N (perf record
                     -c N); totals stay exact, stack weights are scaled by N.
                     Default 5. A loaded 2-shard broker (with its io-wq
                     workers) switches ~15k times/s, and every stack costs
                     --stack-size bytes: --every 1 makes ~80 MB/s of
                     perf.data, --every 5 ~16 MB/s. Use 1 for rare events.
  --stack-size BYTES User stack copied per switch (dwarf). Default 8192
                     (~97% of off-CPU time had complete stacks in our runs;
                     the summary prints the share).
  --no-inline        Do not expand inlined frames in perf script (faster).
  --out DIR          Results directory. Default:
                     perf/results/offcpu-<UTC timestamp>/
  -h, --help         This help.

Limits: with --every N > 1 the blocking-point times are estimates (one
stack stands for N switches); a thread with few, long sleeps (blocking pool)
can be badly estimated, so use --every 1 when those matter. A glommio shard goes off-CPU almost only in io_uring_enter waiting
for completions (io_cqring_wait): that tower is idle time, and *what* it
waits for is in uring-trace.sh, not here. The interesting towers are
everything else: futex, page faults (filemap_fault / folio_wait), D-state
writeback, preemption by other threads on the shard's core (io-wq workers,
the load generator, other processes). The stack is the one at switch-out:
it says where the thread stopped, not who woke it. perf sched's wakeup
latency needs system-wide recording (root). perf itself adds load: each
switch costs a stack copy, so switch rates drop somewhat while recording.
Needs root (or perf_event_paranoid -1), perf, inferno for the SVG.
EOF
}

PID="" SECONDS_WIN=8 MODE=both EVERY=5 STACK=8192 INLINE=1 OUTDIR=""
ORIG_ARGS="$0 $*"
while [[ $# -gt 0 ]]; do
    case $1 in
        --pid) need_value "$1" $#; PID=$2; shift 2 ;;
        --seconds) need_value "$1" $#; SECONDS_WIN=$2; shift 2 ;;
        --mode) need_value "$1" $#; MODE=$2; shift 2 ;;
        --every) need_value "$1" $#; need_uint "$1" "$2"; EVERY=$2; shift 2 ;;
        --stack-size) need_value "$1" $#; need_uint "$1" "$2"; STACK=$2; shift 2 ;;
        --no-inline) INLINE=0; shift ;;
        --out) need_value "$1" $#; OUTDIR=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done
check_seconds "$SECONDS_WIN"
case $MODE in stacks|sched|both) ;; *) die "--mode is stacks, sched or both" ;; esac
[[ $EVERY -ge 1 ]] || die "--every must be >= 1"
[[ $STACK -le 65528 ]] || die "--stack-size is at most 65528"

require_perf
[[ $MODE == sched ]] || require_inferno
find_broker_pid "$PID"
ensure_tracefs
tracepoint_exists sched:sched_switch || die "this kernel has no sched:sched_switch tracepoint"
probe_attach "$BROKER_PID" sched:sched_switch
make_outdir offcpu "$OUTDIR"
write_meta "$OUT/meta.txt" "$BROKER_PID" "$ORIG_ARGS"
write_threads "$BROKER_PID" "$OUT/threads.tsv"
echo "mode $MODE, window ${SECONDS_WIN}s each, stacks: 1 in $EVERY switches, dwarf,$STACK" >>"$OUT/meta.txt"

# Record first (both windows back to back, while the load is still on), then
# process: perf script of the stacks takes longer than the window itself.
if [[ $MODE != sched ]]; then
    log "stacks: recording context switches of pid $BROKER_PID for ${SECONDS_WIN}s -> $OUT"
    # --no-period: with PERF_SAMPLE_PERIOD in the sample type the kernel
    # emits every tracepoint hit whatever -c says; without it, one in N.
    # -t <long-lived threads>, not -p: see stable_tids in lib/common.sh.
    if ! perf record -e sched:sched_switch -c "$EVERY" --no-period --call-graph "dwarf,$STACK" \
            --switch-events -t "$(stable_tids "$BROKER_PID")" -o "$OUT/offcpu.data" \
            -- sleep "$SECONDS_WIN" 2>"$OUT/record.log"; then
        cat "$OUT/record.log" >&2
        die "perf record failed (log in $OUT/record.log)"
    fi
    grep -E 'Captured' "$OUT/record.log" >&2 || true
    check_record_log "$OUT/record.log" "$SECONDS_WIN"
fi
if [[ $MODE != stacks ]]; then
    log "sched: perf sched record (all CPUs) for ${SECONDS_WIN}s"
    if ! perf sched record -o "$OUT/sched.data" -- sleep "$SECONDS_WIN" >"$OUT/sched-record.log" 2>&1; then
        cat "$OUT/sched-record.log" >&2
        die "perf sched record failed (log in $OUT/sched-record.log)"
    fi
    check_record_log "$OUT/sched-record.log" "$SECONDS_WIN"
fi

if [[ $MODE != sched ]]; then
    inline_flag=--inline
    [[ $INLINE -eq 1 ]] || inline_flag=--no-inline
    log "stacks: perf script ($inline_flag) and folding"
    perf script -i "$OUT/offcpu.data" --show-switch-events "$inline_flag" \
        -F comm,pid,tid,cpu,time,event,trace,ip,sym,dso 2>"$OUT/script.log" |
        awk -v every="$EVERY" -v folded="$OUT/offcpu.folded" -v points="$OUT/points.tsv" \
            -f "$PERF_LIB/offcpu-fold.awk" >"$OUT/offcpu-threads.txt"
    touch "$OUT/offcpu.folded" "$OUT/points.tsv"
    if [[ -s $OUT/offcpu.folded ]]; then
        inferno-flamegraph -q --colors io --countname us \
            --title "flumen off-CPU time, $(date -u +%Y-%m-%dT%H:%MZ)" \
            --subtitle "pid $BROKER_PID, ${SECONDS_WIN}s, weight = microseconds off-CPU; leaf = why ([S sleep] [R preempted] [D])" \
            "$OUT/offcpu.folded" >"$OUT/offcpu.svg"
        # The same without the idle waits, which dwarf everything else: a shard
        # parked in io_uring_enter (io_cqring_wait), an io-wq worker with no
        # work (io_wq_worker sleeping), a blocking-pool thread waiting on its
        # channel (flume ... SyncSignal::wait). What is left is the blocking
        # and preemption that delays work.
        grep -v -E ';io_cqring_wait;.*\[S sleep\] [0-9]+$|;io_wq_worker;schedule_timeout;schedule;__schedule;\[S sleep\] [0-9]+$|SyncSignal::wait;.*\[S sleep\] [0-9]+$' \
            "$OUT/offcpu.folded" >"$OUT/offcpu.nonidle.folded" || true
        if [[ -s $OUT/offcpu.nonidle.folded ]]; then
            inferno-flamegraph -q --colors io --countname us \
                --title "flumen off-CPU time without idle waits, $(date -u +%Y-%m-%dT%H:%MZ)" \
                --subtitle "pid $BROKER_PID, ${SECONDS_WIN}s; idle reactor / io-wq / blocking-pool waits removed" \
                "$OUT/offcpu.nonidle.folded" >"$OUT/offcpu.nonidle.svg"
        fi
    else
        log "no off-CPU stacks recorded (idle broker whose threads never switched?)"
    fi
    {
        cat "$OUT/offcpu-threads.txt"
        awk '{n = $NF; t += n; split($0, f, ";")
              if ($0 ~ /^iou-wrk/ || f[2] ~ /call_once|__rust_begin_short_backtrace|start_thread|clone3|ret_from_fork/) ok += n}
             END {if (t) printf "\nstacks reaching the thread start: %.1f%% of off-CPU time (low = raise --stack-size)\n", 100 * ok / t}' \
            "$OUT/offcpu.folded"
        echo
        echo "== Top blocking points per thread (ms off-CPU, from the sampled stacks x $EVERY) =="
        echo "Format: state: kernel wait function <- outermost libc frame <- first application frame."
        echo "io_cqring_wait <- ... io_uring_enter = the shard parked in its reactor, idle, waiting for I/O."
        echo "iou-wrk-<tid> sums all io-wq workers of that ring owner (they come and go)."
        sort -t $'\t' -k1,1 -k3,3nr "$OUT/points.tsv" |
            awk -F'\t' '{ if ($1 != prev) { print ""; print $1; prev = $1; n = 0 }
                          if (++n <= 8) printf "  %10.1f  %s\n", $3 / 1000, $2 }'
    } >"$OUT/offcpu-summary.txt"
    rm -f "$OUT/offcpu-threads.txt"
    cat "$OUT/offcpu-summary.txt"
fi

if [[ $MODE != stacks ]]; then
    perf sched timehist -i "$OUT/sched.data" -p "$BROKER_PID" --state >"$OUT/timehist.txt" 2>"$OUT/timehist.log" ||
        die "perf sched timehist failed (log in $OUT/timehist.log)"
    # Lines: time [cpu] comm[tid/pid] wait sch_delay run state.
    # A line is one stint on the CPU; its "wait" is the off-CPU time before
    # it, spent in the state the previous line of the thread left in.
    awk -v win="$SECONDS_WIN" '
        {
            if (!match($0, /\[[0-9]+\/[0-9]+\]/)) next
            id = substr($0, RSTART + 1, RLENGTH - 2); split(id, a, "/"); t = a[1]
            nm = substr($0, 1, RSTART - 1); sub(/^ *[0-9.]+ +\[[0-9]+\] +/, "", nm); name[t] = nm "/" t
            st = $NF; run = $(NF - 1); dl = $(NF - 2); wt = $(NF - 3)
            if (!(t in runs)) order[++n] = t
            runs[t]++; runt[t] += run; dsum[t] += dl; if (dl > dmax[t]) dmax[t] = dl
            if (dl > 0) nd[t]++
            ps = (t in prevst) ? substr(prevst[t], 1, 1) : "?"
            if (ps == "R") wpre[t] += wt; else if (ps == "D") wio[t] += wt; else if (ps == "?") wunk[t] += wt; else wsl[t] += wt
            prevst[t] = st
        }
        END {
            printf "Per thread over ~%s s (perf sched timehist). Times in ms.\n", win
            printf "RUN = on-CPU; SLEEP/PREEMPT/D-WAIT = off-CPU time after leaving in state S / R / D;\n"
            printf "SCHED-DELAY = wakeup to running (time a woken thread waited for a CPU): high values\n"
            printf "mean CPU contention on the shard core (other threads, load generator, neighbours).\n\n"
            printf "%-24s %7s %9s %9s %9s %8s %10s %9s %9s\n", "THREAD", "RUNS", "RUN", "SLEEP", "PREEMPT", "D-WAIT", "DELAY-SUM", "DELAY-AVG", "DELAY-MAX"
            for (i = 1; i <= n; i++) {
                t = order[i]
                printf "%-24s %7d %9.1f %9.1f %9.1f %8.1f %10.1f %9.3f %9.3f\n", substr(name[t], 1, 24), runs[t], runt[t],
                    wsl[t], wpre[t], wio[t], dsum[t], (nd[t] ? dsum[t] / nd[t] : 0), dmax[t]
            }
        }' "$OUT/timehist.txt" >"$OUT/sched-summary.txt"
    echo
    cat "$OUT/sched-summary.txt"
fi
log "done: $OUT"
