#!/usr/bin/env python3
"""What the authorizer and quotas cost on the data path: produce and consume 1 KiB records
with rdkafka_performance against three brokers started side by side, used one at a time in
alternating rounds:

  open   no authorizer, no quotas (the default)
  acl    authorizer_enabled with --acls ACLs for other principals, and the client allowed by a
         prefixed ACL (every produce and fetch is checked)
  quota  quotas set for the client's user and client id, high enough never to throttle (every
         request is metered)

Medians of the rates and the broker's CPU seconds per GB (from /proc), each as a ratio to
`open` in the same run.

  python3 benches/authz.py [--rounds 3] [--records 1000000] [--acls 1000]

Prints a markdown table and the raw rounds as JSON on stderr."""
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from security import common_args, free_port, produce_consume, wait_port  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADMIN = {"FLUMEN_SASL_USERNAME": "admin", "FLUMEN_SASL_PASSWORD": "admin-pw"}


def start(flumen, d, name, extra):
    """A broker with a PLAINTEXT listener (the bench's) and a SASL one (the admin's)."""
    os.makedirs(os.path.join(d, name))
    plain, sasl = free_port(), free_port()
    users = os.path.join(d, "users.toml")
    cfg = os.path.join(d, name, "flumen.toml")
    with open(cfg, "w") as f:
        f.write(f'listeners = ["PLAINTEXT://127.0.0.1:{plain}", '
                f'"SASL_PLAINTEXT://127.0.0.1:{sasl}"]\n')
        f.write(f'sasl_plain_users_file = "{users}"\n')
        f.write(f'data_dir = "{os.path.join(d, name, "data")}"\n{extra}')
    log = open(os.path.join(d, name, "broker.log"), "w")
    proc = subprocess.Popen([flumen, "serve", "--config", cfg], stdout=log, stderr=log)
    wait_port(plain)
    wait_port(sasl)
    return {"proc": proc, "plain": f"127.0.0.1:{plain}", "sasl": f"127.0.0.1:{sasl}",
            "log": log}


def cli(flumen, b, *args):
    subprocess.run([flumen, *args, "--bootstrap", b["sasl"]], check=True, capture_output=True,
                   env={**os.environ, **ADMIN})


def main():
    ap = common_args(__doc__, "target/rdkafka/rdkafka_performance", 1_000_000)
    ap.add_argument("--acls", type=int, default=1000)
    args = ap.parse_args()
    rdk = args.rdkafka_performance
    ssl_build = os.path.join(ROOT, "target/rdkafka-ssl/rdkafka_performance")
    if not os.path.exists(rdk) and os.path.exists(ssl_build):
        rdk = ssl_build
    if not os.path.exists(rdk):
        rdk = subprocess.run([os.path.join(ROOT, "benches/build-rdkafka-performance.sh")],
                             capture_output=True, text=True, check=True).stdout.strip()
    d = tempfile.mkdtemp(prefix="authz-bench-", dir=args.data_dir)
    with open(os.path.join(d, "users.toml"), "w") as f:
        f.write('admin = "admin-pw"\n')
    brokers = {}
    try:
        brokers["open"] = start(args.flumen, d, "open", "")
        brokers["acl"] = start(args.flumen, d, "acl",
                               'authorizer_enabled = true\nsuper_users = ["User:admin"]\n')
        brokers["quota"] = start(args.flumen, d, "quota", "")
        acl = brokers["acl"]
        ops = ["READ", "WRITE", "DESCRIBE", "ALTER"]
        for i in range(args.acls // len(ops)):
            cli(args.flumen, acl, "acls", "add", "--principal", f"User:u{i}", "--topic",
                f"other-{i}", "--operation", ",".join(ops))
        cli(args.flumen, acl, "acls", "add", "--principal", "User:ANONYMOUS", "--topic",
            "bench-", "--prefixed", "--operation", "ALL")
        cli(args.flumen, acl, "acls", "add", "--principal", "User:ANONYMOUS", "--group", "g-",
            "--prefixed", "--operation", "READ")
        q = brokers["quota"]
        for entity in (["--user", "ANONYMOUS"], ["--client-id", "rdkafka"],
                       ["--user", "<default>"]):
            cli(args.flumen, q, "quotas", "set", *entity, "--producer-byte-rate", "1e12",
                "--consumer-byte-rate", "1e12", "--request-percentage", "100000")
        names = list(brokers)
        rounds = []
        for r in range(args.rounds):
            order = names if r % 2 == 0 else names[::-1]
            row = {}
            for name in order:
                b = brokers[name]
                topic = f"bench-{r}"
                subprocess.run([args.flumen, "topics", "create", topic, "-p",
                                str(args.partitions), "--bootstrap", b["plain"]], check=True,
                               capture_output=True)
                row[name] = produce_consume(rdk, args, b["proc"].pid, b["plain"], topic)
                print(f"round {r + 1} {name}: {row[name]}", file=sys.stderr)
            rounds.append(row)
        print(json.dumps(rounds), file=sys.stderr)
        med = lambda n, k: statistics.median(x[n][k] for x in rounds)  # noqa: E731
        print(f"| 1 KiB, {args.partitions} partitions, {args.records} records, {args.acls} "
              f"ACLs, medians of {args.rounds} alternating rounds | open | acl | quota |")
        print("|---|---|---|---|")
        for k, what in [("produce_mb_s", "produce MB/s (acks=1)"),
                        ("produce_cpu_s_per_gb", "broker CPU s/GB produced"),
                        ("consume_mb_s", "consume MB/s"),
                        ("consume_cpu_s_per_gb", "broker CPU s/GB consumed")]:
            o = med("open", k)
            cells = [f"{o:.2f}"] + [f"{med(n, k):.2f} ({med(n, k) / o:.2f}x)"
                                    for n in ("acl", "quota")]
            print(f"| {what} | {' | '.join(cells)} |")
    finally:
        for b in brokers.values():
            b["proc"].send_signal(signal.SIGTERM)
        for b in brokers.values():
            b["proc"].wait(timeout=60)
            b["log"].close()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
