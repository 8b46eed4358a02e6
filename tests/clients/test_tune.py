"""`flumen tune` on this machine: check reads the real files, apply --dry-run prints exactly the
writes that would fix the failing ones, and changes nothing."""
import re
import subprocess

import pytest

from conftest import flumen_bin


def tune(*args):
    out = subprocess.run([flumen_bin(), "tune", *args], capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode()
    return out.stdout.decode()


@pytest.mark.parametrize("profile", ["nvme-10g", "nvme-25g", "jbod-10g", "laptop"])
def test_check_reads_this_host_and_dry_run_writes_nothing(profile):
    out = tune("check", "--profile", profile)
    rows = [l.split() for l in out.splitlines() if re.match(r"^(ok|FAIL|absent|unread|advice) ", l)]
    assert rows, out
    for status, name, current, *rest in rows:
        target = rest[-1]
        if status in ("ok", "FAIL") and target.startswith("/proc/sys/"):
            # What check shows is what the kernel says.
            with open(target) as f:
                assert " ".join(f.read().split()).startswith(current)
    failing = {r[-1] for r in rows if r[0] == "FAIL" and r[-1].startswith("/")}
    before = {p: open(p).read() for p in failing}
    plan = tune("apply", "--profile", profile, "--dry-run")
    writes = re.findall(r"^echo '([^']*)' > (\S+)$", plan, re.M)
    assert {p for _, p in writes} == failing
    assert {p: open(p).read() for p in failing} == before, "a dry run changed the system"


def test_unknown_profile_is_a_clear_error():
    out = subprocess.run([flumen_bin(), "tune", "check", "--profile", "nope"],
                         capture_output=True, timeout=60)
    assert out.returncode != 0
    assert b"no profile nope" in out.stderr
