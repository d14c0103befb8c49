"""A host with small limits for the attacks, and ways to look at the machine from outside."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import pytest
import requests

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

    def rss_mb(self) -> float:
        with open(f"/proc/{self.pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


@pytest.fixture(scope="session")
def host(azurite):
    proc, url = start_host(**LIMITS)
    yield Host(url, proc.pid)
    stop_host(proc)


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
