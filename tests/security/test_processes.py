"""User code cannot touch processes outside its worker, and nothing it starts outlives it."""
import random
import threading
import time

import pytest
import requests

from tests.e2e.helpers import execute, new_session, publish
from tests.security.conftest import LIMITS, gone, processes_with

pytestmark = [pytest.mark.azurite, pytest.mark.e2e]


def marker() -> str:
    """A `sleep` argument no other process on the machine has."""
    return f"{random.randint(400, 900)}.{random.randint(10**8, 10**9)}"


def values(out):
    assert out["success"] is True, out["errorMessage"]
    return {p["name"]: p["value"] for p in out["outputParameters"]}


def escapees(a: str, b: str, c: str) -> str:
    """Code that starts processes every way that could leave the worker's process group."""
    return ("import os, subprocess\n"
            f"try:\n    subprocess.Popen(['sleep', '{a}'], start_new_session=True)\nexcept PermissionError:\n    pass\n"
            f"subprocess.Popen(['sh', '-c', 'sleep {b} &'])\n"  # a double fork: the sleep is orphaned
            "if os.fork() == 0:\n"
            "    try:\n        os.setpgid(0, 0)\n    except PermissionError:\n        pass\n"
            f"    os.execvp('sleep', ['sleep', '{c}'])\n")


def test_the_api_and_other_workers_cannot_be_signalled_or_reniced(host, alice, bob):
    theirs = values(execute(host.url, bob, new_session(host.url, bob), "import os\npid = os.getpid()",
                            outputParameters=["pid"]))["pid"]
    code = ("import os\nout = {}\n"
            "for name, call in [('api', lambda: os.kill(os.getppid(), 0)), ('worker', lambda: os.kill(theirs, 0)),\n"
            "                   ('group', lambda: os.killpg(os.getpgid(os.getppid()), 0)),\n"
            "                   ('nice', lambda: os.setpriority(os.PRIO_PROCESS, os.getppid(), 19)),\n"
            "                   ('nice_user', lambda: os.setpriority(os.PRIO_USER, 0, 19)),\n"
            "                   ('rlimit', lambda: __import__('resource').prlimit(os.getppid(), 7, (0, 0)))]:\n"
            "    try:\n        call()\n        out[name] = 'DONE'\n    except Exception as e:\n"
            "        out[name] = type(e).__name__\n"
            "own = os.kill(os.getpid(), 0)")
    got = values(execute(host.url, alice, new_session(host.url, alice), code, outputParameters=["out"],
                         inputParameters=[{"name": "theirs", "value": theirs}]))
    assert got["out"] == {"api": "PermissionError", "worker": "PermissionError", "group": "PermissionError",
                          "nice": "PermissionError", "nice_user": "PermissionError", "rlimit": "PermissionError"}
    assert host.healthy(alice)


def test_leaving_the_process_group_is_refused(host, alice):
    got = values(execute(host.url, alice, new_session(host.url, alice),
                         "import os, subprocess\nout = []\n"
                         "for call in (os.setsid, lambda: os.setpgid(0, 0),\n"
                         "             lambda: subprocess.Popen(['true'], start_new_session=True)):\n"
                         "    try:\n        call()\n        out.append('LEFT')\n"
                         "    except Exception as e:\n        out.append(type(e).__name__)",
                         outputParameters=["out"]))
    assert got["out"] == ["PermissionError"] * 3


def test_nothing_started_survives_a_timeout(host, alice):
    a, b, c = marker(), marker(), marker()
    out = execute(host.url, alice, new_session(host.url, alice), escapees(a, b, c) + "while True: pass")
    assert out["success"] is False and "did not finish within 3 seconds" in out["errorMessage"]
    assert gone(a) and gone(b) and gone(c)


@pytest.mark.parametrize("how", ["cancel", "force"])
def test_nothing_started_survives_cancel_or_force_close(host, alice, how):
    sid = new_session(host.url, alice)
    a, b, c = marker(), marker(), marker()
    answer = {}
    t = threading.Thread(target=lambda: answer.update(
        execute(host.url, alice, sid, escapees(a, b, c) + "while True: pass")))
    t.start()
    deadline = time.monotonic() + 2
    while not (processes_with(b) and processes_with(c)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_with(b) and processes_with(c), "the code started its processes"
    if how == "cancel":
        assert requests.post(f"{host.url}/sessions/{sid}/cancel", headers=alice).status_code == 200
    else:
        assert requests.delete(f"{host.url}/sessions/{sid}/force", headers=alice).status_code == 200
    t.join(10)
    assert answer["success"] is False
    assert gone(b, within=2) and gone(c, within=2)


def test_nothing_a_service_started_survives_its_deletion(host, alice):
    a, b, c = marker(), marker(), marker()
    name = publish(host.url, alice, "y = 1", initCode=escapees(a, b, c),
                   outputs=[{"name": "y", "type": "numeric"}])
    assert requests.post(f"{host.url}/api/{name}/v1", json={}, headers=alice).json()["success"] is True
    assert processes_with(b) and processes_with(c)
    assert requests.delete(f"{host.url}/services/{name}/v1", headers=alice).status_code == 200
    assert gone(b) and gone(c)


def test_a_fork_loop_stops_at_the_process_limit_and_the_api_stays_up(host, alice):
    sid = new_session(host.url, alice)
    limit = int(LIMITS["WORKER_MAX_PROCESSES"])
    a = marker()
    out = execute(host.url, alice, sid,
                  "import os, time\nforks = 0\n"
                  "while forks < 1000:\n"
                  f"    if os.fork() == 0:\n        os.execvp('sleep', ['sleep', '{a}'])\n"
                  "    forks += 1\n")
    assert out["success"] is False
    assert "BlockingIOError" in out["errorMessage"] and "WORKER_MAX_PROCESSES" in out["errorMessage"]
    assert 0 < len(processes_with(a)) < limit
    assert host.healthy(alice)
    assert execute(host.url, alice, sid, "x = 1")["success"] is True
    assert requests.delete(f"{host.url}/sessions/{sid}", headers=alice).status_code == 200
    assert gone(a)


def test_threads_count_against_the_same_limit(host, alice):
    out = execute(host.url, alice, new_session(host.url, alice),
                  "import threading, time\nev = threading.Event()\n"
                  "for i in range(100):\n    threading.Thread(target=ev.wait, daemon=True).start()")
    assert out["success"] is False and "can't start new thread" in out["errorMessage"]
    assert "WORKER_MAX_PROCESSES" in out["errorMessage"]
