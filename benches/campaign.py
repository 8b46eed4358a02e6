#!/usr/bin/env python3
"""The benchmark campaign of docs/benchmarks.md: hardware limits and Flumen, in one run.

Measures, in this order and on this machine:
  limits   fio sequential O_DIRECT write and read (io_uring, 1 MiB, queue depth 16) in the data
           directory's file system; iperf3 over loopback.
  produce  1 KiB records, acks=1, 8 partitions (vs fio write); 100-byte records (records/s).
  consume  a cold read after dropping the page cache (vs fio read), then the same read again
           from the page cache (vs iperf3), with sendfile and with copying (CPU seconds per GB of
           the broker process).
  scale    produce with 1, 8, 100 and 1000 partitions; RSS per idle partition.
  latency  p99 at half the peak rate, acks=1, with the interval flush and with an fdatasync
           before every acknowledgement.
  peer     the same produce load from librdkafka's rdkafka_performance (built by
           benches/build-rdkafka-performance.sh) and from `flumen bench`, against one broker:
           what the bench's own cost hides.
  tansu    with --tansu BINARY: Flumen on disk against Tansu 0.6.0 in memory, both driven by
           rdkafka_performance, 1 and 8 partitions: produce 100 B, produce 1 KiB, consume after
           produce; --peer-rounds alternating rounds, medians, broker CPU s/GB of both and which
           process is the limit (benches/peers.py). Not in the default set: it needs Tansu.
  cost     what Flumen costs as the work grows: partitions and connections to 10,000, record
           size 100 B to 1 MiB, 1 to 1,000 acks=all producers; --cost-rounds rounds, medians
           (benches/cost.py). Not in the default set: it takes about 15 minutes.
  ab       with --baseline OTHER_BINARY: the produce and consume rows for the baseline (A) and
           --flumen (B), alternating A and B for --rounds rounds on fresh brokers, medians and
           B/A ratios with broker CPU seconds per GB (a refactor must not be slower).

The broker and `flumen bench` share the machine, as they would on a laptop benchmark. Every
run starts a fresh broker on an empty data directory. Results go to OUT/results.json and a
markdown table on stdout.

Usage: python3 benches/campaign.py [--flumen target/release/flumen] [--data-dir DIR]
                                  [--seconds 15] [--out DIR] [--only NAME,...]
                                  [--baseline OLD_BINARY --rounds 3]
                                  [--only tansu --tansu TANSU_BINARY --peer-rounds 3]
Needs root for dropping the page cache (the cold read); fio and iperf3 on PATH.
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def fio(path, rw, seconds):
    out = sh(["fio", "--name=seq", f"--filename={path}", f"--rw={rw}", "--bs=1M", "--direct=1",
              "--ioengine=io_uring", "--iodepth=16", "--size=4G", f"--runtime={seconds}",
              "--time_based", "--output-format=json"])
    job = json.loads(out)["jobs"][0]
    return job["write" if rw == "write" else "read"]["bw_bytes"] / 1e6


def iperf3(seconds):
    port = free_port()
    srv = subprocess.Popen(["iperf3", "-s", "-1", "-p", str(port)], stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    try:
        out = json.loads(sh(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(seconds),
                             "-J"]))
    finally:
        srv.wait(timeout=10)
    return out["end"]["sum_received"]["bits_per_second"] / 8e6


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


class Broker:
    def __init__(self, flumen, data_dir, **config):
        self.flumen = flumen
        self.dir = tempfile.mkdtemp(prefix="campaign-", dir=data_dir)
        self.port = free_port()
        cfg = {"listen": f"127.0.0.1:{self.port}", "data_dir": os.path.join(self.dir, "data")}
        cfg.update(config)
        path = os.path.join(self.dir, "flumen.toml")
        with open(path, "w") as f:
            for k, v in cfg.items():
                f.write(f"{k} = {json.dumps(v)}\n")
        self.log = open(os.path.join(self.dir, "broker.log"), "w")
        self.proc = subprocess.Popen([flumen, "serve", "--config", path], stdout=self.log,
                                     stderr=self.log)
        self.bootstrap = f"127.0.0.1:{self.port}"
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("broker did not start")

    def cpu_seconds(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_bytes(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def bench(self, mode, *args):
        out = sh([self.flumen, "bench", mode, "--bootstrap", self.bootstrap, "--json", *args],
                 timeout=900)
        return json.loads(out)


def produce_args(topic, partitions, size, seconds, *extra):
    return ["--topic", topic, "--partitions", str(partitions), "--record-size", str(size),
            "--duration", str(seconds), *extra]


def cold_and_hot_consume(b, args):
    """Writes args.consume_records 1 KiB records, then reads them all after dropping the page
    cache (cold) and again (hot), each with the broker's CPU seconds per GB."""
    b.bench("produce", "--topic", "c", "--partitions", "8", "--record-size", "1024",
            "--batch-records", "256", "--records", str(args.consume_records))
    out = {}
    for temp in ("cold", "hot"):
        if temp == "cold":
            drop_caches()
        cpu0 = b.cpu_seconds()
        r = b.bench("consume", "--topic", "c", "--connections", "2")
        r["broker_cpu_s_per_gb"] = (b.cpu_seconds() - cpu0) / (r["bytes"] / 1e9)
        out[temp] = r
    return out


