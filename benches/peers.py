"""The peer step of benches/campaign.py: Flumen (on disk) against Tansu 0.6.0 (in memory) with the
same neutral load generator, librdkafka's rdkafka_performance, in alternating rounds.

Rows, for 1 and for 8 partitions, each on a fresh broker and topic:
  produce_100   --peer-small-records 100-byte records (acks=1, linger 5 ms, 1 MB batches)
  produce_1k    --peer-large-records 1 KiB records, same settings
  consume       the 1 KiB records just produced, read from the beginning by one consumer
and the many-producers row: 1, 10, 100 and 1,000 producer connections (`flumen bench
produce --connections N`, acks=all, one 100-byte record per request, i.e. linger 0) for
--producers-seconds each, 8 partitions: records/s, p99 and broker CPU s/GB. rdkafka_performance
is one producer per process, so this row uses Flumen's own load generator for both brokers.

For every row: MB/s and records/s as rdkafka_performance reports them, the broker's CPU seconds
per GB (from /proc, utime + stime) and the load generator's, and which of the two was the limit
(the one closer to a full core: each is one process on a 2-core machine)."""
import json
import os
import signal
import subprocess
import tempfile
import time

from security import cpu_seconds, rdkafka_summary, wait_port


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


class Tansu:
    """Tansu's broker with memory storage (nothing is written to disk)."""

    def __init__(self, binary, port):
        self.bootstrap = f"127.0.0.1:{port}"
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [binary, "broker", "--storage-engine", "memory://tansu/",
             "--listener-url", f"tcp://127.0.0.1:{port}",
             "--advertised-listener-url", f"tcp://127.0.0.1:{port}"],
            stdout=self.log, stderr=self.log)
        wait_port(port)

    def cpu_seconds(self):
        return cpu_seconds(self.proc.pid)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def create_topic(bootstrap, topic, partitions):
    """With the Kafka protocol (CreateTopics), the same request for both brokers."""
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(30)
    time.sleep(0.5)


def rdkafka(rdk, args):
    """rdkafka_performance's summary: records/s and MB/s."""
    records, mb = rdkafka_summary(rdk, args)
    return {"records_per_sec": records, "mb_per_sec": mb}


def run_rows(broker, rdk, partitions, small, large, round_id):
    """The three rows on one fresh broker; returns {row: result}."""
    out = {}
    b = broker.bootstrap
    parts = [x for p in range(partitions) for x in ("-p", str(p))]
    produce = ["-a", "1", "-q", "-X", "linger.ms=5", "-X", "batch.size=1000000",
               "-X", "queue.buffering.max.kbytes=1048576"]
    for row, size, n in (("produce_100", 100, small), ("produce_1k", 1024, large)):
        topic = f"{row}-{partitions}-{round_id}"
        create_topic(b, topic, partitions)
        cpu0, t0 = broker.cpu_seconds(), time.time()
        r, client_cpu = timed(rdk, ["-P", "-t", topic, "-b", b, "-s", str(size), "-c", str(n),
                                    *produce])
        r.update(cost(broker, cpu0, t0, client_cpu, n * size))
        out[row] = r
    topic = f"produce_1k-{partitions}-{round_id}"
    cpu0, t0 = broker.cpu_seconds(), time.time()
    r, client_cpu = timed(rdk, ["-C", "-t", topic, "-b", b, *parts, "-o", "beginning",
                                "-c", str(large), "-q"])
    r.update(cost(broker, cpu0, t0, client_cpu, large * 1024))
    out["consume"] = r
    return out


def timed(rdk, args):
    """rdkafka_performance's result and the CPU seconds it used."""
    before = os.times()
    r = rdkafka(rdk, args)
    after = os.times()
    client = (after.children_user - before.children_user) + \
        (after.children_system - before.children_system)
    return r, client


def cost(broker, cpu0, t0, client_cpu, nbytes):
    wall = time.time() - t0
    broker_cpu = broker.cpu_seconds() - cpu0
    return {"broker_cpu_s_per_gb": broker_cpu / (nbytes / 1e9),
            "client_cpu_s_per_gb": client_cpu / (nbytes / 1e9),
            "broker_core_share": broker_cpu / wall,
            "client_core_share": client_cpu / wall,
            # The process busier relative to the core it could use is the limit.
            "limit": "broker" if broker_cpu >= client_cpu else "load generator"}


PRODUCERS = (1, 10, 100, 1000)


def many_producers(broker, flumen, seconds, round_id):
    """{producers: result} on one broker: each count on its own topic, back to back."""
    out = {}
    for n in PRODUCERS:
        topic = f"many-{n}-{round_id}"
        create_topic(broker.bootstrap, topic, 8)
        cpu0 = broker.cpu_seconds()
        p = subprocess.run([flumen, "bench", "produce", "--bootstrap", broker.bootstrap,
                            "--topic", topic, "--record-size", "100", "--connections", str(n),
                            "--acks", "-1", "--batch-records", "1", "--duration", str(seconds),
                            "--json"], capture_output=True, text=True, timeout=seconds * 10 + 120)
        if p.returncode != 0:
            # A broker that cannot take this many producers: the row says so.
            last = p.stderr.strip().splitlines()[-1]
            out[str(n)] = {"error": last.removeprefix("flumen: ")[:200]}
            continue
        r = json.loads(p.stdout)
        cpu = broker.cpu_seconds() - cpu0
        out[str(n)] = {"records_per_sec": r["records_per_sec"], "p99_ms": r["latency_ms"]["p99"],
                       "broker_cpu_s_per_gb": cpu / (r["bytes"] / 1e9)}
    return out


