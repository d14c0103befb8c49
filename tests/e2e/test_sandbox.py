"""User code runs in worker processes: no secrets, bounded time, memory and output, and a
killed worker costs nothing but the call that killed it."""
import os
import signal
import subprocess
import threading
import time

import pytest
import requests

from tests.constants import TEST_ENV
from tests.e2e.conftest import start_host, stop_host
from tests.e2e.helpers import execute, new_session, publish, snapshot

pytestmark = [pytest.mark.azurite, pytest.mark.e2e]


def test_user_code_sees_none_of_the_hosts_settings(strict_url, alice):
    sid = new_session(strict_url, alice)
    out = execute(strict_url, alice, sid, "import os\nenv = dict(os.environ)\npid = os.getpid()\nppid = os.getppid()",
                  outputParameters=["env", "pid", "ppid"])
    values = {p["name"]: p["value"] for p in out["outputParameters"]}
    env = values["env"]
    for key in ("TOKEN_SIGNING_KEY", "SNAPSHOT_SIGNING_KEY", "STORAGE_CONNECTION_STRING", "LOCAL_ADMIN_PASSWORD",
                "LOCAL_USERS"):
        assert key not in env
    text = repr(env)
    assert TEST_ENV["TOKEN_SIGNING_KEY"] not in text and "AccountKey" not in text
    assert values["pid"] != os.getpid()


def test_code_that_runs_too_long_is_stopped_and_the_session_keeps_its_last_state(strict_url, alice):
    sid = new_session(strict_url, alice)
    execute(strict_url, alice, sid, "kept = 'before'")
    start = time.monotonic()
    out = execute(strict_url, alice, sid, "kept = 'during'\nimport subprocess\n"
                  "subprocess.Popen(['sleep', '300'])\nwhile True: pass")
    assert time.monotonic() - start < 8
    assert out["success"] is False and "did not finish within 3 seconds" in out["errorMessage"]
    out = execute(strict_url, alice, sid, "", outputParameters=["kept"])
    assert out["success"] is True and out["outputParameters"] == [{"name": "kept", "value": "before"}]


def test_a_service_that_hangs_answers_success_false_and_recovers(strict_url, alice):
    name = publish(strict_url, alice, "import time\nif x: time.sleep(1000)\ny = 1",
                   inputs=[{"name": "x", "type": "logical"}], outputs=[{"name": "y", "type": "numeric"}])
    start = time.monotonic()
    r = requests.post(f"{strict_url}/api/{name}/v1", json={"x": True}, headers=alice)
    assert r.status_code == 200 and time.monotonic() - start < 8
    assert r.json()["success"] is False and "3 seconds" in r.json()["errorMessage"]
    r = requests.post(f"{strict_url}/api/{name}/v1", json={"x": False}, headers=alice)
    assert r.json()["success"] is True and r.json()["outputParameters"] == {"y": 1.0}


def test_memory_beyond_the_limit_fails_the_call_not_the_host(strict_url, alice):
    sid = new_session(strict_url, alice)
    out = execute(strict_url, alice, sid, "x = bytearray(3 * 1024**3)")
    assert out["success"] is False and "MemoryError" in out["errorMessage"]
    assert execute(strict_url, alice, sid, "y = 1")["success"] is True
    assert requests.get(f"{strict_url}/status", headers=alice).status_code == 200


def test_console_output_is_capped(strict_url, alice):
    sid = new_session(strict_url, alice)
    out = execute(strict_url, alice, sid, "print('x' * 1000000)")
    assert out["success"] is True
    assert len(out["consoleOutput"]) < 11000 and out["consoleOutput"].endswith("[console output truncated]\n")


def test_unpicklable_objects_are_dropped_from_the_workspace_with_a_note(strict_url, alice):
    sid = new_session(strict_url, alice)
    out = execute(strict_url, alice, sid, "import threading\nlock = threading.Lock()\nkeep = 1")
    assert out["success"] is True and "'lock' cannot be saved" in out["consoleOutput"]


def test_everything_survives_a_restart_of_the_api_process(azurite, alice):
    proc, url = start_host()
    try:
        sid = new_session(url, alice)
        execute(url, alice, sid, "import numpy as np\nw = np.arange(3)")
        name = publish(url, alice, "z = list(w * k)", inputs=[{"name": "k", "type": "integer"}],
                       outputs=[{"name": "z", "type": "vector"}], snapshot_id=snapshot(url, alice, sid))
    finally:
        stop_host(proc)
    proc, url = start_host()
    try:
        out = execute(url, alice, sid, "w = w + 1", outputParameters=["w"])
        assert out["outputParameters"] == [{"name": "w", "value": [1, 2, 3]}]
        r = requests.post(f"{url}/api/{name}/v1", json={"k": 2}, headers=alice)
        assert r.json()["outputParameters"] == {"z": [0, 2, 4]}
    finally:
        stop_host(proc)


def descendants(pid: int) -> list[int]:
    out = [int(p) for p in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()]
    return out + [d for child in out for d in descendants(child)]


def test_workers_do_not_outlive_a_host_that_dies(azurite, alice):
    from tests.security.conftest import template_ready

    proc, url = start_host()
    template_ready(url, alice, proc.pid)
    sid = new_session(url, alice)

    def busy():
        try:
            requests.post(f"{url}/sessions/{sid}/execute", json={"code": "while True: pass"}, headers=alice,
                          timeout=30)
        except requests.RequestException:
            pass

    t = threading.Thread(target=busy)
    t.start()
    time.sleep(2)
    pids = descendants(proc.pid)  # workers, and the template that forks them
    assert len(pids) >= 2, "the host has a worker"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    t.join(30)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") for p in pids):
        time.sleep(0.2)
    assert not [p for p in pids if os.path.exists(f"/proc/{p}")]


def test_packages_on_the_hosts_pythonpath_reach_the_workers(azurite, alice, tmp_path):
    # Azure Functions puts the app's packages on PYTHONPATH (.python_packages), which `-I` ignores.
    (tmp_path / "o16n_probe_pkg.py").write_text("VALUE = 'found'\n")
    proc, url = start_host(PYTHONPATH=str(tmp_path))
    try:
        sid = new_session(url, alice)
        out = execute(url, alice, sid, "import o16n_probe_pkg\nv = o16n_probe_pkg.VALUE", outputParameters=["v"])
        assert out["success"] is True, out
        assert out["outputParameters"] == [{"name": "v", "value": "found"}]
    finally:
        stop_host(proc)


def test_new_workers_come_with_scikit_learn_already_imported(strict_url, alice):
    sid = new_session(strict_url, alice)
    deadline = time.monotonic() + 60
    while True:  # the host fills its spare in the background after start
        out = execute(strict_url, alice, sid, "import sys\nready = 'sklearn.svm' in sys.modules",
                      outputParameters=["ready"])
        if out["outputParameters"] == [{"name": "ready", "value": True}] or time.monotonic() > deadline:
            break
        sid = new_session(strict_url, alice)
        time.sleep(1)
    assert out["outputParameters"] == [{"name": "ready", "value": True}]