def run(args):
    results = {}
    only = set(args.only.split(",")) if args.only else None

    def want(name):
        return only is None or name in only

    os.makedirs(args.data_dir, exist_ok=True)
    s = args.seconds
    if want("limits"):
        probe = os.path.join(args.data_dir, "fio.probe")
        try:
            results["fio_write_mb_s"] = fio(probe, "write", s)
            drop_caches()
            results["fio_read_mb_s"] = fio(probe, "read", s)
        finally:
            if os.path.exists(probe):
                os.remove(probe)
        results["iperf3_loopback_mb_s"] = iperf3(min(s, 10))
        print(f"limits: {results}", file=sys.stderr)

    if want("produce") or want("consume"):
        b = Broker(args.flumen, args.data_dir)
        try:
            r = b.bench("produce", *produce_args("p1k", 8, 1024, s, "--acks", "1",
                                                 "--batch-records", "256"))
            results["produce_1k"] = r
            r = b.bench("produce", *produce_args("p100", 8, 100, s, "--acks", "1",
                                                 "--batch-records", "2000"))
            results["produce_100"] = r
            print(f"produce: 1k {results['produce_1k']['mb_per_sec']} MB/s, "
                  f"100B {results['produce_100']['records_per_sec']} rec/s", file=sys.stderr)
        finally:
            b.stop()

    if want("consume"):
        for zero_copy in (True, False):
            b = Broker(args.flumen, args.data_dir, zero_copy_fetch=zero_copy, tail_cache_bytes=0)
            try:
                for temp, r in cold_and_hot_consume(b, args).items():
                    key = f"consume_{temp}_{'sendfile' if zero_copy else 'copy'}"
                    results[key] = r
                    print(f"{key}: {r['mb_per_sec']} MB/s, {r['broker_cpu_s_per_gb']:.2f} "
                          f"CPU s/GB", file=sys.stderr)
            finally:
                b.stop()

    if want("scale"):
        for n in (1, 8, 100, 1000):
            b = Broker(args.flumen, args.data_dir)
            try:
                rss0 = b.rss_bytes()
                # Idle partitions first: what each costs before any load.
                b.bench("produce", "--topic", "idle", "--partitions", str(n),
                        "--records", "1", "--batch-records", "1", "--connections", "1",
                        "--record-size", "64")
                time.sleep(1)
                per_partition = (b.rss_bytes() - rss0) / n
                r = b.bench("produce", *produce_args(f"s{n}", n, 1024, max(5, s // 2),
                                                     "--acks", "1", "--batch-records", "256"))
                r["rss_per_idle_partition_bytes"] = per_partition
                results[f"scale_{n}"] = r
                print(f"scale {n}: {r['mb_per_sec']} MB/s, {per_partition / 1024:.1f} KiB "
                      f"per idle partition", file=sys.stderr)
            finally:
                b.stop()

    if want("latency"):
        for name, flush in (("interval", 1000), ("fsync", 0)):
            b = Broker(args.flumen, args.data_dir, flush_interval_ms=flush)
            try:
                peak = b.bench("produce", *produce_args("peak", 8, 1024, max(5, s // 2),
                                                        "--acks", "1", "--batch-records", "256"))
                rate = peak["records_per_sec"] / 2
                r = b.bench("produce", *produce_args("half", 8, 1024, s, "--acks", "1",
                                                     "--rate", str(int(rate)),
                                                     "--batch-records", "256",
                                                     "--linger-ms", "5"))
                r["peak_records_per_sec"] = peak["records_per_sec"]
                results[f"latency_{name}"] = r
                print(f"latency {name}: peak {peak['records_per_sec']} rec/s, at half: "
                      f"{r['latency_ms']}", file=sys.stderr)
            finally:
                b.stop()
    if only and "cost" in only:
        import cost
        results["cost"] = cost.run(args, lambda **config: Broker(args.flumen, args.data_dir,
                                                                 **config))
    if (want("peer") or want("tansu")) and not os.path.exists(args.rdkafka_performance):
        args.rdkafka_performance = sh(
            [os.path.join(ROOT, "benches/build-rdkafka-performance.sh")]).strip()
    if args.tansu and only and "tansu" in only:
        import peers
        results["tansu"] = peers.run(args, lambda: Broker(args.flumen, args.data_dir),
                                     free_port)
    if want("peer"):
        rdk = args.rdkafka_performance
        for size, n in ((1024, args.peer_records // 4), (100, args.peer_records)):
            b = Broker(args.flumen, args.data_dir)
            try:
                # The topic first, with 8 partitions (rdkafka_performance would auto-create 1).
                b.bench("produce", "--topic", "r", "--partitions", "8", "--records", "1")
                out = sh([rdk, "-P", "-t", "r", "-b", b.bootstrap, "-s", str(size), "-c", str(n),
                          "-a", "1", "-q", "-X", "linger.ms=5", "-X", "batch.size=1000000",
                          "-X", "queue.buffering.max.kbytes=1048576"], timeout=900)
                m = re.search(r"(\d+) msgs/s and ([\d.]+) MB/s", out)
                if not m:
                    raise RuntimeError(f"rdkafka_performance said: {out[-500:]}")
                mine = b.bench("produce", "--topic", "f", "--partitions", "8", "--records",
                               str(n), "--record-size", str(size), "--acks", "1",
                               "--batch-records", str(max(100, 1_000_000 // (size + 70))))
                results[f"peer_{size}"] = {"rdkafka_records_per_sec": int(m.group(1)),
                                           "rdkafka_mb_per_sec": float(m.group(2)),
                                           "flumen_bench": mine}
                print(f"peer {size}: rdkafka {m.group(1)} rec/s, flumen bench "
                      f"{mine['records_per_sec']} rec/s", file=sys.stderr)
            finally:
                b.stop()
    return results


def ab_round(flumen, args):
    """One A/B round of one binary: produce 1 KiB and 100 B, then a cold and a hot consume
    (copy path, no tail cache, as the consume step), each with the broker's CPU s/GB."""
    s = args.seconds
    out = {}
    b = Broker(flumen, args.data_dir)
    try:
        for key, size, batch, topic in (("produce_1k", 1024, "256", "p1k"),
                                        ("produce_100", 100, "2000", "p100")):
            cpu0 = b.cpu_seconds()
            r = b.bench("produce", *produce_args(topic, 8, size, s, "--acks", "1",
                                                 "--batch-records", batch))
            r["broker_cpu_s_per_gb"] = (b.cpu_seconds() - cpu0) / (r["bytes"] / 1e9)
            out[key] = r
    finally:
        b.stop()
    b = Broker(flumen, args.data_dir, tail_cache_bytes=0)
    try:
        for temp, r in cold_and_hot_consume(b, args).items():
            out[f"consume_{temp}"] = r
    finally:
        b.stop()
    return out


def run_ab(args):
    """Runs the baseline (A) and --flumen (B) for args.rounds rounds, alternating which goes
    first (AB, BA, AB, ...) so a machine that drifts slower during the run does not favour
    either."""
    rounds = {"A": [], "B": []}
    pair = (("A", args.baseline), ("B", args.flumen))
    for i in range(args.rounds):
        for name, binary in (pair if i % 2 == 0 else pair[::-1]):
            r = ab_round(binary, args)
            rounds[name].append(r)
            print(f"ab round {i + 1} {name}: " + ", ".join(
                f"{k} {v['mb_per_sec']} MB/s {v['broker_cpu_s_per_gb']:.2f} CPU s/GB"
                for k, v in r.items()), file=sys.stderr)
    return {"baseline": args.baseline, "candidate": args.flumen, "rounds": rounds}


def ab_table(ab):
    def median(xs):
        xs = sorted(xs)
        n = len(xs)
        return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2

    out = ["| row | A (baseline) MB/s | B MB/s | B/A, median of rounds | A CPU s/GB | "
           "B CPU s/GB | B/A CPU, median of rounds | rounds (MB/s) |",
           "|---|---|---|---|---|---|---|---|"]
    for key in ("produce_1k", "produce_100", "consume_cold", "consume_hot"):
        a = [r[key]["mb_per_sec"] for r in ab["rounds"]["A"]]
        b = [r[key]["mb_per_sec"] for r in ab["rounds"]["B"]]
        ac = [r[key]["broker_cpu_s_per_gb"] for r in ab["rounds"]["A"]]
        bc = [r[key]["broker_cpu_s_per_gb"] for r in ab["rounds"]["B"]]
        # Each round's A and B ran back to back: their ratio cancels most of the drift.
        ratio = median([y / x for x, y in zip(a, b)])
        cpu_ratio = median([y / x for x, y in zip(ac, bc)])
        out.append(f"| {key} | {median(a):.0f} | {median(b):.0f} | {100 * ratio:.0f}% | "
                   f"{median(ac):.2f} | {median(bc):.2f} | {100 * cpu_ratio:.0f}% | "
                   f"A {'/'.join(f'{x:.0f}' for x in a)}; B {'/'.join(f'{x:.0f}' for x in b)} |")
    return "\n".join(out)


def table(r):
    rows = []

    def ratio(a, b):
        return f"{100 * a / b:.0f}%" if a and b else "-"

    fw, fr, ip = r.get("fio_write_mb_s"), r.get("fio_read_mb_s"), r.get("iperf3_loopback_mb_s")
    if fw:
        rows.append(("fio seq write O_DIRECT 1 MiB qd16", f"{fw:.0f} MB/s", "limit", ""))
        rows.append(("fio seq read O_DIRECT 1 MiB qd16", f"{fr:.0f} MB/s", "limit", ""))
        rows.append(("iperf3 loopback", f"{ip:.0f} MB/s", "limit", ""))
    if "produce_1k" in r:
        p = r["produce_1k"]
        rows.append(("produce 1 KiB, acks=1, 8 partitions", f"{p['mb_per_sec']:.0f} MB/s",
                     f"{ratio(p['mb_per_sec'], fw)} of fio write", "≥ 80%"))
        p = r["produce_100"]
        rows.append(("produce 100 B, acks=1, 8 partitions", f"{p['records_per_sec'] / 1e6:.2f} M rec/s",
                     f"{ratio(p['records_per_sec'], 2e6)} of 2 M rec/s", "2 M rec/s"))
    for temp, limit, lname, target in (("cold", fr, "fio read", "≥ 80%"),
                                       ("hot", ip, "iperf3", "≥ 50%")):
        for how in ("sendfile", "copy"):
            k = f"consume_{temp}_{how}"
            if k in r:
                c = r[k]
                rows.append((f"consume {temp}, {how}", f"{c['mb_per_sec']:.0f} MB/s, "
                             f"{c['broker_cpu_s_per_gb']:.2f} broker CPU s/GB",
                             f"{ratio(c['mb_per_sec'], limit)} of {lname}", target))
    base = r.get("scale_8", {}).get("mb_per_sec")
    for n in (1, 8, 100, 1000):
        k = f"scale_{n}"
        if k in r:
            c = r[k]
            rows.append((f"produce 1 KiB, {n} partitions", f"{c['mb_per_sec']:.0f} MB/s, "
                         f"{c['rss_per_idle_partition_bytes'] / 1024:.1f} KiB RSS/idle partition",
                         f"{ratio(c['mb_per_sec'], base)} of 8 partitions",
                         "within 20%, < 64 KiB"))
    for name in ("interval", "fsync"):
        k = f"latency_{name}"
        if k in r:
            c = r[k]
            lat = c["latency_ms"]
            rows.append((f"latency at half peak, acks=1, {name}",
                         f"p50 {lat['p50']:.2f} p99 {lat['p99']:.2f} p99.9 {lat['p99_9']:.2f} ms",
                         f"{c['records_per_sec']:.0f} of peak {c['peak_records_per_sec']:.0f} rec/s",
                         "reported"))
    for size in (1024, 100):
        k = f"peer_{size}"
        if k in r:
            c = r[k]
            mine = c["flumen_bench"]["records_per_sec"]
            rows.append((f"load generators, {size} B records, acks=1",
                         f"flumen bench {mine:.0f} rec/s, rdkafka_performance "
                         f"{c['rdkafka_records_per_sec']} rec/s",
                         f"{ratio(mine, c['rdkafka_records_per_sec'])} of rdkafka_performance",
                         "≥ 100%"))
    out = ["| measurement | result | ratio | target |", "|---|---|---|---|"]
    out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flumen", default=os.path.join(ROOT, "target/release/flumen"))
    ap.add_argument("--data-dir", default=os.path.join(ROOT, "bench-data"),
                    help="where fio's file and the brokers' data go (the disk under test)")
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--consume-records", type=int, default=3_000_000,
                    help="1 KiB records written before the consume runs")
    ap.add_argument("--rdkafka-performance",
                    default=os.path.join(ROOT, "target/rdkafka/rdkafka_performance"))
    ap.add_argument("--peer-records", type=int, default=4_000_000,
                    help="100-byte records per load generator in the peer step (a quarter at 1 KiB)")
    ap.add_argument("--tansu", default=None,
                    help="Tansu 0.6.0's binary, for the tansu step (--only tansu)")
    ap.add_argument("--peer-rounds", type=int, default=3,
                    help="alternating rounds of the tansu step")
    ap.add_argument("--producers-seconds", type=int, default=10,
                    help="seconds per producer count in the tansu step's many-producers row")
    ap.add_argument("--peer-small-records", type=int, default=2_000_000,
                    help="100-byte records per produce_100 row of the tansu step")
    ap.add_argument("--peer-large-records", type=int, default=500_000,
                    help="1 KiB records per produce_1k row (then consumed) of the tansu step")
    ap.add_argument("--cost-rounds", type=int, default=3,
                    help="rounds of the cost step (--only cost)")
    ap.add_argument("--cost-seconds", type=int, default=10,
                    help="seconds of load per row of the cost step")
    ap.add_argument("--cost-rate", type=int, default=10000,
                    help="records/s (1 KiB) all connections share in the cost step's "
                         "connections table")
    ap.add_argument("--cost-tables", default=None,
                    help="comma-separated subset of the cost step's tables: "
                         "partitions,connections,record size,producers")
    ap.add_argument("--out", default=None)
    ap.add_argument("--only", default=None,
                    help="comma-separated subset: limits,produce,consume,scale,latency,peer "
                         "(and tansu and cost, only when named)")
    ap.add_argument("--baseline", default=None,
                    help="another flumen binary: run the A/B step (baseline vs --flumen)")
    ap.add_argument("--rounds", type=int, default=3, help="A/B rounds (alternating)")
    args = ap.parse_args()
    results = run(args)
    if args.baseline:
        results["ab"] = run_ab(args)
    results["machine"] = {"cpus": os.cpu_count(), "kernel": os.uname().release,
                          "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    out = args.out or os.path.join(ROOT, "bench-results", time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(table(results))
    if "tansu" in results:
        import peers
        print()
        print(peers.table(results["tansu"]))
    if "cost" in results:
        import cost
        print()
        print(cost.table(results["cost"]))
    if "ab" in results:
        print()
        print(ab_table(results["ab"]))
    print(f"\nresults: {out}/results.json", file=sys.stderr)


if __name__ == "__main__":
    main()
