#!/usr/bin/env python3
"""What log compaction costs, on this machine: the cleaner's throughput and its effect on produce
latency, with the release broker (one shard) and `flumen bench`.

Each round, in alternating order (so the machine's drift favours no case):

  fio        sequential O_DIRECT write then read, 1 MiB blocks, io_uring queue depth 16, a
             --fio-mb file in --dir (the file system the brokers' data dirs are on).
  clean      a dirty keyed log: a broker with `log_cleaner_enable = false`, a compacted topic
             (cleanup.policy=compact, segment.bytes --segment-mb, min.cleanable.dirty.ratio
             0.01) of one partition, --mb MB of --record-size records whose keys cycle over
             records / --updates keys (`flumen bench produce --keys seq:K`: every key written
             --updates times). The broker is stopped, started once more with the cleaner off
             (what starting on that log costs in seconds and CPU: subtracted below), stopped,
             the page cache dropped (when writable; --hot keeps it), and started with the
             cleaner on (`log_cleaner_backoff_ms = 100`, unthrottled) until every pass is done:
             the "log cleaned" lines and the flumen_log_cleaner_* counters unchanged for
             --settle seconds and no .cleaned/.swap file left. Then:
               MB/s            bytes of the segments cleaned (the passes' before= sizes) per
                               second, from the broker's start to the last pass's log line,
                               minus the cleaner-off start's time to answer; also as a share
                               of fio read and fio write
               CPU s/GB        broker utime+stime (/proc/<pid>/stat) to the last pass, minus
                               the cleaner-off start's CPU and the idle CPU after the last pass,
                               per GB cleaned
               space           bytes of the partition's .log files after a clean stop (no
                               preallocation), before and after cleaning
  off / on   produce latency with the cleaner off and on, same load in both: on a fresh broker
             a background keyed producer writes --bg-rate records/s to a compacted topic of
             1 MiB segments (min.cleanable.dirty.ratio 0.01, --bg-keys keys) so that with the
             cleaner on a segment is due every few hundred ms and the cleaner never rests;
             after --warmup s, `flumen bench produce --rate --json` writes --rate records/s to a
             separate delete-policy topic for --seconds: p50/p99/p99.9 from its JSON, broker
             CPU s per GB produced by both producers, and what the cleaner read meanwhile
             (flumen_log_cleaner_read_bytes_total).

Medians over the rounds; the on/off p99 ratio and CPU difference are medians of per-round values.
Prints a markdown table for docs/benchmarks.md and the exact command. The broker and the load
generators share the machine (glommio pins the one shard to the first usable CPU; the bench
spreads its threads over all of them), as in benches/campaign.py.

Needs a built flumen (FLUMEN_BIN or --flumen, default target/release/flumen; this script never
builds), confluent-kafka (topic creation) and fio. Dropping the page cache needs root.

    python3 benches/compaction.py --rounds 3
    python3 benches/compaction.py --rounds 3 --mb 1024 --dir /mnt/nvme/tmp --out /tmp/c.json
    python3 benches/compaction.py --quick --rounds 1          # a smoke run, well under a minute
"""
import argparse
import datetime
import json
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MiB = 1 << 20
STEPS = ("fio", "clean", "off", "on")


