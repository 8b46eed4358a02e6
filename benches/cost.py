"""The cost step of benches/campaign.py (`--only cost`): what Flumen costs as the work grows, four
tables in one run (issue 17, item 5). Every row runs on a fresh broker with the default
configuration unless a table says otherwise, driven by `flumen bench produce`; --cost-rounds
rounds, the rows in forward order in odd rounds and backward in even ones; medians.

  partitions   one topic of 1, 10, 100, 1,000 and 10,000 partitions; 1 KiB records, acks=1,
               256 records per request, partitions in turn, 2 connections, --cost-seconds:
               MB/s, broker CPU s/GB, p99, and what each partition costs idle (broker RSS and
               open descriptors after the topic is made, before the load, per partition) and
               after the load (disk reserved past the bytes written, per partition; RSS).
  connections  1, 10, 100, 1,000 and 10,000 producer connections sharing a fixed total rate
               (--cost-rate records/s of 1 KiB, acks=1, linger 5 ms, 8 partitions), tail cache
               off so that the broker's memory is the connections': broker RSS per connection
               (peak during the run against before it), p99 (from each record's scheduled
               arrival), records/s reached, broker CPU s/GB.
  record size  100 B, 1 KiB, 16 KiB, 256 KiB and 1 MiB records, 8 partitions, acks=1, about
               256 KiB per request: MB/s, records/s, broker CPU s/GB, p99.
  producers    1, 10, 100 and 1,000 connections with acks=all, one 100-byte record per
               request (linger 0), 8 partitions: records/s, p99, broker CPU s/GB. The many
               small clients of an ingestion tier.

The load generator runs one thread per connection on the same two cores; 10,000 connections
need 10,000 descriptors in each process (the broker raises its own limit where allowed)."""
import os
import subprocess
import threading
import time

from peers import median

PARTITIONS = (1, 10, 100, 1000, 10000)
CONNECTIONS = (1, 10, 100, 1000, 10000)
SIZES = (100, 1024, 16384, 262144, 1048576)
PRODUCERS = (1, 10, 100, 1000)


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def disk_bytes(path):
    """Bytes the files under `path` take on the disk (allocated blocks)."""
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(root, f)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


class PeakRss:
    """Samples a process's RSS every 0.2 s from start to stop; `peak` is the largest seen."""

    def __init__(self, broker):
        self.broker, self.peak, self.done = broker, broker.rss_bytes(), threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.done.wait(0.2):
            self.peak = max(self.peak, self.broker.rss_bytes())

    def stop(self):
        self.done.set()
        self.t.join()
        return max(self.peak, self.broker.rss_bytes())


def produce(broker, topic, partitions, seconds, *extra):
    """One `flumen bench produce` run: its summary with the broker's CPU seconds per GB."""
    cpu0 = broker.cpu_seconds()
    r = broker.bench("produce", "--topic", topic, "--partitions", str(partitions),
                     "--duration", str(seconds), *extra)
    r["broker_cpu_s_per_gb"] = (broker.cpu_seconds() - cpu0) / (r["bytes"] / 1e9)
    r["p99_ms"] = r["latency_ms"]["p99"]
    return r


def partitions_row(broker, n, seconds):
    rss0, fds0 = broker.rss_bytes(), open_fds(broker.proc.pid)
    # The topic, and one record, before any load: what an idle partition holds.
    broker.bench("produce", "--topic", "t", "--partitions", str(n), "--records", "1",
                 "--batch-records", "1", "--connections", "1", "--record-size", "64")
    time.sleep(1)
    idle_rss = (broker.rss_bytes() - rss0) / n
    idle_fds = (open_fds(broker.proc.pid) - fds0) / n
    r = produce(broker, "t", n, seconds, "--record-size", "1024", "--acks", "1",
                "--batch-records", "256")
    data = os.path.join(broker.dir, "data")
    return {"mb_per_sec": r["mb_per_sec"], "broker_cpu_s_per_gb": r["broker_cpu_s_per_gb"],
            "p99_ms": r["p99_ms"], "idle_rss_per_partition": idle_rss,
            "fds_per_partition": idle_fds, "rss_after": broker.rss_bytes(),
            "reserved_per_partition": max(0, disk_bytes(data) - r["bytes"]) / n}


def connections_row(broker, n, seconds, rate):
    # The partitions' write buffers and the broker's own first allocations come first, on one
    # connection, so that what the run adds is the connections'.
    broker.bench("produce", "--topic", "c", "--partitions", "8", "--connections", "1",
                 "--duration", "2", "--rate", str(rate), "--acks", "1")
    time.sleep(0.5)
    rss0 = broker.rss_bytes()
    peak = PeakRss(broker)
    try:
        r = produce(broker, "c", 8, seconds, "--connections", str(n), "--rate", str(rate),
                    "--acks", "1", "--record-size", "1024", "--linger-ms", "5")
    finally:
        top = peak.stop()
    return {"records_per_sec": r["records_per_sec"], "p99_ms": r["p99_ms"],
            "broker_cpu_s_per_gb": r["broker_cpu_s_per_gb"],
            "rss_per_connection": (top - rss0) / n}


