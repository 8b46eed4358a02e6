"""Starts the real flumen binary for each test: a free port, a temp data dir, stderr captured."""
import os
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def flumen_bin():
    env = os.environ.get("FLUMEN_BIN")
    if env:
        return env
    # The newest build: a stale release binary next to a fresh debug one must not be tested.
    built = [p for p in (REPO / "target" / k / "flumen" for k in ("release", "debug")) if p.exists()]
    if not built:
        raise RuntimeError("build flumen first (cargo build --release) or set FLUMEN_BIN")
    return str(max(built, key=lambda p: p.stat().st_mtime))


def free_port():
    """A free port below the ephemeral range: a client retrying against a stopped broker on
    an ephemeral port can connect to itself and hold the port the broker restarts on."""
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


class Broker:
    def __init__(self, tmp: Path, shards=1, config=None, data_dirs=None, env=None, host="127.0.0.1"):
        self.host = host
        self.port = free_port()
        # Extra environment of the broker process (e.g. FLUMEN_DEBUG_PANIC_TOPIC).
        self.env = env
        self.bootstrap = f"{host}:{self.port}"
        self.data_dir = tmp / "data"
        # Several data dirs (JBOD) instead of data_dir.
        self.data_dirs = data_dirs
        self.shards = shards
        self.log_path = tmp / "broker.log"
        self.config_path = None
        if config:
            self.config_path = tmp / "flumen.toml"
            lines = []
            # "{bootstrap}" in a string stands for this broker's address (listeners name it).
            here = lambda x: x.replace("{bootstrap}", self.bootstrap)  # noqa: E731
            for k, v in config.items():
                if isinstance(v, bool):
                    v = "true" if v else "false"
                elif isinstance(v, str):
                    v = f'"{here(v)}"'
                elif isinstance(v, list):
                    v = "[" + ", ".join(f'"{here(x)}"' for x in v) + "]"
                lines.append(f"{k} = {v}")
            self.config_path.write_text("\n".join(lines) + "\n")
        self.proc = None

    def start(self, timeout=20.0):
        dirs = self.data_dirs or [self.data_dir]
        cmd = [flumen_bin(), "serve", "--listen", self.bootstrap, "--shards", str(self.shards)]
        for d in dirs:
            cmd += ["--data-dir", str(d)]
        if self.config_path:
            cmd += ["--config", str(self.config_path)]
        log = open(self.log_path, "a")
        log.write(f"--- start {' '.join(cmd)}\n")
        log.flush()
        env = dict(os.environ, **self.env) if self.env else None
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"flumen exited with {self.proc.returncode}:\n{self.log()}")
            if self.answers_api_versions():
                return self
            time.sleep(0.05)
        raise RuntimeError(f"flumen did not listen within {timeout}s:\n{self.log()}")

    def answers_api_versions(self):
        """Ready means a Kafka answer, not just a TCP connect: after a kill -9 the dead broker's
        listening socket lingers for a while and still completes handshakes (then resets)."""
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as s:
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

    def stop(self, timeout=20.0):
        """SIGTERM and wait: a clean stop must exit 0."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            rc = self.proc.wait(timeout=timeout)
            assert rc == 0, f"flumen exited {rc} on SIGTERM:\n{self.log()}"
        self.proc = None

    def stop_or_kill(self):
        """A clean stop (asserted by `stop`); the process is killed whatever happens."""
        if self.proc and self.proc.poll() is None:
            try:
                self.stop()
            finally:
                if self.proc and self.proc.poll() is None:
                    self.proc.kill()
                    self.proc.wait()

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None

    def restart(self):
        self.stop()
        return self.start()

    def log(self):
        try:
            return self.log_path.read_text()[-20000:]
        except OSError:
            return ""


TEST_TIME_LIMIT_S = 240


@pytest.fixture(autouse=True)
def time_limit():
    """A hard bound per test on top of the clients' own timeouts: a hung call fails the test
    instead of the whole run."""
    def expired(signum, frame):
        raise TimeoutError(f"test exceeded {TEST_TIME_LIMIT_S}s")
    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(TEST_TIME_LIMIT_S)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture
def broker_factory(tmp_path, request):
    made = []

    def make(shards=1, config=None, name="b", data_dirs=None, env=None):
        d = tmp_path / name
        d.mkdir()
        b = Broker(d, shards=shards, config=config, data_dirs=data_dirs, env=env)
        made.append(b)
        return b.start()

    yield make
    failed = request.node.rep_call.failed if hasattr(request.node, "rep_call") else False
    for b in made:
        if failed:
            print(f"==== broker log ({b.bootstrap}) ====\n{b.log()}")
    # Every test ends with a clean SIGTERM stop: exit code 0 within the timeout.
    for b in made:
        b.stop_or_kill()


@pytest.fixture
def broker(broker_factory):
    return broker_factory()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
