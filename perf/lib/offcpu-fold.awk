# Fold off-CPU stacks weighted by the time the thread stayed off the CPU.
#
# Input: perf script --show-switch-events -F comm,pid,tid,cpu,time,event,trace,ip,sym,dso
# of a recording made with
#   perf record -e sched:sched_switch [-c N] --call-graph dwarf --switch-events -p PID
# Each sched_switch sample carries the stack of the thread going off the CPU;
# the PERF_RECORD_SWITCH OUT/IN pair of that thread gives how long it stayed
# off. Every switch has a record pair (so the totals are exact) but with -c N
# only one switch in N has a stack, whose time is multiplied by N.
#
# Usage: awk -v every=N -v folded=FILE -v points=FILE -f offcpu-fold.awk
# Writes the folded stacks (weights in microseconds) to FILE `folded`,
# "thread<TAB>reason<TAB>us" lines to `points`, and the per-thread table to
# stdout.

function label(c, t) { return (c ~ /^iou-wrk-/) ? c : c "/" t }

function state_name(s) {
    s = substr(s, 1, 1)
    if (s == "R") return "R preempted"
    if (s == "S") return "S sleep"
    if (s == "D") return "D uninterruptible"
    if (s == "I") return "I idle"
    if (s == "T" || s == "t") return "T stopped"
    return s
}

# A frame line: "\t  <addr> <symbol> (<dso>)"
function parse_frame(line,    s, d) {
    s = line
    sub(/^[ \t]+/, "", s)
    faddr = s; sub(/ .*/, "", faddr)
    sub(/^[0-9a-fA-F]+ /, "", s)
    d = ""
    if (match(s, / \([^()]*\)$/)) { d = substr(s, RSTART + 2, RLENGTH - 3); s = substr(s, 1, RSTART - 1) }
    sub(/\+0x[0-9a-f]+$/, "", s)
    gsub(/;/, ":", s)
    fsym = s; fdso = d
}

function emit(t, dur_us,    i, j, d, sym, path, kern, libc, app, w) {
    if (!(t in pend_n) || pend_n[t] == 0) return
    w = dur_us * every
    if (w < 1) { pend_n[t] = 0; return }
    path = lab[t]
    for (i = pend_n[t]; i >= 1; i--) {
        if (pend_sym[t, i] == "[unknown]" && pend_dso[t, i] == "[unknown]") continue
        path = path ";" pend_sym[t, i]
    }
    path = path ";[" state_name(pend_state[t]) "]"
    stacks[path] += w
    # Blocking point: first kernel frame past the scheduler <- outermost libc
    # frame <- first application frame (not libc, std, core or alloc).
    # An inlined frame belongs to the object of the real frame at the same
    # address; perf sometimes prints only the inlined ones for an address, so
    # then guess from glibc's internal names, else take the next real frame.
    kern = ""; libc = ""; app = ""
    for (i = 1; i <= pend_n[t]; i++) {
        d = pend_dso[t, i]
        sym = pend_sym[t, i]
        if (d == "inlined") {
            for (j = i; j < pend_n[t] && pend_addr[t, j + 1] == pend_addr[t, i] && pend_dso[t, j] == "inlined"; ) j++
            if (pend_addr[t, j] == pend_addr[t, i] && pend_dso[t, j] != "inlined") d = pend_dso[t, j]
            else if (sym ~ /^(__GI_|__lll_|_int_|__libc_|__futex|futex_|__pthread_|pthread_|__memcpy|__memmove|__memset)/) d = "libc.so"
            else { for (; d == "inlined" && j < pend_n[t]; ) d = pend_dso[t, ++j] }
        }
        if (d == "[kernel.kallsyms]") {
            if (kern == "" && sym !~ /^(__schedule|schedule|schedule_[a-z_]*|preempt_schedule[a-z_]*|__cond_resched|_cond_resched|io_schedule[a-z_]*|finish_task_switch.*|__traceiter_.*|perf_.*|__perf_.*)$/)
                kern = sym
        } else if (d ~ /(^|\/)(libc|libpthread|ld-linux)[^\/]*$/) {
            libc = sym
        } else if (sym != "[unknown]" && sym !~ /^<?(std|core|alloc|__rustc)::/) {
            app = sym
            break
        }
    }
    if (kern == "") kern = "-"
    if (app == "") app = "-"
    pts[lab[t] "\t" state_name(pend_state[t]) ": " kern " <- " (libc != "" ? libc " <- " : "") app] += w
    pend_n[t] = 0
}

