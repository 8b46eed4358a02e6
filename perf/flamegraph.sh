#!/usr/bin/env bash
# On-CPU flame graph of a running Flumen broker (perf record + inferno).
set -euo pipefail

SCRIPT_NAME=flamegraph.sh
# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

usage() {
    cat <<'EOF'
Usage: perf/flamegraph.sh [OPTIONS]

Samples the on-CPU call stacks of every thread of a running broker with
  perf record -F <freq> --call-graph dwarf -a -- sleep <seconds>
  perf script --pid <pid>            (only the broker's samples)
then writes perf.script, out.folded (inferno-collapse-perf), flamegraph.svg
(inferno-flamegraph) and top20.txt (hottest functions).

Why -a and not -p <pid>: perf record -p attaches to each thread, and with
perf 6.1 an attached thread that exits during the window (io_uring's io-wq
workers do, after a few idle seconds) makes perf spin and silently stop
sampling (seen here: 182 samples instead of ~1900). Recording all CPUs and
filtering by pid has no such failure and also covers io-wq workers. When -a
is not permitted (non-root with perf_event_paranoid > 0) or with --attach,
the script records -t <the broker's long-lived threads> instead: io-wq workers
spawned during the window are followed, ones that already existed are not.

Options:
  --pid PID          Broker to profile. Default: the oldest process named
                     'flumen' (pgrep -o -x flumen), else the oldest whose
                     command line contains 'flumen serve'.
  --seconds N        Length of the sampling window in seconds. Default 15.
  --freq HZ          Samples per second per thread (perf record -F). Default
                     199. Higher = finer graph, bigger perf.data (each sample
                     carries --stack-size bytes of stack).
  --stack-size BYTES User stack copied per sample for DWARF unwinding
                     (--call-graph dwarf,BYTES). Default 32768: flumen's async
                     stacks are deep, and with 16384 a third of the samples
                     stopped short of the thread start (they show up as
                     towers rooted at a glommio/flumen frame). top20.txt
                     reports the share of complete stacks; raise to 65528
                     (the maximum) if it is below ~98%. Cost: ~7 MB/s of
                     perf.data per busy core at 199 Hz.
  --event EV         Sampling event. Default: cycles when the CPU has hardware
                     counters, else cpu-clock (VMs). With cpu-clock the folded
                     weights are nanoseconds of CPU time.
  --attach           Record only the broker's threads (perf record -t <main,
                     shard and blocking-pool tids>) instead of all CPUs
                     filtered by pid. Smaller perf.data on a busy machine;
                     misses io-wq workers that exist before the window.
  --per-thread       Also fold per thread (inferno-collapse-perf --tid): writes
                     out.per-thread.folded, flamegraph.per-thread.svg (one
                     tower per thread) and threads/<thread>.folded/.svg.
                     io-wq workers (iou-wrk-<owner tid>) are merged per owner.
  --no-inline        Do not expand inlined frames in perf script (faster on
                     huge recordings; inlined code is then charged to its
                     caller). Default: expand them (needs debug info).
  --title TEXT       Title of the SVG. Default: "flumen on-CPU, <date>".
  --out DIR          Results directory. Default:
                     perf/results/flamegraph-<UTC timestamp>/
  -h, --help         This help.

Needs: perf, permission to attach to the broker (root, or same user with
kernel.perf_event_paranoid <= 1 for kernel frames), inferno
(cargo install inferno --locked). Run while the broker is under load, e.g.
  flumen bench produce --bootstrap 127.0.0.1:9092 --duration 30 &
  perf/flamegraph.sh --seconds 15 --per-thread
EOF
}

PID="" SECONDS_WIN=15 FREQ=199 STACK=32768 EVENT="" PER_THREAD=0 INLINE=1 TITLE="" OUTDIR="" ATTACH=0
ORIG_ARGS="$0 $*"
while [[ $# -gt 0 ]]; do
    case $1 in
        --pid) need_value "$1" $#; PID=$2; shift 2 ;;
        --seconds) need_value "$1" $#; SECONDS_WIN=$2; shift 2 ;;
        --freq) need_value "$1" $#; need_uint "$1" "$2"; FREQ=$2; shift 2 ;;
        --stack-size) need_value "$1" $#; need_uint "$1" "$2"; STACK=$2; shift 2 ;;
        --event) need_value "$1" $#; EVENT=$2; shift 2 ;;
        --per-thread) PER_THREAD=1; shift ;;
        --attach) ATTACH=1; shift ;;
        --no-inline) INLINE=0; shift ;;
        --title) need_value "$1" $#; TITLE=$2; shift 2 ;;
        --out) need_value "$1" $#; OUTDIR=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done
