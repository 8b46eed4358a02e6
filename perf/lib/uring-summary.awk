# Summarise `perf script -F comm,pid,tid,cpu,time,event,trace` output of
# io_uring:* tracepoints recorded system-wide (perf record -a).
#
# Usage: awk -v pid=BROKER_PID -v lat=LAT_FILE -v rings=RINGS_FILE \
#            -f uring-summary.awk FD_FILE -   (perf script on stdin)
#
# FD_FILE: "fd<TAB>readlink target" lines of the broker's fds, sampled during
# the recording.
# Writes the report to stdout, one line per request completion to LAT_FILE
# ("ring<TAB>op<TAB>target<TAB>path<TAB>latency_us") and the broker's rings to RINGS_FILE.
#
# Everything is keyed by ring (the io_uring context pointer): a ring belongs
# to the broker when any of its events ran in a broker thread. Events of those
# rings that ran elsewhere (a client's send waking a poll, softirq) are kept.
# Requests are followed by their kernel pointer: submit -> (file_get: fd) ->
# (poll_arm: waited for readiness | queue_async_work: punted to io-wq) ->
# complete. Kernel request structs are recycled, which is fine because a
# pointer is reused only after its completion.

function getf(s, key,    v) {
    if (match(s, "(^|[ ,])" key " [^ ,]+")) {
        v = substr(s, RSTART, RLENGTH)
        sub(/^[ ,]/, "", v)
        return substr(v, length(key) + 2)
    }
    return ""
}

function classify(t,    b, n, parts) {
    if (t ~ /^socket:/) return "socket"
    if (t ~ /^anon_inode:/) { sub(/^anon_inode:/, "", t); return t }
    if (t ~ /^pipe:/) return "pipe"
    n = split(t, parts, "/"); b = parts[n]
    if (b ~ /\./) { sub(/^.*\./, "", b); return "file *." b }
    return "file " b
}

function kind_of(fd) {
    if (fd == "") return "-"
    if (!(fd in fdk)) return "fd " fd " (unseen)"
    return fdk[fd]
}

function ctx_of(p, c) {
    if (p != pid) return "outside broker"
    if (c ~ /^iou-wrk/) return "io-wq worker"
    if (c ~ /^flumen-shard/) return "shard thread"
    return "broker (" c ")"
}

function errname(r) {
    if (r == -11) return "EAGAIN"; if (r == -62) return "ETIME"; if (r == -125) return "ECANCELED"
    if (r == -4) return "EINTR"; if (r == -104) return "ECONNRESET"; if (r == -32) return "EPIPE"
    if (r == -2) return "ENOENT"; if (r == -9) return "EBADF"; if (r == -22) return "EINVAL"
    if (r == -110) return "ETIMEDOUT"; if (r == -28) return "ENOSPC"; if (r == -5) return "EIO"
    if (r == -114) return "EALREADY"; if (r == -17) return "EEXIST"; if (r == -107) return "ENOTCONN"
    if (r == -103) return "ECONNABORTED"; if (r == -95) return "EOPNOTSUPP"; if (r == -12) return "ENOMEM"
    return "errno " (-r)
}

function pct(a, b) { return b > 0 ? sprintf("%5.1f%%", 100 * a / b) : "     -" }

# sort_keys(arr, out): numeric-value descending order of the keys of arr.
function sort_desc(arr, out,    n, k, i, j, x) {
    n = 0
    for (k in arr) out[++n] = k
    for (i = 2; i <= n; i++) {
        x = out[i]; j = i - 1
        while (j > 0 && arr[out[j]] < arr[x]) { out[j + 1] = out[j]; j-- }
        out[j + 1] = x
    }
    return n
}