def size_row(broker, size, seconds):
    r = produce(broker, "s", 8, seconds, "--record-size", str(size), "--acks", "1",
                "--batch-records", str(max(1, 262144 // size)))
    return {k: r[k] for k in ("mb_per_sec", "records_per_sec", "broker_cpu_s_per_gb", "p99_ms")}


def producers_row(broker, n, seconds):
    r = produce(broker, "p", 8, seconds, "--record-size", "100", "--connections", str(n),
                "--acks", "-1", "--batch-records", "1")
    return {k: r[k] for k in ("records_per_sec", "broker_cpu_s_per_gb", "p99_ms")}


def run(args, start_broker):
    """{table: {row: [result per round]}}; a row that fails says why in its place."""
    s = args.cost_seconds
    tables = {
        "partitions": (PARTITIONS, {}, lambda b, n: partitions_row(b, n, s)),
        # All connections come from 127.0.0.1: the per-IP limit (10,000) would refuse the
        # load generator's admin connection beside 10,000 producers.
        "connections": (CONNECTIONS, {"tail_cache_bytes": 0, "max_connections_per_ip": 50000},
                        lambda b, n: connections_row(b, n, s, args.cost_rate)),
        "record size": (SIZES, {}, lambda b, n: size_row(b, n, s)),
        "producers": (PRODUCERS, {}, lambda b, n: producers_row(b, n, s)),
    }
    if args.cost_tables:
        tables = {k: v for k, v in tables.items() if k in args.cost_tables.split(",")}
    out = {name: {str(n): [] for n in rows} for name, (rows, _, _) in tables.items()}
    for i in range(args.cost_rounds):
        for name, (rows, config, measure) in tables.items():
            for n in (rows if i % 2 == 0 else tuple(reversed(rows))):
                b = start_broker(**config)
                try:
                    r = measure(b, n)
                except subprocess.CalledProcessError as e:
                    said = (e.stderr or "").strip().splitlines() or [str(e)]
                    r = {"error": said[-1].removeprefix("flumen: ")[:200]}
                except (subprocess.SubprocessError, RuntimeError, ValueError, KeyError) as e:
                    r = {"error": repr(e)[:200]}
                finally:
                    b.stop()
                out[name][str(n)].append(r)
                print(f"cost, round {i + 1}, {name} {n}: {r}", flush=True)
    return out


def mib(x):
    return f"{x / 2**20:.1f}"


def kib(x):
    return f"{x / 1024:.1f}"


COLUMNS = {
    "partitions": [("MB/s", "mb_per_sec", ".0f"), ("broker CPU s/GB", "broker_cpu_s_per_gb", ".2f"),
                   ("p99 ms", "p99_ms", ".1f"), ("idle RSS KiB/partition", "idle_rss_per_partition", kib),
                   ("descriptors/partition", "fds_per_partition", ".2f"),
                   ("disk reserved past the data, KiB/partition", "reserved_per_partition", kib),
                   ("RSS after, MiB", "rss_after", mib)],
    "connections": [("records/s", "records_per_sec", ".0f"), ("p99 ms", "p99_ms", ".1f"),
                    ("RSS KiB/connection", "rss_per_connection", kib),
                    ("broker CPU s/GB", "broker_cpu_s_per_gb", ".2f")],
    "record size": [("MB/s", "mb_per_sec", ".0f"), ("records/s", "records_per_sec", ".0f"),
                    ("broker CPU s/GB", "broker_cpu_s_per_gb", ".2f"), ("p99 ms", "p99_ms", ".1f")],
    "producers": [("records/s", "records_per_sec", ".0f"), ("p99 ms", "p99_ms", ".1f"),
                  ("broker CPU s/GB", "broker_cpu_s_per_gb", ".2f")],
}
FIRST = {"partitions": "partitions", "connections": "connections (fixed total rate)",
         "record size": "record bytes", "producers": "producers (acks=all, linger 0, 100 B)"}


def table(res):
    out = []
    for name, rows in res.items():
        cols = COLUMNS[name]
        lead = cols[0][1]
        out += ["", f"| {FIRST[name]} | " + " | ".join(c[0] for c in cols) + f" | rounds ({cols[0][0]}) |",
                "|---" * (len(cols) + 2) + "|"]
        for n, rounds in rows.items():
            ok = [r for r in rounds if "error" not in r]
            failed = [r["error"] for r in rounds if "error" in r]
            if not ok:
                out.append(f"| {n} | failed in every round: {failed[0]} |" + " |" * len(cols))
                continue
            cells = []
            for _, key, fmt in cols:
                v = median([r[key] for r in ok])
                cells.append(fmt(v) if callable(fmt) else format(v, fmt))
            each = "/".join(format(r[lead], ".0f") if "error" not in r else "failed"
                            for r in rounds)
            note = f" ({len(failed)} failed: {failed[0]})" if failed else ""
            out.append(f"| {n} | " + " | ".join(cells) + f" | {each}{note} |")
    return "\n".join(out).lstrip()


if __name__ == "__main__":
    import json
    import sys
    print(table(json.load(open(sys.argv[1]))["cost"]))