check_seconds "$SECONDS_WIN"
[[ $STACK -le 65528 ]] || die "--stack-size is at most 65528"

require_perf
require_inferno
find_broker_pid "$PID"
if [[ -z $EVENT ]]; then
    if software_only; then EVENT=cpu-clock; else EVENT=cycles; fi
fi
probe_attach "$BROKER_PID" "$EVENT"
if [[ $ATTACH -eq 0 ]] && ! can_system_wide; then
    log "not allowed to record all CPUs (perf record -a); attaching to the broker's threads instead"
    ATTACH=1
fi
if [[ $ATTACH -eq 1 ]]; then
    target=(-t "$(stable_tids "$BROKER_PID")")
    filter=()
    mode="threads ${target[1]} (+ io-wq workers they spawn)"
else
    target=(-a)
    filter=(--pid "$BROKER_PID")
    mode="all CPUs, filtered to pid $BROKER_PID"
fi
make_outdir flamegraph "$OUTDIR"
write_meta "$OUT/meta.txt" "$BROKER_PID" "$ORIG_ARGS"
write_threads "$BROKER_PID" "$OUT/threads.tsv"
{
    echo "event:         $EVENT, -F $FREQ, --call-graph dwarf,$STACK, window ${SECONDS_WIN}s"
    echo "recorded:      $mode"
} >>"$OUT/meta.txt"

log "recording ${SECONDS_WIN}s, $mode ($EVENT @ ${FREQ} Hz, dwarf stacks) -> $OUT"
if ! perf record -F "$FREQ" -e "$EVENT" --call-graph "dwarf,$STACK" "${target[@]}" \
        -o "$OUT/perf.data" -- sleep "$SECONDS_WIN" 2>"$OUT/record.log"; then
    cat "$OUT/record.log" >&2
    die "perf record failed (log in $OUT/record.log)"
fi
grep -E 'Captured' "$OUT/record.log" >&2 || true
check_record_log "$OUT/record.log" "$SECONDS_WIN"

inline_flag=--inline
[[ $INLINE -eq 1 ]] || inline_flag=--no-inline
log "perf script ($inline_flag)"
perf script -i "$OUT/perf.data" "${filter[@]}" -F comm,pid,tid,time,period,event,ip,sym,dso "$inline_flag" \
    >"$OUT/perf.script" 2>"$OUT/script.log" || die "perf script failed (log in $OUT/script.log)"
[[ -s $OUT/perf.script ]] || die "no samples recorded: is the broker busy? (see $OUT/record.log)"

# Drop the "[unknown]" frame perf prints for the end-of-stack marker
# (0xffffffffffffffff) right above the thread's root.
strip_marker() { sed -E 's/^([^;]*);\[unknown\];/\1;/'; }

inferno-collapse-perf -q "$OUT/perf.script" | strip_marker >"$OUT/out.folded"

countname=samples
[[ $EVENT == cpu-clock || $EVENT == task-clock ]] && countname=ns
[[ -n $TITLE ]] || TITLE="flumen on-CPU, $(date -u +%Y-%m-%dT%H:%MZ)"
subtitle="pid $BROKER_PID, $EVENT @ ${FREQ} Hz for ${SECONDS_WIN}s, weights in $countname"
inferno-flamegraph -q --title "$TITLE" --subtitle "$subtitle" --countname "$countname" \
    --colors rust "$OUT/out.folded" >"$OUT/flamegraph.svg"