# FD_FILE: "fd<TAB>target", possibly several targets per fd (sampled while
# recording: short-lived files reuse numbers); an fd's kind is the set of the
# kinds of its targets.
NR == FNR {
    i = index($0, "\t"); if (!i || $0 ~ /^#/) next
    fd = substr($0, 1, i - 1); c = classify(substr($0, i + 1))
    if (!(fd in fdk)) fdk[fd] = c
    else if (index("|" fdk[fd] "|", "|" c "|") == 0) fdk[fd] = fdk[fd] "|" c
    next
}

{
    k = 0
    for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+\/[0-9]+$/) { k = i; break }
    if (!k || k + 3 > NF) next
    comm = $1; for (i = 2; i < k; i++) comm = comm " " $i
    split($k, pt, "/"); p = pt[1]; tid = pt[2]
    ts = $(k + 2); sub(/:$/, "", ts); ts += 0
    ev = $(k + 3); sub(/:$/, "", ev)
    if (ev !~ /^io_uring:/) next
    sub(/^io_uring:io_uring_/, "", ev)
    payload = substr($0, index($0, $(k + 3)) + length($(k + 3)))
    if (first_ts == "") first_ts = ts
    last_ts = ts

    ring = getf(payload, "ring")
    req = getf(payload, "req"); if (req == "") req = getf(payload, "request")
    cx = ctx_of(p, comm)
    who = (p == pid) ? ((comm ~ /^iou-wrk/) ? comm : comm "/" tid) : "pid " p " (" comm ")"

    if (ring == "") {    # task_work_run has a tctx, no ring
        if (p == pid) norings[ev, cx]++
        next
    }
    if (p == pid) broker_ring[ring] = 1
    evcount[ring, ev]++
    evctx[ring, ev, cx]++
    evs[ev] = 1; ctxs[cx] = 1; allrings[ring] = 1

    if (ev == "submit_req" || ev == "submit_sqe") {
        op = getf(payload, "opcode")
        submitter[ring, who]++
        if (req in sub_ts) unfinished_reused++
        sub_ts[req] = ts; sub_op[req] = op; sub_ring[req] = ring; sub_kind[req] = "-"; sub_path[req] = "inline"
        nsub[ring, op]++
    } else if (ev == "file_get") {
        if (req in sub_ts) sub_kind[req] = kind_of(getf(payload, "fd"))
    } else if (ev == "poll_arm") {
        if (req in sub_ts) sub_path[req] = "poll"
        npoll[ring, getf(payload, "opcode")]++
    } else if (ev == "queue_async_work") {
        op = getf(payload, "opcode")
        q = (payload ~ /hashed queue/) ? "hashed" : "normal"
        if (req in sub_ts) { sub_path[req] = "io-wq"; kk = sub_kind[req] } else kk = "?"
        npunt[ring, op]++
        puntq[ring, op " -> " kk " (" q " queue)"]++
    } else if (ev == "complete") {
        res = getf(payload, "result") + 0
        if (req in sub_ts) {
            op = sub_op[req]
            key = op "\t" sub_kind[req] "\t" sub_path[req]
            printf "%s\t%s\t%.1f\n", ring, key, (ts - sub_ts[req]) * 1e6 > lat
            ncomp[ring, op]++
            delete sub_ts[req]
        } else {
            op = "?"
            unmatched[ring]++
        }
        completer[ring, cx]++
        if (res < 0) nerr[ring, op " " errname(res)]++
    } else if (ev == "fail_link") {
        nfaillink[ring, getf(payload, "opcode")]++
    } else if (ev == "req_failed") {
        nreqfail[ring, getf(payload, "opcode") " error " getf(payload, "error")]++
    } else if (ev == "cqring_wait") {
        waits[ring, who]++
    }
}