BEGIN { if (every < 1) every = 1; instack = 0 }

/^[ \t]/ {
    if (instack) {
        parse_frame($0)
        n = ++pend_n[cur]
        pend_sym[cur, n] = fsym; pend_dso[cur, n] = fdso; pend_addr[cur, n] = faddr
    }
    next
}

/^$/ { instack = 0; next }

{
    instack = 0
    k = 0
    for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+\/[0-9]+$/) { k = i; break }
    if (!k) next
    comm = $1; for (i = 2; i < k; i++) comm = comm " " $i
    split($k, pt, "/"); tid = pt[2]
    j = k + 1; if ($j ~ /^\[[0-9]+\]$/) j++
    ts = $j; sub(/:$/, "", ts); ts += 0
    ev = $(j + 1)
    if (first_ts == "") first_ts = ts
    if (ts > last_ts) last_ts = ts
    if (!(tid in lab)) { lab[tid] = label(comm, tid); tname[tid] = comm "/" tid; order[++nthreads] = tid }

    if (ev == "PERF_RECORD_SWITCH") {
        dir = $(j + 2)
        if (dir == "OUT") {
            out_ts[tid] = ts
            out_pre[tid] = ($0 ~ /preempt/) ? 1 : 0
            nsw[tid]++; if (out_pre[tid]) npre[tid]++
            if (tid in in_ts) { on[tid] += ts - in_ts[tid]; delete in_ts[tid] }
        } else if (dir == "IN") {
            in_ts[tid] = ts
            if (tid in out_ts) {
                d = ts - out_ts[tid]
                off[tid] += d
                if (out_pre[tid]) offpre[tid] += d; else offsleep[tid] += d
                emit(tid, d * 1e6)
                delete out_ts[tid]
            } else if (!(tid in seen_in)) {
                on_start[tid] = 1    # was off-CPU when the window opened
            }
            seen_in[tid] = 1
        }
        next
    }
    if (ev ~ /sched_switch/) {
        # stack of the thread being switched out: the sample's own tid
        cur = tid; instack = 1
        pend_n[cur] = 0
        st = "?"
        if (match($0, /prev_state=[^ ]+/)) st = substr($0, RSTART + 11, RLENGTH - 11)
        pend_state[cur] = st
        nstacks[cur]++
        next
    }
}

END {
    window = last_ts - first_ts
    if (window <= 0) window = 1
    # threads still off-CPU when the window closed
    for (t in out_ts) {
        d = last_ts - out_ts[t]
        off[t] += d; if (out_pre[t]) offpre[t] += d; else offsleep[t] += d
        emit(t, d * 1e6)
    }
    for (t in in_ts) on[t] += last_ts - in_ts[t]
    for (s in stacks) printf "%s %d\n", s, stacks[s] + 0.5 > folded
    for (p in pts) printf "%s\t%d\n", p, pts[p] + 0.5 > points

    printf "Window %.2f s (first to last switch of the broker's threads). Times in ms.\n", window
    printf "OFF = off-CPU, from PERF_RECORD_SWITCH out->in (exact); SLEEP = it blocked (voluntary);\n"
    printf "PREEMPT = it was runnable but another task took the CPU. STACKS = switches with a stack.\n"
    printf "Threads that never switched in the window are not listed (asleep all along, or never off).\n\n"
    printf "%-24s %8s %8s %10s %10s %10s %7s %8s\n", "THREAD", "SWITCH", "PREEMPT", "OFF", "SLEEP", "PREEMPT", "OFF%", "STACKS"
    for (i = 1; i <= nthreads; i++) {
        t = order[i]
        if (!nsw[t] && !(t in off)) continue
        printf "%-24s %8d %8d %10.1f %10.1f %10.1f %6.1f%% %8d\n", tname[t], nsw[t], npre[t],
            off[t] * 1e3, offsleep[t] * 1e3, offpre[t] * 1e3, 100 * off[t] / window, nstacks[t]
    }
}
