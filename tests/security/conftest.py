"""A host with small limits for the attacks, and ways to look at the machine from outside."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import pytest
import requests

from tests.client.conftest import cli, server  # noqa: F401 - the client's fixtures, for test_client.py
from tests.constants import USERS
from tests.e2e.conftest import ROOT, start_host, stop_host

LIMITS = {"EXECUTION_TIMEOUT_SECONDS": "3", "WORKER_MEMORY_MB": "1024", "WORKER_MAX_PROCESSES": "12",
          "WORKER_DISK_MB": "20", "MAX_WORKSPACE_MB": "4", "MAX_CONSOLE_BYTES": "10000", "SPARE_WORKERS": "0"}


@dataclass
class Host:
    url: str
    pid: int

    def login(self, user: str) -> dict[str, str]:
        r = requests.post(f"{self.url}/login", json={"username": user, "password": USERS[user]}, timeout=30)
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['access_token']}"}

    def healthy(self, headers: dict[str, str]) -> bool:
        return requests.get(f"{self.url}/status", headers=headers, timeout=10).status_code == 200

    def template_pids(self) -> list[int]:
        """Whoever may be a worker's parent: the API process, or the template it forks from."""
        return [self.pid, *children(self.pid, "--template")]

    def rss_mb(self) -> float:
        with open(f"/proc/{self.pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


@pytest.fixture(scope="session")
def host(azurite):
    proc, url = start_host(**LIMITS)
    host = Host(url, proc.pid)
    template_ready(url, host.login("alice"), proc.pid)  # the attacks meet forked workers, as production's do
    yield host
    stop_host(proc)


def template_ready(url: str, headers: dict[str, str], host_pid: int, within: float = 60) -> int:
    """Wait until the user's new workers are forked from their template (started at their first
    need); returns the template's pid."""
    from tests.e2e.helpers import execute, new_session

    deadline = time.monotonic() + within
    while True:
        out = execute(url, headers, new_session(url, headers), "import os\nparent = os.getppid()",
                      outputParameters=["parent"])
        parent = out["outputParameters"][0]["value"]
        if parent != host_pid or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert parent != host_pid, "no template forks this user's workers"
    return parent


def children(pid: int, marker: str = "") -> list[int]:
    """Child processes of `pid` whose command line holds `marker`."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    if ppid == pid and marker.encode() in f.read():
                        found.append(int(name))
            except (OSError, ValueError, IndexError):
                pass
    return found


@pytest.fixture(scope="session")
def alice(host):
    return host.login("alice")


@pytest.fixture(scope="session")
def bob(host):
    return host.login("bob")


@pytest.fixture
def app_sentinel():
    """A secret-looking file in the app folder, where local.settings.json lives."""
    path = ROOT / f".o16n-sentinel-{os.getpid()}"
    path.write_text("SENTINEL-SECRET")
    yield str(path)
    path.unlink(missing_ok=True)


def processes_with(marker: str) -> list[int]:
    """Pids whose command line holds `marker` (seen from outside the sandbox)."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        found.append(int(name))
            except OSError:
                pass
    return found


def gone(marker: str, within: float = 3.0) -> bool:
    deadline = time.monotonic() + within
    while processes_with(marker):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True