def alternating(args, start_flumen, free_port, measure, label, show):
    """args.peer_rounds rounds of `measure(broker, round)` on a fresh broker of each kind,
    Flumen first in odd rounds and Tansu first in even ones: {"flumen": [..], "tansu": [..]}."""
    rounds = {"flumen": [], "tansu": []}
    for i in range(args.peer_rounds):
        order = ("flumen", "tansu") if i % 2 == 0 else ("tansu", "flumen")
        for name in order:
            broker = start_flumen() if name == "flumen" else Tansu(args.tansu, free_port())
            try:
                r = measure(broker, i)
            finally:
                broker.stop()
            rounds[name].append(r)
            print(f"tansu peer, {label}, round {i + 1}, {name}: " +
                  ", ".join(f"{k}: {show(v)}" for k, v in r.items()), flush=True)
    return rounds


def run(args, start_flumen, free_port):
    """The rows for 1 and 8 partitions, then the many-producers row; returns
    {"1": rounds, "8": rounds, "producers": rounds}."""
    rdk = args.rdkafka_performance
    results = {}
    for partitions in (1, 8):
        results[str(partitions)] = alternating(
            args, start_flumen, free_port,
            lambda b, i: run_rows(b, rdk, partitions, args.peer_small_records,
                                  args.peer_large_records, i),
            f"{partitions} partition(s)",
            lambda v: f"{v['mb_per_sec']:.0f} MB/s {v['broker_cpu_s_per_gb']:.2f} s/GB "
                      f"({v['limit']})")
    rounds = alternating(
        args, start_flumen, free_port,
        lambda b, i: many_producers(b, args.flumen, args.producers_seconds, i),
        "many producers",
        lambda v: v["error"] if "error" in v else
        f"{v['records_per_sec']:.0f} rec/s p99 {v['p99_ms']:.1f} ms")
    results["producers"] = rounds
    return results


def producers_table(rounds):
    out = ["| producers (acks=all, linger 0, 100 B) | Flumen rec/s | Tansu rec/s | Flumen/Tansu | "
           "Flumen p99 ms | Tansu p99 ms | Flumen CPU s/GB | Tansu CPU s/GB |",
           "|---|---|---|---|---|---|---|---|"]
    for n in rounds["flumen"][0]:
        f = [r[n] for r in rounds["flumen"] if "error" not in r[n]]
        t = [r[n] for r in rounds["tansu"] if "error" not in r[n]]
        failed = {name: len(rounds[name]) - len(ok) for name, ok in (("flumen", f), ("tansu", t))}

        def col(xs, key, fmt, name):
            if not xs:
                return f"failed in every round ({rounds[name][0][n]['error'].removeprefix('flumen: ')})"
            return format(median([x[key] for x in xs]), fmt) + \
                (f" ({failed[name]} round(s) failed)" if failed[name] else "")
        ratio = (f"{median([a['records_per_sec'] / b['records_per_sec'] for a, b in zip(f, t)]):.2f}×"
                 if f and t else "-")
        out.append(f"| {n} | {col(f, 'records_per_sec', '.0f', 'flumen')} | "
                   f"{col(t, 'records_per_sec', '.0f', 'tansu')} | {ratio} | "
                   f"{col(f, 'p99_ms', '.1f', 'flumen')} | {col(t, 'p99_ms', '.1f', 'tansu')} | "
                   f"{col(f, 'broker_cpu_s_per_gb', '.2f', 'flumen')} | "
                   f"{col(t, 'broker_cpu_s_per_gb', '.2f', 'tansu')} |")
    return "\n".join(out)


def table(res):
    res = dict(res)
    producers = res.pop("producers", None)
    out = ["| partitions | row | Flumen MB/s | Tansu MB/s | Flumen/Tansu (median of rounds) | "
           "Flumen broker CPU s/GB | Tansu broker CPU s/GB | limit (Flumen; Tansu) | "
           "rounds Flumen/Tansu MB/s |",
           "|---|---|---|---|---|---|---|---|---|"]
    for partitions, rounds in res.items():
        for row in ("produce_100", "produce_1k", "consume"):
            f = [r[row] for r in rounds["flumen"]]
            t = [r[row] for r in rounds["tansu"]]
            ratio = median([a["mb_per_sec"] / b["mb_per_sec"] for a, b in zip(f, t)])
            limits = lambda xs: "/".join(sorted({x["limit"] for x in xs}))  # noqa: E731
            each = " ".join(f"{a['mb_per_sec']:.0f}/{b['mb_per_sec']:.0f}" for a, b in zip(f, t))
            out.append(
                f"| {partitions} | {row} | {median([x['mb_per_sec'] for x in f]):.0f} | "
                f"{median([x['mb_per_sec'] for x in t]):.0f} | {ratio:.2f}× | "
                f"{median([x['broker_cpu_s_per_gb'] for x in f]):.2f} | "
                f"{median([x['broker_cpu_s_per_gb'] for x in t]):.2f} | "
                f"{limits(f)}; {limits(t)} | "
                f"{each} |")
    if producers:
        out += ["", producers_table(producers)]
    return "\n".join(out)


if __name__ == "__main__":
    import sys
    print(table(json.load(open(sys.argv[1]))["tansu"]))
