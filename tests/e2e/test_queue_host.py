"""`python -m devhost serve` runs the app's queue-triggered functions beside its HTTP ones, and a
SIGTERM during one stops the host within the grace, leaving its message to reappear."""
import base64
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid

import pytest
from azure.storage.queue import QueueClient

from devhost.__main__ import free_port, port_open
from tests.e2e.conftest import ROOT
from tests.security.conftest import processes_with

pytestmark = [pytest.mark.azurite, pytest.mark.e2e]

# Appended to a copy of function_app.py: the real app, plus one queue function.
PROBE = '''

import os as _os, pathlib as _pathlib, time as _time  # noqa: E401,E402
_probe = func.Blueprint()


@_probe.queue_trigger(arg_name="msg", queue_name="%PROBE_QUEUE%", connection="AzureWebJobsStorage")
def probe(msg: func.QueueMessage) -> None:
    out = _pathlib.Path(_os.environ["PROBE_DIR"])
    (out / f"{msg.id}.{msg.dequeue_count}.start").touch()
    _time.sleep(float(msg.get_body()))
    (out / f"{msg.id}.{msg.dequeue_count}.end").touch()


app.register_functions(_probe)
'''


def test_serve_runs_queue_functions_and_a_sigterm_leaves_an_unfinished_message(azurite, tmp_path):
    app = tmp_path / "app"
    shutil.copytree(ROOT, app, ignore=shutil.ignore_patterns(".venv*", "node_modules", ".git", ".azurite",
                                                                "local.settings.json", "__pycache__", "tests"))
    with open(app / "function_app.py", "a") as f:
        f.write(PROBE)
    out = tmp_path / "out"
    out.mkdir()
    name = "probe" + uuid.uuid4().hex[:8]
    port = free_port()
    env = {**os.environ, "AzureWebJobsStorage": azurite, "PROBE_QUEUE": name, "PROBE_DIR": str(out),
           "DEVHOST_QUEUE_SHUTDOWN_SECONDS": "1", "DEVHOST_QUEUE_INVISIBILITY_SECONDS": "4",
           "SPARE_WORKERS": "0", "WORKER_TEMPLATES": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "devhost", "serve", "--port", str(port)], cwd=app, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    q = QueueClient.from_connection_string(azurite, name)
    try:
        deadline = time.monotonic() + 60
        while not port_open(port):
            assert proc.poll() is None and time.monotonic() < deadline, "the host did not start"
            time.sleep(0.1)
        quick = q_send(q, "0.1", deadline=10)  # the queue is made by the host's runner
        wait_for(lambda: (out / f"{quick}.1.end").exists(), 10)
        slow = q_send(q, "60")
        wait_for(lambda: (out / f"{slow}.1.start").exists(), 10)
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert time.monotonic() - began < 10  # the 1 s grace, not the 60 s function
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "Traceback" not in proc.stderr.read()
    assert not (out / f"{slow}.1.end").exists()
    assert q.get_queue_properties().approximate_message_count == 1  # the slow one, left to reappear
    assert processes_with(str(app)) == []


def q_send(q: QueueClient, body: str, deadline: float = 0) -> str:
    end = time.monotonic() + deadline
    while True:
        try:
            return q.send_message(base64.b64encode(body.encode()).decode()).id
        except Exception:  # noqa: BLE001 - the queue is not there yet
            if time.monotonic() > end:
                raise
            time.sleep(0.1)


def wait_for(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
