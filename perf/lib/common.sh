# shellcheck shell=bash
# shellcheck disable=SC2034  # OUT, BROKER_PID, PERF_LIB ... are for the sourcing script
# Shared helpers for the perf/ scripts. Sourced, never executed.
#
# Every script: finds the broker (--pid or pgrep), checks that perf works and
# that we are allowed to attach to it, makes a results directory, and writes
# meta.txt (what was run, on which kernel, against which binary) plus
# threads.tsv (every thread of the broker and its role) into it.

PERF_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PERF_LIB="$PERF_DIR/lib"

die() {
    printf '%s: error: %s\n' "${SCRIPT_NAME:-perf}" "$*" >&2
    exit 1
}

log() {
    printf '%s: %s\n' "${SCRIPT_NAME:-perf}" "$*" >&2
}

# need_value OPTION "$#": an option that takes a value must have one.
need_value() {
    [[ $2 -ge 2 ]] || die "option $1 needs a value (see --help)"
}

need_uint() {
    [[ $2 =~ ^[0-9]+$ ]] || die "option $1 wants a non-negative integer, got '$2'"
}

# first_n N: like head -n N but reads all its input, so that the writer of a
# pipeline never dies of SIGPIPE (which set -o pipefail would turn into a
# failure of the script).
first_n() { awk -v n="$1" 'NR <= n'; }

utc_stamp() { date -u +%Y%m%dT%H%M%SZ; }

# make_outdir NAME [DIR]: sets OUT (DIR if given, else perf/results/NAME-<UTC>).
make_outdir() {
    local name=$1 dir=${2:-}
    if [[ -z $dir ]]; then
        dir="$PERF_DIR/results/$name-$(utc_stamp)"
    fi
    mkdir -p "$dir" || die "cannot create output directory $dir"
    OUT="$(cd "$dir" && pwd)"
}

# require_perf: perf is installed and runs for this kernel.
require_perf() {
    if ! command -v perf >/dev/null 2>&1; then
        die "perf not found. Install it: Debian 'apt-get install linux-perf'," \
            "Ubuntu 'apt-get install linux-tools-common linux-tools-\$(uname -r)'," \
            "Fedora 'dnf install perf'."
    fi
    local v
    if ! v=$(perf --version 2>&1); then
        die "perf is installed but does not run for kernel $(uname -r): $v"
    fi
    PERF_VERSION=$v
}

