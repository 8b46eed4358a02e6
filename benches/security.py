#!/usr/bin/env python3
"""What encryption and authentication cost: produce and consume 1 KiB records over SASL_SSL
(TLS + SCRAM-SHA-512) as a ratio to PLAINTEXT, on one broker, in alternating rounds, with the
broker's CPU seconds per GB beside each rate (from /proc). The load generator is librdkafka's
rdkafka_performance built with OpenSSL (RDKAFKA_SSL=1 benches/build-rdkafka-performance.sh).

  python3 benches/security.py [--rounds 3] [--records 300000] [--partitions 8]

Prints a markdown table (medians) and the raw rounds as JSON on stderr."""
import argparse
import datetime
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20.0):
    """Until something accepts connections on 127.0.0.1:`port`."""
    deadline = time.time() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)


def make_certs(d):
    """A CA and a broker certificate for 127.0.0.1 (Python's cryptography)."""
    import ipaddress
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    now = datetime.datetime.now(datetime.timezone.utc)
    nm = lambda cn: x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])  # noqa: E731
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(nm("bench CA")).issuer_name(nm("bench CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=7))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(nm("broker")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = {n: os.path.join(d, n) for n in ("ca.pem", "broker.pem", "broker.key")}
    with open(paths["ca.pem"], "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(paths["broker.pem"], "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(paths["broker.key"], "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return paths


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rdkafka_summary(rdk, args, timeout=900):
    """Runs rdkafka_performance: (records/s, MB/s) of its summary line (producer: "N msgs/s and
    M MB/s", consumer: "N msgs/s (M MB/s)")."""
    r = subprocess.run([rdk, *args], capture_output=True, text=True, timeout=timeout)
    out = r.stdout + r.stderr
    m = re.findall(r"(\d+) msgs/s (?:and |\()([\d.]+) MB/s", out)
    if r.returncode != 0 or not m:
        raise RuntimeError(f"rdkafka_performance {' '.join(args[:3])}: {out[-800:]}")
    return int(m[-1][0]), float(m[-1][1])


def rdkafka(rdk, args, timeout=900):
    return rdkafka_summary(rdk, args, timeout)[1]


def common_args(doc, rdkafka_default, records):
    """The options this bench and benches/authz.py share."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--flumen", default=os.path.join(ROOT, "target/release/flumen"))
    ap.add_argument("--rdkafka-performance", default=os.path.join(ROOT, rdkafka_default))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--records", type=int, default=records)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--data-dir", default=None)
    return ap


def produce_consume(rdk, args, pid, bootstrap, topic, extra=()):
    """Produces args.records records of args.size bytes to `topic` (acks=1), then consumes
    them from the start in a group: rates and the broker's (`pid`) CPU seconds per GB."""
    gb = args.records * args.size / 1e9
    c0 = cpu_seconds(pid)
    produce = rdkafka(rdk, ["-P", "-t", topic, "-b", bootstrap, "-s", str(args.size),
                            "-c", str(args.records), "-a", "1", "-q",
                            "-X", "linger.ms=5", "-X", "batch.size=1000000",
                            "-X", "queue.buffering.max.kbytes=1048576", *extra])
    c1 = cpu_seconds(pid)
    consume = rdkafka(rdk, ["-C", "-G", f"g-{topic}", "-t", topic, "-b", bootstrap,
                            "-c", str(args.records), "-q",
                            "-X", "auto.offset.reset=earliest", *extra])
    c2 = cpu_seconds(pid)
    return {"produce_mb_s": produce, "produce_cpu_s_per_gb": (c1 - c0) / gb,
            "consume_mb_s": consume, "consume_cpu_s_per_gb": (c2 - c1) / gb}


def main():
    ap = common_args(__doc__, "target/rdkafka-ssl/rdkafka_performance", 300_000)
    ap.add_argument("--shards", type=int, default=0)
    args = ap.parse_args()
    rdk = args.rdkafka_performance
    if not os.path.exists(rdk):
        rdk = subprocess.run([os.path.join(ROOT, "benches/build-rdkafka-performance.sh")],
                             env={**os.environ, "RDKAFKA_SSL": "1"}, capture_output=True,
                             text=True, check=True).stdout.strip()
    d = tempfile.mkdtemp(prefix="security-bench-", dir=args.data_dir)
    certs = make_certs(d)
    plain_port, tls_port = free_port(), free_port()
    cfg = os.path.join(d, "flumen.toml")
    with open(cfg, "w") as f:
        f.write(f'listeners = ["PLAINTEXT://127.0.0.1:{plain_port}", '
                f'"SASL_SSL://127.0.0.1:{tls_port}"]\n')
        f.write(f'ssl_certificate_file = "{certs["broker.pem"]}"\n')
        f.write(f'ssl_key_file = "{certs["broker.key"]}"\n')
        f.write(f'data_dir = "{os.path.join(d, "data")}"\nshards = {args.shards}\n')
    log = open(os.path.join(d, "broker.log"), "w")
    proc = subprocess.Popen([args.flumen, "serve", "--config", cfg], stdout=log, stderr=log)
    plain = f"127.0.0.1:{plain_port}"
    try:
        wait_port(plain_port)
        subprocess.run([args.flumen, "users", "create", "bench", "--password", "bench-secret",
                        "--bootstrap", plain], check=True, capture_output=True)
        security = {
            "PLAINTEXT": (plain, []),
            "SASL_SSL": (f"127.0.0.1:{tls_port}", [
                "-X", "security.protocol=SASL_SSL", "-X", "sasl.mechanisms=SCRAM-SHA-512",
                "-X", "sasl.username=bench", "-X", "sasl.password=bench-secret",
                "-X", f"ssl.ca.location={certs['ca.pem']}"]),
        }
        rounds = []
        for r in range(args.rounds):
            order = ["PLAINTEXT", "SASL_SSL"] if r % 2 == 0 else ["SASL_SSL", "PLAINTEXT"]
            row = {}
            for name in order:
                bootstrap, extra = security[name]
                topic = f"sec-{r}-{name.lower()}"
                subprocess.run([args.flumen, "topics", "create", topic, "-p",
                                str(args.partitions), "--bootstrap", plain], check=True,
                               capture_output=True)
                row[name] = produce_consume(rdk, args, proc.pid, bootstrap, topic, extra)
                print(f"round {r + 1} {name}: {row[name]}", file=sys.stderr)
            rounds.append(row)
        print(json.dumps(rounds), file=sys.stderr)
        med = lambda n, k: statistics.median(x[n][k] for x in rounds)  # noqa: E731
        print(f"| 1 KiB, {args.partitions} partitions, {args.records} records, medians of "
              f"{args.rounds} alternating rounds | PLAINTEXT | SASL_SSL | ratio |")
        print("|---|---|---|---|")
        for k, what in [("produce_mb_s", "produce MB/s (acks=1)"),
                        ("produce_cpu_s_per_gb", "broker CPU s/GB produced"),
                        ("consume_mb_s", "consume MB/s"),
                        ("consume_cpu_s_per_gb", "broker CPU s/GB consumed")]:
            p, t = med("PLAINTEXT", k), med("SASL_SSL", k)
            print(f"| {what} | {p:.2f} | {t:.2f} | {t / p:.2f}x |")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
