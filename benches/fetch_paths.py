#!/usr/bin/env python3
"""Fetch from segment files, each way, in alternating rounds: sendfile (zero_copy_fetch = true)
and copy (false) of --flumen, and copy of a --baseline binary if given. Each round writes
--records 1 KiB records to 8 partitions on a fresh broker with the tail cache off, reads them
all after dropping the page cache (cold) and again (hot) with `flumen bench consume`, and
takes the broker's CPU seconds per GB and, from its metrics, the bytes sent each way. fio's
sequential read, measured at the start of each round, is the limit the rates are given
against. Needs root (drop_caches).

    python3 benches/fetch_paths.py --flumen target/release/flumen [--baseline OLD] [--rounds 3]
"""
import argparse
import os
import re
import statistics
import sys
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import campaign as c  # noqa: E402


def file_bytes(port):
    """Bytes sent each way, from the broker's metrics (None if it has no such counter)."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    except OSError:
        return None
    out = {}
    for m in re.finditer(r'flumen_fetch_file_bytes_total\{shard="\d+",how="(\w+)"\} ([\d.e+]+)',
                         text.decode()):
        out[m.group(1)] = out.get(m.group(1), 0) + float(m.group(2))
    return out or None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flumen", default=os.path.join(c.ROOT, "target/release/flumen"))
    ap.add_argument("--baseline", default=None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--data-dir", default=os.path.join(c.ROOT, "bench-data"))
    args = ap.parse_args()
    variants = [("sendfile", args.flumen, True), ("copy", args.flumen, False)]
    if args.baseline:
        variants.append(("baseline copy", args.baseline, False))
    os.makedirs(args.data_dir, exist_ok=True)

    class Consume:
        consume_records = args.records

    res = {v[0]: [] for v in variants}
    limits = []
    for i in range(args.rounds):
        probe = os.path.join(args.data_dir, "fio.probe")
        c.drop_caches()
        limits.append(c.fio(probe, "read", 8))
        os.remove(probe)
        for name, binary, zero_copy in variants[i % len(variants):] + variants[:i % len(variants)]:
            port = c.free_port()
            b = c.Broker(binary, args.data_dir, tail_cache_bytes=0, zero_copy_fetch=zero_copy,
                         metrics_listen=f"127.0.0.1:{port}")
            try:
                r = c.cold_and_hot_consume(b, Consume)
                ways = file_bytes(port)
            finally:
                b.stop()
            res[name].append({k: (v["mb_per_sec"], v["broker_cpu_s_per_gb"]) for k, v in r.items()})
            print(f"round {i + 1} {name}: {res[name][-1]} bytes each way {ways}", file=sys.stderr,
                  flush=True)
    fio = statistics.median(limits)
    print(f"fio sequential read, median of rounds: {fio:.0f} MB/s ({', '.join(f'{x:.0f}' for x in limits)})")
    print("| path | read | MB/s | of fio read | broker CPU s/GB | rounds MB/s | rounds CPU s/GB |")
    print("|---|---|---|---|---|---|---|")
    for name in res:
        for temp in ("cold", "hot"):
            mb = statistics.median(x[temp][0] for x in res[name])
            cpu = statistics.median(x[temp][1] for x in res[name])
            print(f"| {name} | {temp} | {mb:.0f} | {mb / fio:.0%} | {cpu:.2f} | "
                  f"{'/'.join(str(round(x[temp][0])) for x in res[name])} | "
                  f"{'/'.join(f'{x[temp][1]:.2f}' for x in res[name])} |")


if __name__ == "__main__":
    main()