def cpu_seconds(pid):
    """utime + stime of the whole process (every thread), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port():
    """A free port below the ephemeral range (see tests/clients/conftest.py)."""
    import random
    for _ in range(200):
        port = random.randint(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port")


def drop_caches():
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


# Every process this script started and has not reaped: killed on the way out, whatever happens.
LIVE = set()


def kill_all():
    for p in list(LIVE):
        if p.poll() is None:
            p.kill()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        LIVE.discard(p)


class Broker:
    """`flumen serve --listen --shards 1 --data-dir --config` on a data dir of its own, with a
    Prometheus endpoint; the data dir outlives the process (restarts keep the log)."""

    def __init__(self, flumen, base, name):
        self.flumen = flumen
        self.dir = os.path.join(base, name)
        self.data_dir = os.path.join(self.dir, "data")
        os.makedirs(self.data_dir, exist_ok=True)
        self.log_path = os.path.join(self.dir, "broker.log")
        self.config_path = os.path.join(self.dir, "flumen.toml")
        self.proc = None
        self.bootstrap = self.metrics = None

    def start(self, config, timeout=30.0):
        """Starts with `config` (TOML keys) on fresh ports. Answers the seconds to the first
        Kafka answer and the broker's CPU seconds by then."""
        port = free_port()
        self.bootstrap = f"127.0.0.1:{port}"
        self.metrics = f"127.0.0.1:{free_port()}"
        cfg = dict(config, metrics_listen=self.metrics)
        with open(self.config_path, "w") as f:
            for k, v in cfg.items():
                f.write(f"{k} = {json.dumps(v)}\n")  # JSON scalars are TOML scalars
        cmd = [self.flumen, "serve", "--listen", self.bootstrap, "--shards", "1",
               "--data-dir", self.data_dir, "--config", self.config_path]
        log = open(self.log_path, "a")
        log.write(f"--- start {' '.join(cmd)}\n")
        log.flush()
        self.log_offset = os.path.getsize(self.log_path)
        self.t_spawn = time.time()
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log)
        log.close()
        LIVE.add(self.proc)
        deadline = self.t_spawn + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"flumen exited with {self.proc.returncode}:\n{self.tail()}")
            if self._answers(port):
                return time.time() - self.t_spawn, self.cpu()
            time.sleep(0.02)
        raise RuntimeError(f"flumen did not answer within {timeout}s:\n{self.tail()}")

    @staticmethod
    def _answers(port):
        """An ApiVersions answer, not just a TCP connect."""
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.settimeout(1.0)
                req = struct.pack(">hhih", 18, 0, 4242, 5) + b"ready"
                s.sendall(struct.pack(">i", len(req)) + req)
                head = b""
                while len(head) < 8:
                    chunk = s.recv(8 - len(head))
                    if not chunk:
                        return False
                    head += chunk
                return struct.unpack(">ii", head)[1] == 4242
        except OSError:
            return False

    def cpu(self):
        return cpu_seconds(self.proc.pid)

    def stop(self, timeout=120.0):
        """SIGTERM (a clean stop: flushes and cuts the preallocation), then SIGKILL if need be."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout=timeout)
                if rc != 0:
                    print(f"  warning: flumen exited {rc} on SIGTERM", file=sys.stderr)
            except subprocess.TimeoutExpired:
                print("  warning: flumen did not stop on SIGTERM: killed", file=sys.stderr)
                self.proc.kill()
                self.proc.wait(timeout=10)
        LIVE.discard(self.proc)
        self.proc = None

    def scrape(self):
        """Every sample of the metrics endpoint: {name: sum over label sets}."""
        with urllib.request.urlopen(f"http://{self.metrics}/metrics", timeout=10) as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            m = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{[^}]*\})? (\S+)$", line)
            if m:
                try:
                    out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
                except ValueError:
                    pass
        return out

    def cleaned_lines(self):
        """The "log cleaned" lines this start logged: [(unix time or None, before, after)]."""
        with open(self.log_path, errors="replace") as f:
            f.seek(self.log_offset)
            text = f.read()
        out = []
        for line in text.splitlines():
            if "log cleaned" not in line:
                continue
            b, a = re.search(r"\bbefore=(\d+)", line), re.search(r"\bafter=(\d+)", line)
            if b and a:
                out.append((log_time(line), int(b.group(1)), int(a.group(1))))
        return out

    def tail(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def partition_dir(self, topic, partition=0):
        return os.path.join(self.data_dir, f"{topic}-{partition}")


def log_time(line):
    """The tracing timestamp at the start of a log line (RFC 3339, UTC) as unix time."""
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z", line)
    if not m:
        return None
    t = datetime.datetime.fromisoformat(m.group(1)).replace(tzinfo=datetime.timezone.utc)
    return t.timestamp() + (float("0." + m.group(2)) if m.group(2) else 0.0)


def log_files(d):
    """(bytes, count of non-empty ones) of the .log files (segments) in a partition directory:
    a pass that keeps nothing of a segment leaves it empty."""
    sizes = [os.path.getsize(os.path.join(d, f)) for f in os.listdir(d) if f.endswith(".log")]
    return sum(sizes), sum(1 for x in sizes if x)


def create_topic(bootstrap, topic, config, partitions=1):
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})  # no teardown chatter
    fs = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1,
                                       config=config)], operation_timeout=30)
    for f in fs.values():
        f.result(30)


def bench_cmd(flumen, bootstrap, topic, *args):
    return [flumen, "bench", "produce", "--bootstrap", bootstrap, "--topic", topic, "--json",
            *map(str, args)]


def bench(cmd, timeout):
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    LIVE.add(p)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise RuntimeError(f"{' '.join(cmd)} did not finish within {timeout}s")
    finally:
        LIVE.discard(p)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}:\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


def fio(path, rw, size_mb, seconds):
    """MB/s of a sequential O_DIRECT 1 MiB job (io_uring qd 16; libaio, then psync, where
    io_uring is not allowed)."""
    last = None
    for engine in ("io_uring", "libaio", "psync"):
        cmd = ["fio", "--name=seq", f"--filename={path}", f"--rw={rw}", "--bs=1M", "--direct=1",
               f"--ioengine={engine}", "--iodepth=16", f"--size={size_mb}M",
               f"--runtime={seconds}", "--time_based", "--output-format=json"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 300)
        if r.returncode == 0:
            try:
                job = json.loads(r.stdout[r.stdout.index("{"):])["jobs"][0]
                return job["write" if rw == "write" else "read"]["bw_bytes"] / 1e6, engine
            except (ValueError, KeyError, IndexError) as e:
                last = f"unreadable fio output ({e}): {r.stdout[-500:]}"
                continue
        last = r.stderr[-1000:] or r.stdout[-1000:]
    raise RuntimeError(f"fio {rw} failed: {last}")


def run_fio(args, tmp):
    probe = os.path.join(tmp, "fio.probe")
    try:
        w, engine = fio(probe, "write", args.fio_mb, args.fio_seconds)
        r, _ = fio(probe, "read", args.fio_mb, args.fio_seconds)
    finally:
        if os.path.exists(probe):
            os.remove(probe)
    return {"fio_write_mb_s": w, "fio_read_mb_s": r, "fio_engine": engine}


def base_config(args, cleaner):
    cfg = {"log_cleaner_enable": cleaner, "log_cleaner_backoff_ms": 100}
    if args.dedupe_buffer_mb:
        cfg["log_cleaner_dedupe_buffer_bytes"] = args.dedupe_buffer_mb * MiB
    return cfg


def run_clean(args, tmp, rnd):
    """One cleaner-throughput measurement on a freshly written dirty log."""
    topic = "dirty"
    records = max(1, int(args.mb * 1e6 / args.record_size))
    keys = max(1, records // args.updates)
    b = Broker(args.flumen, tmp, f"clean-{rnd}")
    try:
        b.start(base_config(args, False))
        create_topic(b.bootstrap, topic, {"cleanup.policy": "compact",
                                          "segment.bytes": str(args.segment_mb * MiB),
                                          "min.cleanable.dirty.ratio": "0.01"})
        t0 = time.time()
        prod = bench(bench_cmd(args.flumen, b.bootstrap, topic, "--partitions", 1,
                               "--record-size", args.record_size, "--keys", f"seq:{keys}",
                               "--records", records, "--batch-records", 256, "--acks", 1),
                     timeout=args.timeout)
        build_s = time.time() - t0
        b.stop()
        pdir = b.partition_dir(topic)
        before_bytes, before_segs = log_files(pdir)
        # The cost of starting on this log, cleaner off: subtracted from the cleaning start.
        start_s, start_cpu = b.start(base_config(args, False))
        cpu_a, t_a = b.cpu(), time.time()
        time.sleep(args.settle)
        idle_cpu_per_s = (b.cpu() - cpu_a) / (time.time() - t_a)
        b.stop()
        cold = False if args.hot else drop_caches()
        b.start(base_config(args, True))
        t_spawn = b.t_spawn
        seen, last_change, deadline = None, time.time(), time.time() + args.timeout
        cpu_at = {}
        while True:
            if b.proc.poll() is not None:
                raise RuntimeError(f"flumen exited {b.proc.returncode} while cleaning:\n{b.tail()}")
            m = b.scrape()
            lines = b.cleaned_lines()
            busy = [f for f in os.listdir(pdir) if f.endswith((".cleaned", ".swap"))]
            state = (len(lines), m.get("flumen_log_cleaner_passes_total", 0),
                     m.get("flumen_log_cleaner_read_bytes_total", 0),
                     m.get("flumen_log_cleaner_written_bytes_total", 0), tuple(busy))
            now = time.time()
            cpu_at[now] = b.cpu()
            if state != seen:
                seen, last_change = state, now
            elif lines and not busy and now - last_change >= args.settle:
                break
            if now > deadline:
                raise RuntimeError(f"the cleaner did not settle within {args.timeout}s "
                                   f"({len(lines)} passes logged)")
            time.sleep(0.2)
        t_settle, cpu_settle = time.time(), b.cpu()
        # The last pass ended at its log line; failing a timestamp, when the change was seen.
        t_end = lines[-1][0] or last_change
        m = b.scrape()
        b.stop()
        after_bytes, after_segs = log_files(pdir)
        cleaned_in = sum(x[1] for x in lines)
        cleaned_out = sum(x[2] for x in lines)
        clean_s = t_end - t_spawn - start_s
        if clean_s < 0.05:
            print(f"  warning: cleaning took {clean_s:.3f} s after the start's {start_s:.3f} s: "
                  f"too little to time; use a larger --mb", file=sys.stderr)
            clean_s = max(clean_s, 1e-3)
        cpu = cpu_settle - start_cpu - idle_cpu_per_s * max(t_settle - t_end, 0.0)
        return {
            "records": records, "keys": keys, "produce": prod, "build_s": build_s,
            "segments_before": before_segs, "segments_after": after_segs,
            "log_bytes_before": before_bytes, "log_bytes_after": after_bytes,
            "space_ratio": after_bytes / before_bytes if before_bytes else None,
            "passes": len(lines), "cleaned_input_bytes": cleaned_in,
            "cleaned_output_bytes": cleaned_out,
            "cleaner_read_bytes": m.get("flumen_log_cleaner_read_bytes_total", 0),
            "cleaner_written_bytes": m.get("flumen_log_cleaner_written_bytes_total", 0),
            "start_s": start_s, "start_cpu_s": start_cpu, "idle_cpu_per_s": idle_cpu_per_s,
            "clean_s": clean_s, "cpu_s": cpu, "cold_cache": cold,
            "mb_per_sec": cleaned_in / 1e6 / clean_s,
            "cpu_s_per_gb": cpu / (cleaned_in / 1e9) if cleaned_in else None,
        }
    finally:
        b.stop()
        if not args.keep:
            shutil.rmtree(b.dir, ignore_errors=True)


def run_latency(args, tmp, rnd, cleaner):
    """Measured produce latency beside a keyed background load on a compacted topic."""
    name = "on" if cleaner else "off"
    b = Broker(args.flumen, tmp, f"{name}-{rnd}")
    bg = None
    try:
        b.start(base_config(args, cleaner))
        create_topic(b.bootstrap, "bg", {"cleanup.policy": "compact",
                                         "segment.bytes": str(MiB),
                                         "min.cleanable.dirty.ratio": "0.01"})
        create_topic(b.bootstrap, "measured", {}, partitions=args.partitions)
        bg_duration = args.warmup + args.seconds + 4
        bg_cmd = bench_cmd(args.flumen, b.bootstrap, "bg", "--partitions", 1,
                           "--record-size", args.record_size, "--keys", f"seq:{args.bg_keys}",
                           "--rate", args.bg_rate, "--duration", bg_duration,
                           "--connections", 1, "--batch-records", 64, "--acks", 1)
        bg = subprocess.Popen(bg_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        LIVE.add(bg)
        time.sleep(args.warmup)
        if bg.poll() is not None:
            raise RuntimeError(f"the background producer exited {bg.returncode}: "
                               f"{bg.stderr.read()[-2000:]}")
        m0, cpu0, t0 = b.scrape(), b.cpu(), time.time()
        r = bench(bench_cmd(args.flumen, b.bootstrap, "measured", "--partitions", args.partitions,
                            "--record-size", args.record_size, "--rate", args.rate,
                            "--duration", args.seconds, "--acks", 1),
                  timeout=args.seconds + 120)
        cpu1, t1 = b.cpu(), time.time()
        time.sleep(1.2)  # metrics are published once a second
        m1 = b.scrape()
        out, err = bg.communicate(timeout=bg_duration + 120)
        LIVE.discard(bg)
        if bg.returncode != 0:
            raise RuntimeError(f"the background producer exited {bg.returncode}: {err[-2000:]}")
        bgr = json.loads(out.strip().splitlines()[-1])
        bg_bytes_per_s = bgr["bytes"] / bgr["seconds"]
        produced = r["bytes"] + bg_bytes_per_s * (t1 - t0)
        d = {k: m1.get(k, 0) - m0.get(k, 0) for k in
             ("flumen_log_cleaner_passes_total", "flumen_log_cleaner_read_bytes_total",
              "flumen_log_cleaner_written_bytes_total")}
        lat = r["latency_ms"]
        return {
            "cleaner": cleaner, "mb_per_sec": r["mb_per_sec"],
            "records_per_sec": r["records_per_sec"],
            "p50_ms": lat["p50"], "p99_ms": lat["p99"], "p99_9_ms": lat.get("p99_9"),
            "bench": r, "background": bgr, "bg_mb_per_sec": bg_bytes_per_s / 1e6,
            "cpu_s": cpu1 - cpu0, "produced_bytes": produced,
            "cpu_s_per_gb": (cpu1 - cpu0) / (produced / 1e9),
            "cleaner_passes": d["flumen_log_cleaner_passes_total"],
            "cleaner_read_mb_per_sec": d["flumen_log_cleaner_read_bytes_total"] / 1e6 / (t1 - t0),
            "cleaner_written_mb_per_sec":
                d["flumen_log_cleaner_written_bytes_total"] / 1e6 / (t1 - t0),
            "bg_log_bytes_end": log_files(b.partition_dir("bg"))[0],
        }
    finally:
        if bg is not None and bg.poll() is None:
            bg.kill()
            bg.communicate()
        if bg is not None:
            LIVE.discard(bg)
        b.stop()
        if not args.keep:
            shutil.rmtree(b.dir, ignore_errors=True)


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")


def per_round(xs, fmt):
    return "/".join(fmt.format(x) if x is not None else "–" for x in xs)


def report(args, res, command):
    fios, cl, off, on = res["fio"], res["clean"], res["off"], res["on"]
    rounds = max(len(v) for v in res.values())
    lines = [f"`{command}`", "",
             f"{rounds} round(s), one shard, {args.record_size}-byte values; "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, "
             f"kernel {os.uname().release}. Medians (per round after them):", "",
             "| measurement | result | ratio | per round |", "|---|---|---|---|"]
    fw = median([f["fio_write_mb_s"] for f in fios]) if fios else None
    fr = median([f["fio_read_mb_s"] for f in fios]) if fios else None
    if fios:
        eng = fios[0]["fio_engine"]
        lines.append(f"| fio seq write O_DIRECT 1 MiB ({eng}, qd16, {args.fio_mb} MiB file) | "
                     f"{fw:.0f} MB/s | limit | {per_round([f['fio_write_mb_s'] for f in fios], '{:.0f}')} |")
        lines.append(f"| fio seq read O_DIRECT 1 MiB ({eng}, qd16) | {fr:.0f} MB/s | limit | "
                     f"{per_round([f['fio_read_mb_s'] for f in fios], '{:.0f}')} |")
    if cl:
        c0 = cl[0]
        mbs = [c["mb_per_sec"] for c in cl]
        ratios = []
        if fios and len(fios) == len(cl):
            vs_r = median([c["mb_per_sec"] / f["fio_read_mb_s"] for c, f in zip(cl, fios)])
            vs_w = median([c["mb_per_sec"] / f["fio_write_mb_s"] for c, f in zip(cl, fios)])
            ratios = [f"{100 * vs_r:.0f}% of fio read", f"{100 * vs_w:.0f}% of fio write"]
        cache = "cold page cache" if all(c["cold_cache"] for c in cl) else "page cache warm"
        lines.append(
            f"| cleaner throughput: {args.mb} MB dirty log, {c0['keys']} keys × {args.updates} "
            f"updates, {args.segment_mb} MiB segments, {c0['segments_before']} segments, "
            f"unthrottled, {cache} | {median(mbs):.0f} MB/s cleaned "
            f"({median([c['clean_s'] for c in cl]):.2f} s, {median([c['passes'] for c in cl]):.0f} "
            f"pass(es)) | {', '.join(ratios) or '–'} | {per_round(mbs, '{:.0f}')} |")
        cpu = [c["cpu_s_per_gb"] for c in cl]
        lines.append(f"| cleaner broker CPU | {median(cpu):.2f} CPU s/GB cleaned | – | "
                     f"{per_round(cpu, '{:.2f}')} |")
        rd = median([c["cleaner_read_bytes"] / c["cleaned_input_bytes"] for c in cl
                     if c["cleaned_input_bytes"]])
        lines.append(f"| cleaner reads per byte cleaned (flumen_log_cleaner_read_bytes_total) | "
                     f"{rd:.2f} | – | {per_round([c['cleaner_read_bytes'] / 1e6 for c in cl], '{:.0f} MB')} |")
        sb = median([c["log_bytes_before"] for c in cl])
        sa = median([c["log_bytes_after"] for c in cl])
        sr = [c["space_ratio"] for c in cl]
        lines.append(f"| space (.log files after a clean stop) | {sb / 1e6:.1f} MB → {sa / 1e6:.1f} MB "
                     f"({median([c['segments_before'] for c in cl]):.0f} → "
                     f"{median([c['segments_after'] for c in cl]):.0f} non-empty segments; the active "
                     f"segment is never cleaned) | {100 * median(sr):.1f}% of before | "
                     f"{per_round(sr, '{:.3f}')} |")
    if off or on:
        lines += ["", f"Produce latency beside a keyed background producer ({args.bg_rate} rec/s, "
                  f"{args.bg_keys} keys, compacted topic of 1 MiB segments, min.cleanable.dirty."
                  f"ratio 0.01): `flumen bench produce --rate {args.rate} --record-size "
                  f"{args.record_size} --partitions {args.partitions} --acks 1` for "
                  f"{args.seconds} s after {args.warmup} s of warm-up, to a delete-policy topic.", "",
                  "| cleaner | p50 ms | p99 ms | p99.9 ms | MB/s (measured / background) | "
                  "broker CPU s/GB (both producers) | cleaner read MB/s, passes | p99 per round |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, rs in (("off", off), ("on", on)):
            if not rs:
                continue
            lines.append(
                f"| {name} | {median([r['p50_ms'] for r in rs]):.2f} | "
                f"{median([r['p99_ms'] for r in rs]):.2f} | "
                f"{median([r['p99_9_ms'] for r in rs]):.2f} | "
                f"{median([r['mb_per_sec'] for r in rs]):.1f} / "
                f"{median([r['bg_mb_per_sec'] for r in rs]):.1f} | "
                f"{median([r['cpu_s_per_gb'] for r in rs]):.2f} | "
                f"{median([r['cleaner_read_mb_per_sec'] for r in rs]):.1f}, "
                f"{median([r['cleaner_passes'] for r in rs]):.0f} | "
                f"{per_round([r['p99_ms'] for r in rs], '{:.2f}')} |")
        if off and on:
            n = min(len(off), len(on))
            p99 = median([on[i]["p99_ms"] / off[i]["p99_ms"] for i in range(n) if off[i]["p99_ms"]])
            p50 = median([on[i]["p50_ms"] / off[i]["p50_ms"] for i in range(n) if off[i]["p50_ms"]])
            cpu = median([on[i]["cpu_s_per_gb"] - off[i]["cpu_s_per_gb"] for i in range(n)])
            lines += ["", f"- p99 with the cleaner on / off: **{100 * p99:.0f}%** (p50: "
                      f"{100 * p50:.0f}%; medians of per-round ratios)",
                      f"- the cleaner's broker CPU beside that load (on - off): **{cpu:.2f} CPU s/GB** "
                      f"produced"]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true",
                    help="a tiny smoke run (small sizes, short runs); explicit options still win")
    ap.add_argument("--flumen", default=os.environ.get(
        "FLUMEN_BIN", os.path.join(ROOT, "target", "release", "flumen")))
    ap.add_argument("--dir", default=None,
                    help="where the brokers' data dirs and fio's file go (default: TMPDIR)")
    ap.add_argument("--steps", default=",".join(STEPS), help=f"subset of {','.join(STEPS)}")
    ap.add_argument("--mb", type=int, default=None, help="dirty log size, MB (default 512)")
    ap.add_argument("--updates", type=int, default=10, help="records per key in the dirty log")
    ap.add_argument("--segment-mb", type=int, default=None, help="dirty log segment.bytes, MiB (64)")
    ap.add_argument("--record-size", type=int, default=1024)
    ap.add_argument("--dedupe-buffer-mb", type=int, default=None,
                    help="log_cleaner_dedupe_buffer_bytes in MiB (default: the broker's)")
    ap.add_argument("--fio-mb", type=int, default=None, help="fio file size, MiB (1024)")
    ap.add_argument("--fio-seconds", type=int, default=None, help="per fio job (10)")
    ap.add_argument("--hot", action="store_true",
                    help="do not drop the page cache before the cleaning start")
    ap.add_argument("--settle", type=float, default=None,
                    help="seconds without a pass or a counter change that end the cleaning (3)")
    ap.add_argument("--rate", type=int, default=None, help="measured producer records/s (10000)")
    ap.add_argument("--partitions", type=int, default=8, help="of the measured topic")
    ap.add_argument("--seconds", type=int, default=None, help="measured producer run (10)")
    ap.add_argument("--warmup", type=float, default=None, help="background alone first (4)")
    ap.add_argument("--bg-rate", type=int, default=None, help="background records/s (10000)")
    ap.add_argument("--bg-keys", type=int, default=None, help="background key space (5000)")
    ap.add_argument("--timeout", type=float, default=None,
                    help="bound on building the dirty log and on cleaning it, seconds (900)")
    ap.add_argument("--keep", action="store_true", help="keep the data dirs (and broker logs)")
    ap.add_argument("--out", default=None, help="every round's figures as JSON")
    args = ap.parse_args()
    defaults = dict(mb=512, segment_mb=64, fio_mb=1024, fio_seconds=10, settle=3.0, rate=10000,
                    seconds=10, warmup=4.0, bg_rate=10000, bg_keys=5000, timeout=900.0)
    quick = dict(mb=32, segment_mb=4, fio_mb=64, fio_seconds=2, settle=1.5, rate=2000,
                 seconds=3, warmup=2.0, bg_rate=3000, bg_keys=500, timeout=60.0)
    for k, v in (quick if args.quick else defaults).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    if set(steps) - set(STEPS):
        sys.exit(f"unknown step(s) {sorted(set(steps) - set(STEPS))}: choose from {STEPS}")
    if not os.access(args.flumen, os.X_OK):
        sys.exit(f"no flumen binary at {args.flumen} (build it, or set FLUMEN_BIN / --flumen)")
    if "fio" in steps and not shutil.which("fio"):
        sys.exit("fio is not on PATH (apt-get install -y fio)")
    command = "python3 benches/compaction.py " + " ".join(sys.argv[1:])

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_term)

    res = {k: [] for k in STEPS}
    started = time.time()
    tmp = tempfile.mkdtemp(prefix="flumen-compaction-", dir=args.dir)
    try:
        for rnd in range(args.rounds):
            order = [s for s in STEPS if s in steps]
            if rnd % 2:
                order.reverse()
            for step in order:
                if step == "fio":
                    r = run_fio(args, tmp)
                    msg = f"fio write {r['fio_write_mb_s']:.0f} MB/s, read {r['fio_read_mb_s']:.0f} MB/s"
                elif step == "clean":
                    r = run_clean(args, tmp, rnd)
                    msg = (f"cleaned {r['cleaned_input_bytes'] / 1e6:.1f} MB in {r['clean_s']:.2f} s "
                           f"({r['passes']} passes) = {r['mb_per_sec']:.0f} MB/s, "
                           f"{r['cpu_s_per_gb']:.2f} CPU s/GB; .log {r['log_bytes_before'] / 1e6:.1f} "
                           f"-> {r['log_bytes_after'] / 1e6:.1f} MB; built at "
                           f"{r['produce']['mb_per_sec']:.0f} MB/s; start {r['start_s']:.2f} s "
                           f"{r['start_cpu_s']:.2f} CPU s; cold cache {r['cold_cache']}")
                else:
                    r = run_latency(args, tmp, rnd, step == "on")
                    msg = (f"p50 {r['p50_ms']:.2f} p99 {r['p99_ms']:.2f} p99.9 "
                           f"{r['p99_9_ms'] if r['p99_9_ms'] is not None else float('nan'):.2f} ms, "
                           f"{r['mb_per_sec']:.1f} MB/s + background {r['bg_mb_per_sec']:.1f} MB/s, "
                           f"{r['cpu_s_per_gb']:.2f} CPU s/GB, cleaner {r['cleaner_passes']:.0f} "
                           f"passes read {r['cleaner_read_mb_per_sec']:.1f} MB/s")
                res[step].append(r)
                print(f"round {rnd + 1} {step}: {msg}", file=sys.stderr, flush=True)
    finally:
        kill_all()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}", file=sys.stderr)
    print(report(args, res, command))
    print(f"\n(run took {time.time() - started:.0f} s)", file=sys.stderr)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "command": command, "results": res}, f, indent=1)


if __name__ == "__main__":
    main()
