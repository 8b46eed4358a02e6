#!/usr/bin/env python3
"""What replication costs, on this machine, with real processes (the test harness's Cluster).

Three brokers on 127.0.0.1-3, one shard each, each with a Prometheus endpoint. Every partition
of a measured topic is led by broker 1: `flumen bench produce` sends every partition to its
bootstrap broker (it does not route by leader), and one leader makes "the leader's CPU"
a measurable thing. In alternating order each round (so the machine's drift favours no case):

  rf3_all        RF 3 (replicas 1, 2, 3), min.insync.replicas 2, acks=all
  rf1_one        RF 1 (replica 1), acks=1
  rf3_one        RF 3, acks=1: the followers' fetches without acks=all's waiting, so the
                 leader's follower-serving cost compares with rf1_consumers' directly
  rf1_consumers  RF 1, acks=1, with --consumers tailing consumers (`flumen bench consume
                 --from-latest`) on broker 1 reading every byte as it is written: the cost to
                 the leader of the same number of readers as RF 3 has followers, for comparison
                 with what the followers cost it (--consumers 0 leaves this case out)

Each case produces --record-size records (default 1 KiB) to a fresh topic of --partitions
(default 8) for --seconds, then the topic is deleted. Per case and round:

  MB/s, p50/p99      from `flumen bench produce --json` (record batch bytes acknowledged)
  CPU s/GB           per broker: utime+stime from /proc/<pid>/stat over the producer's run,
                     per GB the leader appended (flumen_partition_bytes_in_total on broker 1)
  leader read/prod   flumen_partition_bytes_out_total of the topic on broker 1 (what fetches
                     read: the followers' in rf3_all, the consumers' in rf1_consumers) per
                     byte produced; 2.00 is two followers reading each byte once
  appended/read      what the followers appended (bytes_in on brokers 2 and 3) per byte the
                     leader read for them: 1.00 means nothing was fetched and thrown away
  loopback/prod      bytes received on `lo` (/proc/net/dev) per byte produced, from the
                     producer's start until the metrics are read: producer to leader, leader
                     to followers, responses, heartbeats, Raft, metric scrapes; anything else
                     on this machine's loopback counts too, so run it on a quiet machine

and over the rounds (medians of per-round values): the throughput ratio rf3_all / rf1_one,
the leader's extra CPU per GB for replication (rf3_all minus rf1_one, broker 1), the extra CPU
per GB of serving the consumers (rf1_consumers minus rf1_one), and the followers' CPU per GB.

Placement: glommio pins a broker's shard to the first CPU the process may use, so three
brokers started plainly all run on CPU 0. This script re-pins every thread of broker 1 to
CPU 0 and of the followers to the other CPUs in turn (2 CPUs: both on CPU 1); `--no-pin`
leaves the harness's placement. `flumen bench` pins its threads to all CPUs in turn: load
generator and brokers share the machine, as in the campaign.

Needs a built flumen (FLUMEN_BIN, default target/release/flumen; this script never builds)
and confluent-kafka.

At full speed the leader's core is saturated and followers that fall more than the tail cache
behind read cold from the segment files while tailing consumers stay hot: per GB served that
compares a cold reader with a hot one. `--rate N` (records/s, every case the same) keeps every
reader at the tail, so rf3_one and rf1_consumers compare like for like. `--perf DIR` records the
leader with `perf record --call-graph dwarf` during each producer run (DIR/<topic>.data), and
`--cases` picks a subset.

    python3 benches/replication.py --rounds 3
    python3 benches/replication.py --rounds 3 --rate 150000
    python3 benches/replication.py --rounds 1 --cases rf1_one,rf3_one --perf /tmp/perf
    python3 benches/replication.py --rounds 1 --seconds 5 --partitions 8 --out /tmp/repl.json
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "clients"))

CASES = ("rf3_all", "rf1_one", "rf3_one", "rf1_consumers")
BROKERS = (1, 2, 3)
# Metrics are published by each shard once a second: wait this long after a run before
# reading them, so every append of the run (and the followers' last fetches) is counted.
METRICS_SETTLE_S = 2.5


def cpu_seconds(pid):
    """utime + stime of the whole process (every thread), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loopback_rx_bytes():
    with open("/proc/net/dev") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name.strip() == "lo":
                return int(rest.split()[0])
    return 0


