from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from devhost.__main__ import free_port, port_open
from tests.constants import ADMIN_PASSWORD, USERS
from tests.faults import FlakyStorage

STORAGE_DEADLINE = 2.0  # flaky_host's STORAGE_TIMEOUT_SECONDS

ROOT = Path(__file__).resolve().parents[2]


def start_host(*, prefix: tuple[str, ...] = (), **settings: str) -> tuple[subprocess.Popen, str]:
    """The real function_app served by the local host, as `make run` serves it (`prefix`: a
    command that runs it)."""
    port = free_port()
    env = {**os.environ, **settings}
    # The host's own storage, which its queue triggers poll: the storage it keeps its data in,
    # as `make run` sets it (the sample's UseDevelopmentStorage=true means fixed ports).
    if "AzureWebJobsStorage" not in settings:
        env["AzureWebJobsStorage"] = env["STORAGE_CONNECTION_STRING"]
    proc = subprocess.Popen([*prefix, sys.executable, "-m", "devhost", "serve", "--port", str(port)], cwd=ROOT,
                            env=env)
    deadline = time.monotonic() + 60
    while not port_open(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("the local host did not start")
        time.sleep(0.05)
    return proc, f"http://127.0.0.1:{port}"


def stop_host(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def base_url(azurite):
    proc, url = start_host()
    yield url
    stop_host(proc)


@pytest.fixture(scope="session")
def strict_url(azurite):
    """A second host on the same storage, with tight limits for the sandbox tests."""
    proc, url = start_host(EXECUTION_TIMEOUT_SECONDS="3", WORKER_MEMORY_MB="1024", MAX_CONSOLE_BYTES="10000")
    yield url
    stop_host(proc)


def _login(base_url: str, user: str, password: str) -> dict[str, str]:
    r = requests.post(f"{base_url}/login", json={"username": user, "password": password}, timeout=30)
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


@pytest.fixture(scope="session")
def admin(base_url) -> dict[str, str]:
    return _login(base_url, "admin", ADMIN_PASSWORD)


@pytest.fixture(scope="session")
def alice(base_url) -> dict[str, str]:
    return _login(base_url, "alice", USERS["alice"])


@pytest.fixture(scope="session")
def bob(base_url) -> dict[str, str]:
    return _login(base_url, "bob", USERS["bob"])


@pytest.fixture(scope="session")
def rita(base_url) -> dict[str, str]:
    """A Reader."""
    return _login(base_url, "rita", USERS["rita"])


@pytest.fixture(scope="module")
def flaky_storage(tmp_path_factory):
    """Per module: storage its tests may pause, stop or cut."""
    s = FlakyStorage(tmp_path_factory.mktemp("azurite"))
    yield s
    s.signal(signal.SIGCONT)
    s.stop()
    for p in s.proxies:
        p.close()


@pytest.fixture(scope="module")
def flaky_host(flaky_storage):
    """A host on flaky_storage, with a storage deadline of STORAGE_DEADLINE seconds."""
    proc, url = start_host(STORAGE_CONNECTION_STRING=flaky_storage.connection_string,
                           STORAGE_TIMEOUT_SECONDS=str(STORAGE_DEADLINE), SERVICE_CACHE_TTL_SECONDS="0.2")
    yield url
    stop_host(proc)


@pytest.fixture(scope="module")
def flaky_alice(flaky_host):
    r = requests.post(f"{flaky_host}/login", json={"username": "alice", "password": USERS["alice"]}, timeout=30)
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}
