"""SANDBOX=strict refuses to run user code where the kernel lacks what it needs, and says why;
SANDBOX=process runs it anyway, with a warning. Folders of a host that died go at the next start."""
import os
import signal
import sys
import time

import pytest
import requests

from tests.e2e.conftest import start_host, stop_host
from tests.e2e.helpers import execute, new_session, publish
from tests.security.conftest import Host

pytestmark = [pytest.mark.azurite, pytest.mark.e2e]


def without(feature: str) -> tuple[str, ...]:
    return (sys.executable, "-m", "tests.security.without", feature)


@pytest.fixture
def started(azurite):
    procs = []

    def start(**kwargs):
        proc, url = start_host(**{"SPARE_WORKERS": "0", **kwargs})
        procs.append(proc)
        return Host(url, proc.pid)

    yield start
    for proc in procs:
        if proc.poll() is None:
            stop_host(proc)


@pytest.mark.parametrize("feature, named", [("landlock", "Landlock ABI 6+ (this kernel offers none)"),
                                            ("seccomp", "seccomp (seccomp user notification is unavailable")])
def test_strict_refuses_user_code_on_a_kernel_without_the_mechanisms(started, feature, named):
    host = started(prefix=without(feature))
    alice = host.login("alice")
    r = requests.get(f"{host.url}/status", headers=alice)
    assert r.status_code == 503 and "Retry-After" in r.headers
    status = r.json()
    assert status["statusCode"] == "fail"
    sandbox = status["components"]["sandbox"]
    assert sandbox["statusCode"] == "fail" and named in sandbox["details"]["error"]
    sid = new_session(host.url, alice)
    r = requests.post(f"{host.url}/sessions/{sid}/execute", json={"code": "x = 1"}, headers=alice)
    assert r.status_code == 503 and named in r.json()["message"] and "SANDBOX=process" in r.json()["message"]
    assert "Retry-After" in r.headers
    name = publish(host.url, alice, "y = 1", outputs=[{"name": "y", "type": "numeric"}])
    r = requests.post(f"{host.url}/api/{name}/v1", json={}, headers=alice)
    assert r.status_code == 503 and named in r.json()["message"]


def test_process_mode_runs_user_code_there_and_warns(started):
    host = started(prefix=without("landlock"), SANDBOX="process")
    alice = host.login("alice")
    sandbox = requests.get(f"{host.url}/status", headers=alice).json()["components"]["sandbox"]
    assert sandbox["statusCode"] == "warn" and "SANDBOX=process" in sandbox["details"]["warning"]
    out = execute(host.url, alice, new_session(host.url, alice), "import sklearn.svm\nx = 1", outputParameters=["x"])
    assert out["success"] is True and out["outputParameters"] == [{"name": "x", "value": 1}]


def test_worker_folders_of_a_host_that_died_are_removed_at_the_next_start(started):
    first = started()
    alice = first.login("alice")
    out = execute(first.url, alice, new_session(first.url, alice), "import os\nhere = os.getcwd()",
                  outputParameters=["here"])
    folder = os.path.dirname(out["outputParameters"][0]["value"])
    os.kill(first.pid, signal.SIGKILL)
    time.sleep(0.5)
    assert os.path.isdir(folder)
    second = started(SPARE_WORKERS="1")  # the spare it starts at once creates its own folder
    deadline = time.monotonic() + 20
    while os.path.isdir(folder) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not os.path.isdir(folder)
    assert second.healthy(second.login("alice"))