def pin(pid, cpus):
    """Every thread of `pid` onto `cpus` (glommio pinned its executor thread at start; a
    thread's affinity can be changed from outside, and threads created later inherit it)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except OSError:  # the thread ended meanwhile
            pass


METRIC = re.compile(r'^(flumen_partition_bytes_(?:in|out)_total)\{([^}]*)\} (\S+)$')


def topic_bytes(addr, topic):
    """{"in": bytes appended, "out": bytes read for fetches} of `topic` on one broker,
    summed over its partitions."""
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {"in": 0.0, "out": 0.0}
    for line in text.splitlines():
        m = METRIC.match(line)
        if m and f'topic="{topic}"' in m.group(2):
            out["in" if m.group(1).endswith("_in_total") else "out"] += float(m.group(3))
    return out


def bench(flumen, mode, bootstrap, topic, *args, popen=False):
    cmd = [flumen, "bench", mode, "--bootstrap", bootstrap, "--topic", topic, "--json", *args]
    if popen:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {r.returncode}:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def wait_placed(c, topic, replicas, timeout=60):
    """Until broker 1 leads every partition of `topic` with all of `replicas` in sync."""
    from test_cluster import eventually
    want = sorted(replicas)

    def ok():
        parts = c.metadata(1).topics[topic].partitions.values()
        return parts and all(p.leader == 1 and sorted(p.isrs) == want for p in parts)
    eventually(ok, timeout, f"{topic} led by 1 with ISR {want}")


def run_case(c, args, case, topic, metrics):
    from confluent_kafka.admin import AdminClient
    from test_cluster import create
    p = args.partitions
    b1 = c.node(1).bootstrap
    if case == "rf3_all":
        replicas, acks, config = [1, 2, 3], "-1", {"min.insync.replicas": "2"}
    elif case == "rf3_one":
        replicas, acks, config = [1, 2, 3], "1", {}
    else:
        replicas, acks, config = [1], "1", {}
    create(b1, topic, p, assignment=[replicas] * p, config=config)
    wait_placed(c, topic, replicas)
    time.sleep(1.0)  # let the new partitions' first fetches and image changes pass
    consumers = []
    if case == "rf1_consumers":
        consumers = [bench(args.flumen, "consume", b1, topic, "--from-latest",
                           "--duration", str(args.seconds + 4), popen=True)
                     for _ in range(args.consumers)]
        time.sleep(2.0)  # connected and waiting at the log end
    pids = {k: c.node(k).proc.pid for k in BROKERS}
    perf = None
    if args.perf:
        # Software clock (this VM has no hardware counters); DWARF stacks for Rust frames.
        perf = subprocess.Popen(
            ["perf", "record", "-e", "cpu-clock", "-F", "499", "--call-graph", "dwarf,16384",
             "-p", str(pids[1]), "-o", os.path.join(args.perf, f"{topic}.data")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
    lo0 = loopback_rx_bytes()
    cpu0 = {k: cpu_seconds(pid) for k, pid in pids.items()}
    r = bench(args.flumen, "produce", b1, topic, "--partitions", str(p),
              "--record-size", str(args.record_size), "--batch-records", str(args.batch_records),
              "--acks", acks, "--duration", str(args.seconds),
              *(["--rate", str(args.rate)] if args.rate else []))
    cpu1 = {k: cpu_seconds(pid) for k, pid in pids.items()}
    if perf:
        perf.send_signal(2)  # SIGINT: perf writes its file and exits
        perf.wait(60)
    consumed = 0
    for proc in consumers:
        try:
            out, err = proc.communicate(timeout=args.seconds + 60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        try:
            consumed += json.loads(out.strip().splitlines()[-1])["bytes"]
        except (ValueError, IndexError, KeyError):
            print(f"  a consumer printed no summary (exit {proc.returncode}): {err.strip()[-300:]}",
                  file=sys.stderr)
    time.sleep(METRICS_SETTLE_S)
    lo1 = loopback_rx_bytes()
    tb = {k: topic_bytes(metrics[k], topic) for k in BROKERS}
    isr = sorted({tuple(sorted(q.isrs)) for q in c.metadata(1).topics[topic].partitions.values()})
    produced = tb[1]["in"] or float(r["bytes"])
    gb = produced / 1e9
    read = tb[1]["out"]
    appended = tb[2]["in"] + tb[3]["in"]
    res = {
        "case": case, "topic": topic, "mb_per_sec": r["mb_per_sec"],
        "records_per_sec": r["records_per_sec"], "seconds": r["seconds"],
        "p50_ms": r["latency_ms"]["p50"], "p99_ms": r["latency_ms"]["p99"],
        "bench_bytes": r["bytes"], "produced_bytes": produced,
        "cpu_s": {k: cpu1[k] - cpu0[k] for k in BROKERS},
        "cpu_s_per_gb": {k: (cpu1[k] - cpu0[k]) / gb for k in BROKERS},
        "leader_read_per_produced": read / produced,
        "appended_per_read": appended / read if read else None,
        "loopback_per_produced": (lo1 - lo0) / produced,
        "consumers_read_bytes": consumed,
        "isr_at_end": [list(x) for x in isr],
    }
    if case == "rf3_all" and isr != [(1, 2, 3)]:
        print(f"  warning: the ISR shrank during the run: {isr}", file=sys.stderr)
    admin = AdminClient({"bootstrap.servers": b1})  # kept alive until the futures resolve
    for _, f in admin.delete_topics([topic], operation_timeout=30).items():
        f.result(30)
    return res


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")


def report(args, results, idle, placement):
    cases = [k for k in CASES if results[k]]
    rounds = len(results[cases[0]])
    idle_s = "/".join(f"{idle[k]:.3f}" for k in BROKERS)
    lines = [f"{rounds} round(s), {args.seconds} s each, {args.partitions} partitions, "
             f"{args.record_size}-byte records, {args.batch_records}-record batches, all led by "
             f"broker 1; placement: {placement}; idle brokers used {idle_s} CPU s/s "
             f"(brokers 1/2/3). Medians:", "",
             "| case | MB/s | p50 / p99 ms | CPU s/GB broker 1 (leader) | broker 2 | broker 3 "
             "| leader read / produced | appended / read | loopback / produced | MB/s per round |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for k in cases:
        rs = results[k]
        cpu = {b: median([r["cpu_s_per_gb"][b] for r in rs]) for b in BROKERS}
        app = median([r["appended_per_read"] for r in rs])
        app_s = "–" if app != app else f"{app:.3f}"
        per_round = "/".join(f"{r['mb_per_sec']:.0f}" for r in rs)
        lines.append(
            f"| {k} | {median([r['mb_per_sec'] for r in rs]):.0f} | "
            f"{median([r['p50_ms'] for r in rs]):.2f} / {median([r['p99_ms'] for r in rs]):.2f} | "
            f"{cpu[1]:.2f} | {cpu[2]:.2f} | {cpu[3]:.2f} | "
            f"{median([r['leader_read_per_produced'] for r in rs]):.2f} | "
            f"{app_s} | {median([r['loopback_per_produced'] for r in rs]):.2f} | {per_round} |")
    lines.append("")
    a, b = results["rf3_all"], results["rf1_one"]
    if not b:
        lines.append("- (no rf1_one runs: the differences against RF 1 need that case)")
        return "\n".join(lines)
    extra = None
    if a:
        ratio = median([x["mb_per_sec"] / y["mb_per_sec"] for x, y in zip(a, b)])
        extra = median([x["cpu_s_per_gb"][1] - y["cpu_s_per_gb"][1] for x, y in zip(a, b)])
        followers = median([x["cpu_s_per_gb"][k] for x in a for k in (2, 3)])
        lines.append(f"- throughput rf3_all / rf1_one: **{100 * ratio:.0f}%** (median of per-round ratios)")
        lines.append(f"- leader's extra CPU for replication (rf3_all - rf1_one, broker 1): "
                     f"**{extra:.2f} CPU s/GB** produced")
        lines.append(f"- a follower's CPU: **{followers:.2f} CPU s/GB** (brokers 2 and 3 in rf3_all)")
    if results["rf3_one"]:
        o = results["rf3_one"]
        fol = median([x["cpu_s_per_gb"][1] - y["cpu_s_per_gb"][1] for x, y in zip(o, b)])
        served = median([x["leader_read_per_produced"] for x in o])
        per_served = fol / served if served > 0 else float("nan")
        own = "" if extra is None else f"; acks=all's own share (rf3_all - rf3_one): **{extra - fol:.2f}**"
        lines.append(f"- leader's extra CPU for followers without acks=all (rf3_one - rf1_one, "
                     f"broker 1): **{fol:.2f} CPU s/GB** produced, **{per_served:.2f} per GB "
                     f"served** to followers ({served:.2f} bytes read per byte produced){own}")
    if results["rf1_consumers"]:
        cc = results["rf1_consumers"]
        cons = median([x["cpu_s_per_gb"][1] - y["cpu_s_per_gb"][1] for x, y in zip(cc, b)])
        read = median([x["leader_read_per_produced"] for x in cc])
        per_read = cons / read if read > 0 else float("nan")
        share = "–" if cons <= 0 or extra is None else f"{100 * extra / cons:.0f}%"
        lines.append(f"- leader's extra CPU for {args.consumers} tailing consumers (rf1_consumers - "
                     f"rf1_one, broker 1): **{cons:.2f} CPU s/GB** produced, **{per_read:.2f} per "
                     f"GB served** (they read {read:.2f} bytes per byte produced); replication / "
                     f"consumers: {share}")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10, help="producer run per case")
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--record-size", type=int, default=1024)
    ap.add_argument("--batch-records", type=int, default=100)
    ap.add_argument("--consumers", type=int, default=2,
                    help="tailing consumers of the rf1_consumers case; 0 skips that case")
    ap.add_argument("--flush-interval-ms", type=int, default=None,
                    help="every broker's flush_interval_ms (default: the broker's, 1000)")
    ap.add_argument("--flumen", default=os.environ.get("FLUMEN_BIN",
                                                        str(ROOT / "target" / "release" / "flumen")))
    ap.add_argument("--data-dir", default=None, help="where the brokers' data dirs go (default: TMPDIR)")
    ap.add_argument("--no-pin", action="store_true", help="leave the brokers where glommio put them")
    ap.add_argument("--out", default=None, help="write every round's figures here as JSON")
    ap.add_argument("--rate", type=int, default=None,
                    help="records/s for every case (open loop): below the leader's limit every "
                         "reader keeps up, so per-GB costs compare like for like")
    ap.add_argument("--cases", default=",".join(CASES),
                    help=f"comma-separated subset of {','.join(CASES)}")
    ap.add_argument("--perf", default=None, metavar="DIR",
                    help="record the leader (broker 1) with `perf record --call-graph dwarf` "
                         "during each producer run, into DIR/<case>-<round>.data")
    args = ap.parse_args()
    if not os.access(args.flumen, os.X_OK):
        sys.exit(f"no flumen binary at {args.flumen} (build it, or set FLUMEN_BIN / --flumen)")
    # The harness starts FLUMEN_BIN when it is set.
    os.environ["FLUMEN_BIN"] = args.flumen
    from conftest import free_port
    from test_cluster import Cluster

    wanted = [k.strip() for k in args.cases.split(",") if k.strip()]
    unknown = [k for k in wanted if k not in CASES]
    if unknown:
        sys.exit(f"unknown case(s) {unknown}: choose from {', '.join(CASES)}")
    cases = [k for k in CASES if k in wanted and (k != "rf1_consumers" or args.consumers > 0)]
    if args.perf:
        os.makedirs(args.perf, exist_ok=True)
    results = {k: [] for k in CASES}
    extra = {"broker_session_timeout_ms": 9000,  # a loaded 2-core host must not fence anyone
             "max_partitions_per_topic": max(args.partitions, 1000)}
    if args.flush_interval_ms is not None:
        extra["flush_interval_ms"] = args.flush_interval_ms
    with tempfile.TemporaryDirectory(prefix="flumen-repl-", dir=args.data_dir) as tmp:
        c = Cluster(Path(tmp), 3, extra)
        metrics = {}
        for k in BROKERS:
            b = c.node(k)
            metrics[k] = f"127.0.0.{k}:{free_port()}"
            with open(b.config_path, "a") as f:
                f.write(f'metrics_listen = "{metrics[k]}"\n')
        c.start()
        try:
            placement = "as glommio placed them"
            if not args.no_pin:
                cpus = sorted(os.sched_getaffinity(0))
                rest = cpus[1:] or cpus
                where = {1: {cpus[0]}, 2: {rest[0]}, 3: {rest[1 % len(rest)]}}
                for k in BROKERS:
                    pin(c.node(k).proc.pid, where[k])
                placement = ", ".join(f"broker {k} on CPU {sorted(where[k])[0]}" for k in BROKERS)
            cpu0 = {k: cpu_seconds(c.node(k).proc.pid) for k in BROKERS}
            time.sleep(3)
            idle = {k: (cpu_seconds(c.node(k).proc.pid) - cpu0[k]) / 3 for k in BROKERS}
            for r in range(args.rounds):
                order = cases if r % 2 == 0 else cases[::-1]
                for case in order:
                    res = run_case(c, args, case, f"{case.replace('_', '-')}-{r}", metrics)
                    results[case].append(res)
                    cpu = "/".join(f"{res['cpu_s_per_gb'][k]:.2f}" for k in BROKERS)
                    print(f"round {r + 1} {case}: {res['mb_per_sec']:.0f} MB/s, p99 "
                          f"{res['p99_ms']:.2f} ms, CPU s/GB (brokers 1/2/3) {cpu}, leader read "
                          f"{res['leader_read_per_produced']:.2f}x, loopback "
                          f"{res['loopback_per_produced']:.2f}x", file=sys.stderr, flush=True)
        finally:
            c.stop()
    text = report(args, results, idle, placement)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "idle_cpu_s_per_s": idle, "placement": placement,
                       "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