# require_inferno: the folding/rendering tools are on PATH (or ~/.cargo/bin).
require_inferno() {
    if ! command -v inferno-collapse-perf >/dev/null 2>&1 && [[ -x $HOME/.cargo/bin/inferno-collapse-perf ]]; then
        PATH="$HOME/.cargo/bin:$PATH"
    fi
    local missing=()
    command -v inferno-collapse-perf >/dev/null 2>&1 || missing+=(inferno-collapse-perf)
    command -v inferno-flamegraph >/dev/null 2>&1 || missing+=(inferno-flamegraph)
    if [[ ${#missing[@]} -gt 0 ]]; then
        die "${missing[*]} not found. Install the inferno tools with:" \
            "'cargo install inferno --locked' (puts them in ~/.cargo/bin)."
    fi
}

# find_broker_pid [PID]: sets BROKER_PID.
find_broker_pid() {
    local want=${1:-} p=""
    if [[ -n $want ]]; then
        [[ $want =~ ^[0-9]+$ ]] || die "--pid wants a number, got '$want'"
        [[ -d /proc/$want ]] || die "no process with pid $want"
        BROKER_PID=$want
        return
    fi
    p=$(pgrep -o -x flumen 2>/dev/null || true)
    if [[ -z $p ]]; then
        p=$(pgrep -o -f 'flumen serve' 2>/dev/null || true)
    fi
    [[ -n $p ]] || die "no running broker found (looked for a process named 'flumen'" \
        "and for 'flumen serve' on a command line). Start one, or pass --pid PID."
    BROKER_PID=$p
}

# paranoid_hint: what to do when perf may not attach or see tracepoints.
paranoid_hint() {
    local par
    par=$(cat /proc/sys/kernel/perf_event_paranoid 2>/dev/null || echo '?')
    cat <<EOF
  kernel.perf_event_paranoid is $par and you are uid $(id -u).
  perf attaching to a process needs the same user (or root) and paranoid <= 2
  (user-space only) / <= 1 (with kernel stacks); tracepoints (sched:*,
  io_uring:*, syscalls:*) need root or CAP_PERFMON+readable tracefs, or
  paranoid = -1. Either run as root (sudo $0 ...) or, on a machine you own:
      sudo sysctl -w kernel.perf_event_paranoid=-1
      sudo sysctl -w kernel.kptr_restrict=0      # kernel symbols in stacks
EOF
}

# ensure_tracefs: tracepoints are only resolvable with tracefs mounted.
ensure_tracefs() {
    if [[ -d /sys/kernel/tracing/events ]] && [[ -n "$(ls -A /sys/kernel/tracing/events 2>/dev/null)" ]]; then
        TRACEFS=/sys/kernel/tracing
        return
    fi
    if [[ -d /sys/kernel/debug/tracing/events ]] && [[ -n "$(ls -A /sys/kernel/debug/tracing/events 2>/dev/null)" ]]; then
        TRACEFS=/sys/kernel/debug/tracing
        return
    fi
    if [[ $(id -u) -eq 0 ]] && [[ -d /sys/kernel/tracing ]]; then
        log "tracefs not mounted; mounting it on /sys/kernel/tracing"
        mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || true
        if [[ -d /sys/kernel/tracing/events ]]; then
            TRACEFS=/sys/kernel/tracing
            return
        fi
    fi
    die "tracefs is not mounted (no /sys/kernel/tracing/events): as root run" \
        "'mount -t tracefs nodev /sys/kernel/tracing'."
}

# tracepoint_exists SYS:NAME
tracepoint_exists() {
    local sys=${1%%:*} name=${1#*:}
    [[ -d ${TRACEFS:-/sys/kernel/tracing}/events/$sys/$name ]]
}

# probe_attach PID [EVENT]: a 0.1 s perf stat against the broker, to fail early
# with a readable message rather than after the measurement window.
probe_attach() {
    local pid=$1 ev=${2:-task-clock} err
    if ! err=$(perf stat -e "$ev" -p "$pid" -x, -o /dev/null -- sleep 0.1 2>&1); then
        printf '%s: error: perf cannot attach to pid %s with event %s:\n%s\n' \
            "${SCRIPT_NAME:-perf}" "$pid" "$ev" "$(printf '%s\n' "$err" | sed "s/^/    /" | first_n 20)" >&2
        paranoid_hint >&2
        exit 1
    fi
}

# stable_tids PID: comma-separated tids of the broker's long-lived threads
# (everything but io_uring's io-wq / sqpoll kernel workers, which come and go).
# perf record -p attaches to every thread, and perf 6.1 spins (millions of
# wakeups, samples silently stop) once an attached thread exits, which io-wq
# workers do after a few idle seconds. Attaching to these threads only is
# safe; io-wq workers they spawn during the window are still followed
# (inherited counters), only those that already existed are missed.
stable_tids() {
    local t c out=()
    for t in /proc/"$1"/task/*; do
        c=$(cat "$t/comm" 2>/dev/null) || continue
        case $c in iou-wrk-*|iou-sqp-*) continue ;; esac
        out+=("$(basename "$t")")
    done
    (IFS=,; echo "${out[*]}")
}

# can_system_wide: may we record all CPUs (perf record -a)?
can_system_wide() {
    perf stat -a -e cpu-clock -x, -o /dev/null -- sleep 0.1 >/dev/null 2>&1
}

# check_record_log FILE SECONDS: warn when perf record spun (see stable_tids)
# or lost events.
check_record_log() {
    local file=$1 secs=$2 woken
    woken=$(awk '/Woken up/ {for (i = 1; i <= NF; i++) if ($i == "up") print $(i + 1)}' "$file" | tail -1)
    if [[ -n $woken ]] && awk -v w="$woken" -v s="$secs" 'BEGIN {exit !(w > 20000 * (s > 1 ? s : 1))}'; then
        log "WARNING: perf record woke up $woken times: it spun (an attached thread exited?);" \
            "samples are probably missing; re-run (the scripts record all CPUs or only long-lived threads to avoid this)."
    fi
    if grep -qiE 'lost [0-9]+ chunks|LOST' "$file"; then
        log "WARNING: perf lost events (see $file): the machine could not keep up; numbers are lower bounds."
    fi
}

# software_only: true when the PMU has no hardware counters (typical VM).
software_only() {
    local o
    o=$(perf stat -e cycles -x, -- true 2>&1 || true)
    [[ $o == *"not supported"* || $o == *"<not counted>"* || -z $o || $o == *rror* ]]
}

# thread_role PID TID COMM: main / shard executor / shard blocking pool /
# io-wq worker / other. The executor thread of a glommio shard is the first
# (lowest tid) of the threads sharing its name: its blocking-pool threads are
# spawned from it later and inherit the name; io-wq workers are named
# iou-wrk-<tid of the ring owner>.
thread_role() {
    local pid=$1 tid=$2 comm=$3 first
    if [[ $tid == "$pid" ]]; then echo "main"; return; fi
    case $comm in
        iou-wrk-*) echo "io-wq worker of ${comm#iou-wrk-}"; return ;;
        iou-sqp-*) echo "sqpoll thread of ${comm#iou-sqp-}"; return ;;
    esac
    first=$(for t in /proc/"$pid"/task/*; do
        [[ $(cat "$t/comm" 2>/dev/null) == "$comm" ]] && basename "$t"
    done | sort -n | first_n 1)
    if [[ $comm == flumen-shard* ]]; then
        if [[ $first == "$tid" ]]; then echo "shard executor"; else echo "shard blocking pool"; fi
    else
        echo "other"
    fi
}

# write_threads PID FILE: tid, comm, role, allowed cpus, wchan at this moment.
write_threads() {
    local pid=$1 file=$2 t tid comm cpus wchan
    printf 'tid\tcomm\trole\tcpus_allowed\twchan\n' >"$file"
    for t in /proc/"$pid"/task/*; do
        tid=$(basename "$t")
        comm=$(cat "$t/comm" 2>/dev/null) || continue
        cpus=$(awk '/^Cpus_allowed_list/{print $2}' "$t/status" 2>/dev/null || true)
        wchan=$(cat "$t/wchan" 2>/dev/null || true)
        printf '%s\t%s\t%s\t%s\t%s\n' "$tid" "$comm" "$(thread_role "$pid" "$tid" "$comm")" "$cpus" "${wchan:-?}"
    done | sort -n >>"$file"
}

# write_meta FILE PID "command line of the script": what, where, with what.
write_meta() {
    local file=$1 pid=$2 cmd=$3 exe build dbg
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null || echo '?')
    build='?'
    dbg=''
    if command -v readelf >/dev/null 2>&1 && [[ -r $exe ]]; then
        build=$(readelf -n "$exe" 2>/dev/null | awk '/Build ID/{print $3}')
        dbg=$(readelf -S -W "$exe" 2>/dev/null | awk '{for(i=1;i<=NF;i++) if ($i ~ /^\.(debug_[a-z]+|eh_frame|symtab)$/) print $i}' | sort -u | paste -sd' ' -)
    fi
    {
        echo "script:        $cmd"
        echo "date (UTC):    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "host:          $(uname -n), kernel $(uname -r), $(nproc) cpus"
        echo "perf:          ${PERF_VERSION:-$(perf --version 2>/dev/null)}"
        echo "perf_event_paranoid: $(cat /proc/sys/kernel/perf_event_paranoid 2>/dev/null), kptr_restrict: $(cat /proc/sys/kernel/kptr_restrict 2>/dev/null), uid $(id -u)"
        echo "hardware counters: $(if software_only; then echo 'no (software events only)'; else echo yes; fi)"
        echo "broker pid:    $pid"
        echo "broker cmd:    $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)"
        echo "broker exe:    $exe"
        echo "build id:      ${build:-?}"
        echo "ELF sections:  ${dbg:-? (readelf not available)}"
    } >"$file"
}

# label_of COMM TID: the name used for a thread in folded stacks and
# tables. io-wq workers come and go, so they are grouped per ring owner.
label_of() {
    case $1 in
        iou-wrk-*) printf '%s' "$1" ;;
        *) printf '%s/%s' "$1" "$2" ;;
    esac
}

# check_seconds VALUE: a measurement window in seconds.
check_seconds() {
    [[ $1 =~ ^[0-9]+([.][0-9]+)?$ ]] || die "--seconds wants a number, got '$1'"
}
