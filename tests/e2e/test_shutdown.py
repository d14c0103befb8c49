"""`make run` (`python -m devhost run`) stops everything it started, whichever way it is told to
stop: Ctrl-C, a process manager's SIGTERM, a closed terminal's SIGHUP."""
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import requests

from devhost.__main__ import free_port, port_open
from tests.constants import ADMIN_PASSWORD, TEST_ENV
from tests.e2e.conftest import ROOT, start_host
from tests.e2e.helpers import execute, new_session
from tests.security.conftest import processes_with

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_make_run_stops_everything_it_started(tmp_path, how):
    app = tmp_path / "app"  # a copy: `run` writes local.settings.json and .azurite/ beside the app
    shutil.copytree(ROOT, app, ignore=shutil.ignore_patterns(".venv*", "node_modules", ".git", ".azurite",
                                                                "local.settings.json", "__pycache__", "tests"))
    (app / "node_modules").symlink_to(ROOT / "node_modules")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "STORAGE_CONNECTION_STRING"}
    env.update({k: v for k, v in TEST_ENV.items() if k != "STORAGE_CONNECTION_STRING"}, PORT=str(port))
    proc = subprocess.Popen([sys.executable, "-m", "devhost", "run", "--port", str(port)], cwd=app, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not port_open(port):
            assert proc.poll() is None and time.monotonic() < deadline, "make run did not start"
            time.sleep(0.1)
        url = f"http://127.0.0.1:{port}"
        token = requests.post(f"{url}/login", json={"username": "admin", "password": ADMIN_PASSWORD}).json()
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        sid = requests.post(f"{url}/sessions", json={"runtimeType": "Python"}, headers=headers).json()["sessionId"]
        r = requests.post(f"{url}/sessions/{sid}/execute", json={"code": "x = 1"}, headers=headers)
        assert r.json()["success"] is True
        assert len(processes_with(str(app))) >= 5  # the app, three Azurites (blob, queue, table), a worker
        proc.send_signal(how)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while processes_with(str(app)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert processes_with(str(app)) == []
    finally:
        for pid in processes_with(str(app)):
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()


def test_a_test_run_told_to_stop_stops_what_it_started(tmp_path):
    started = tmp_path / "started"
    (tmp_path / "test_waits.py").write_text(
        "import time\n\n\ndef test_waits(azurite):\n"
        f"    open({str(started)!r}, 'w').close()\n    time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest",
                             "--rootdir", str(tmp_path), str(tmp_path / "test_waits.py")], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not started.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the test run did not start"
            time.sleep(0.1)
        azurite = [int(p) for p in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                                  text=True).stdout.split()]
        assert len(azurite) == 3  # blob, queue, table
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while any(os.path.exists(f"/proc/{p}") for p in azurite) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [p for p in azurite if os.path.exists(f"/proc/{p}")]
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.azurite
def test_a_host_stopped_while_it_prepares_a_spare_leaves_no_worker_folder(azurite, tmp_path):
    """The execute takes the spare and the host starts preparing the next one in the background;
    a SIGTERM then must not let that one (or its folder) outlive the shutdown."""
    left = []
    for attempt in range(4):
        tmp = tmp_path / str(attempt)
        tmp.mkdir()
        proc, url = start_host(TMPDIR=str(tmp), WORKER_TEMPLATES="0", SPARE_WORKERS="1")
        try:
            token = requests.post(f"{url}/login", json={"username": "admin", "password": ADMIN_PASSWORD}).json()
            headers = {"Authorization": f"Bearer {token['access_token']}"}
            execute(url, headers, new_session(url, headers), "x = 1")
            time.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
        deadline = time.monotonic() + 10
        while processes_with(str(tmp)) and time.monotonic() < deadline:
            time.sleep(0.2)
        left += [p.name for p in tmp.glob("o16n-*/host-*/w-*")] + processes_with(str(tmp))
    assert left == []