END {
    window = last_ts - first_ts
    if (window <= 0) window = 1
    # broker rings, named after their main submitter
    nr = 0
    for (r in broker_ring) {
        best = ""; bc = -1
        for (kw in submitter) { split(kw, a, SUBSEP); if (a[1] == r && submitter[kw] > bc) { bc = submitter[kw]; best = a[2] } }
        owner[r] = (best == "") ? "?" : best
        tot = 0; for (kw in evcount) { split(kw, a, SUBSEP); if (a[1] == r) tot += evcount[kw] }
        rtot[r] = tot
        nr++
    }
    nro = sort_desc(rtot, rorder)
    ri = 0
    for (i = 1; i <= nro; i++) { r = rorder[i]; rname[r] = "ring" (++ri) " (" owner[r] ")"; print r "\t" rname[r] > rings }
    close(rings)

    printf "Recorded window: %.2f s (first to last io_uring event), all CPUs.\n", window
    printf "Broker rings: %d. Other rings seen on the machine (not the broker's): %d.\n", nr, length_of(allrings) - nr
    print ""

    print "== Rings =="
    printf "%-38s %-20s %10s %10s %10s %10s\n", "RING", "POINTER", "SUBMIT/s", "COMPLETE/s", "PUNT/s", "WAITS/s"
    for (i = 1; i <= nro; i++) {
        r = rorder[i]
        s = evcount[r, "submit_req"] + evcount[r, "submit_sqe"]
        w = 0; for (kw in waits) { split(kw, a, SUBSEP); if (a[1] == r) w += waits[kw] }
        printf "%-38s %-20s %10.0f %10.0f %10.0f %10.0f\n", rname[r], r, s / window, evcount[r, "complete"] / window, evcount[r, "queue_async_work"] / window, w / window
    }
    print "WAITS = io_uring_cqring_wait: the owner blocked in io_uring_enter waiting for completions (went idle)."
    print ""

    print "== Submissions by opcode (per ring) =="
    printf "%-38s %-14s %9s %9s %8s %8s %9s\n", "RING", "OPCODE", "SUBMITTED", "PER-SEC", "PUNTED", "POLLED", "COMPLETED"
    for (i = 1; i <= nro; i++) {
        r = rorder[i]
        delete opn; for (kw in nsub) { split(kw, a, SUBSEP); if (a[1] == r) opn[a[2]] = nsub[kw] }
        no = sort_desc(opn, oo)
        for (j = 1; j <= no; j++) {
            op = oo[j]
            printf "%-38s %-14s %9d %9.0f %8s %8s %9d\n", rname[r], op, nsub[r, op], nsub[r, op] / window,
                pct(npunt[r, op], nsub[r, op]), pct(npoll[r, op], nsub[r, op]), ncomp[r, op]
        }
        delete oo
    }
    print "PUNTED = share handed to io-wq worker threads (io_uring_queue_async_work): the op could not"
    print "complete without blocking (buffered write needing a lock/allocation, fsync, openat, statx ...)."
    print "POLLED = share that found its fd not ready and armed a poll (io_uring_poll_arm): waited for"
    print "the socket/eventfd to become readable/writable. COMPLETED = completions matched in the window."
    print ""

    print "== Punts to io-wq: opcode -> target (queue) =="
    delete cnt; for (kw in puntq) { split(kw, a, SUBSEP); if (a[1] in broker_ring) cnt[rname[a[1]] "  " a[2]] += puntq[kw] }
    n = sort_desc(cnt, oo)
    if (n == 0) print "(none)"
    for (j = 1; j <= n; j++) printf "%9d  %7.0f/s  %s\n", cnt[oo[j]], cnt[oo[j]] / window, oo[j]
    delete oo
    print ""

    print "== Negative completion results (op errno), broker rings =="
    delete cnt; for (kw in nerr) { split(kw, a, SUBSEP); if (a[1] in broker_ring) cnt[rname[a[1]] "  " a[2]] += nerr[kw] }
    n = sort_desc(cnt, oo)
    if (n == 0) print "(none)"
    for (j = 1; j <= n; j++) printf "%9d  %s\n", cnt[oo[j]], oo[j]
    delete oo
    print "ECANCELED/ETIME on TIMEOUT, ASYNC_CANCEL and linked ops are the executor re-arming its"
    print "timers; errors on READ/WRITE/SEND/RECV/FSYNC are real failures."
    print ""

    print "== Where events ran (context), broker rings =="
    printf "%-22s", "EVENT"; for (c in ctxs) { cl[++ncl] = c; printf " %16s", c }; printf "\n"
    for (e in evs) {
        line = sprintf("%-22s", e); any = 0
        for (j = 1; j <= ncl; j++) {
            s = 0; for (r in broker_ring) s += evctx[r, e, cl[j]]
            line = line sprintf(" %16d", s); if (s) any = 1
        }
        if (any) print line
    }
    for (kw in norings) { split(kw, a, SUBSEP); printf "%-22s (no ring field) %d in %s\n", a[1], norings[kw], a[2] }
    print "Completions outside the shard thread are io-wq workers finishing punted work, or wakeups"
    print "(task_add) from the thread whose action made the fd ready, e.g. a client's send."
    print ""

    print "== Requests still in flight at the end of the window (what the broker is waiting on) =="
    delete cnt; delete age
    for (q in sub_ts) {
        r = sub_ring[q]; if (!(r in broker_ring)) continue
        kk = rname[r] "  " sub_op[q] " " sub_kind[q] " (" sub_path[q] ")"
        cnt[kk]++; a0 = (last_ts - sub_ts[q]) * 1e3; if (a0 > age[kk]) age[kk] = a0
    }
    n = sort_desc(cnt, oo)
    if (n == 0) print "(none)"
    for (j = 1; j <= n; j++) printf "%7d  oldest %9.1f ms  %s\n", cnt[oo[j]], age[oo[j]], oo[j]
    delete oo
    print ""

    t = 0; for (kw in nfaillink) { split(kw, a, SUBSEP); if (a[1] in broker_ring) { fl[a[2]] += nfaillink[kw]; t += nfaillink[kw] } }
    if (t) { printf "fail_link (linked requests cancelled because their head completed/failed): %d;", t; for (x in fl) printf " %s %d", x, fl[x]; printf "\n" }
    t = 0; for (kw in nreqfail) { split(kw, a, SUBSEP); if (a[1] in broker_ring) { printf "req_failed: %d x %s\n", nreqfail[kw], a[2]; t++ } }
    over = 0; sw = 0; for (r in broker_ring) { over += evcount[r, "cqe_overflow"]; sw += evcount[r, "short_write"] }
    if (over) printf "WARNING: %d CQE overflows (completion queue too small or not reaped)\n", over
    if (sw) printf "short writes: %d\n", sw
    um = 0; for (r in broker_ring) um += unmatched[r]
    printf "completions without a submission in the window (multishot, or submitted before it): %d\n", um
}

function length_of(arr,    n, k) { n = 0; for (k in arr) n++; return n }