if [[ $PER_THREAD -eq 1 ]]; then
    # Root frame "comm-pid/tid" -> "comm/tid"; io-wq workers -> "iou-wrk-<owner>".
    inferno-collapse-perf -q --tid "$OUT/perf.script" | strip_marker |
        awk '{
            i = index($0, ";"); root = substr($0, 1, i - 1); rest = substr($0, i)
            if (match(root, /-[0-9?]+\/[0-9]+$/)) {
                comm = substr(root, 1, RSTART - 1); tid = substr(root, RSTART + 1)
                sub(/^[0-9?]+\//, "", tid)
                root = (comm ~ /^iou-wrk-/) ? comm : comm "/" tid
            }
            print root rest
        }' >"$OUT/out.per-thread.folded"
    inferno-flamegraph -q --title "$TITLE (per thread)" --subtitle "$subtitle" \
        --countname "$countname" --colors rust "$OUT/out.per-thread.folded" \
        >"$OUT/flamegraph.per-thread.svg"
    mkdir -p "$OUT/threads"
    cut -d';' -f1 "$OUT/out.per-thread.folded" | sort -u | while IFS= read -r root; do
        safe=$(printf '%s' "$root" | tr '/ ' '__')
        awk -v r="$root" 'index($0, r ";") == 1' "$OUT/out.per-thread.folded" >"$OUT/threads/$safe.folded"
        inferno-flamegraph -q --title "$root" --subtitle "$subtitle" --countname "$countname" \
            --colors rust "$OUT/threads/$safe.folded" >"$OUT/threads/$safe.svg"
    done
fi

# ---- top20.txt -------------------------------------------------------------
{
    total=$(awk '{s += $NF} END {printf "%.0f", s}' "$OUT/out.folded")
    nsamples=$(grep -c -E '^[^[:space:]]' "$OUT/perf.script" || true)
    echo "flumen on-CPU profile: pid $BROKER_PID, ${SECONDS_WIN}s window, $EVENT @ ${FREQ} Hz, $mode"
    echo "samples: $nsamples, total weight: $total $countname"
    if [[ $countname == ns ]]; then
        awk -v t="$total" -v w="$SECONDS_WIN" 'BEGIN {printf "CPU time sampled: %.2f s over %s s = %.2f cores busy\n", t/1e9, w, t/1e9/w}'
    fi
    awk '{n = $NF; t += n; split($0, f, ";")
          if ($0 ~ /^iou-wrk/ || f[2] ~ /call_once|__rust_begin_short_backtrace|start_thread|clone3|ret_from_fork/) ok += n}
         END {if (t) printf "stacks reaching the thread start: %.1f%% of weight (low = raise --stack-size)\n", 100 * ok / t}' "$OUT/out.folded"
    echo
    echo "== Share per thread (root frame of out.folded) =="
    awk '{i = index($0, ";"); r = substr($0, 1, i - 1); s[r] += $NF; t += $NF}
         END {for (r in s) printf "%6.2f%%  %s\n", 100*s[r]/t, r}' "$OUT/out.folded" | sort -rn
    echo
    echo "== Top 20 functions by self time (perf report --no-children --sort dso,sym; inlined code counted in its caller) =="
    perf report -i "$OUT/perf.data" "${filter[@]}" --no-children --sort dso,sym -g none --stdio -q \
        --percent-limit 0.01 2>/dev/null | sed -E '/^[[:space:]]*$/d' | first_n 20
    echo
    echo "== Top 20 innermost frames (self time, inlined frames expanded) =="
    awk '{n = $NF; s = substr($0, 1, length($0) - length($NF) - 1)
          k = split(s, f, ";"); self[f[k]] += n; t += n}
         END {for (x in self) printf "%6.2f%%  %s\n", 100*self[x]/t, x}' "$OUT/out.folded" |
        sort -rn | first_n 20
    echo
    echo "== Top 20 flumen:: functions by inclusive time (the function and everything it calls) =="
    awk '{n = $NF; s = substr($0, 1, length($0) - length($NF) - 1)
          k = split(s, f, ";"); delete seen
          for (i = 2; i <= k; i++) if (f[i] ~ /flumen::/ && !(f[i] in seen)) {seen[f[i]] = 1; inc[f[i]] += n}
          t += n}
         END {for (x in inc) printf "%6.2f%%  %s\n", 100*inc[x]/t, x}' "$OUT/out.folded" |
        sort -rn | first_n 20
} >"$OUT/top20.txt"

log "done: $OUT"
for f in "$OUT"/*; do printf '  %s\n' "${f##*/}" >&2; done
echo "$OUT"
