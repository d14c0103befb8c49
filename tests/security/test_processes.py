"""User code cannot touch processes outside its worker, and nothing it starts outlives it."""
import os
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
            "for name, call in [('api', lambda: os.kill(api, 0)), ('worker', lambda: os.kill(theirs, 0)),\n"
            "                   ('parent', lambda: os.kill(os.getppid(), 0)),\n"
            "                   ('group', lambda: os.killpg(os.getpgid(api), 0)),\n"
            "                   ('parent_group', lambda: os.killpg(os.getppid(), 0)),\n"
            "                   ('nice', lambda: os.setpriority(os.PRIO_PROCESS, api, 19)),\n"
            "                   ('nice_parent', lambda: os.setpriority(os.PRIO_PROCESS, os.getppid(), 19)),\n"
            "                   ('nice_user', lambda: os.setpriority(os.PRIO_USER, 0, 19)),\n"
            "                   ('rlimit', lambda: __import__('resource').prlimit(api, 7, (0, 0))),\n"
            "                   ('rlimit_parent', lambda: __import__('resource').prlimit(os.getppid(), 7, (0, 0)))]:\n"
            "    try:\n        call()\n        out[name] = 'DONE'\n    except Exception as e:\n"
            "        out[name] = type(e).__name__\n"
            "own = os.kill(os.getpid(), 0)")
    got = values(execute(host.url, alice, new_session(host.url, alice), code, outputParameters=["out"],
                         inputParameters=[{"name": "theirs", "value": theirs}, {"name": "api", "value": host.pid}]))
    assert got["out"] == dict.fromkeys(("api", "worker", "parent", "group", "parent_group", "nice", "nice_parent",
                                        "nice_user", "rlimit", "rlimit_parent"), "PermissionError")
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


def test_nothing_a_call_starts_survives_the_call(host, alice):
    a, b, c = marker(), marker(), marker()
    name = publish(host.url, alice, escapees(a, b, c) + "y = 1", outputs=[{"name": "y", "type": "numeric"}])
    assert requests.post(f"{host.url}/api/{name}/v1", json={}, headers=alice).json()["success"] is True
    assert gone(b, within=1) and gone(c, within=1)
    sid = new_session(host.url, alice)
    assert execute(host.url, alice, sid, escapees(a, b, c) + "import time\ntime.sleep(0.5)")["success"] is True
    assert gone(b, within=1) and gone(c, within=1)
    assert execute(host.url, alice, sid, "x = 1")["success"] is True  # and the worker goes on


def test_a_fork_loop_stops_at_the_process_limit_and_the_api_stays_up(host, alice):
    sid = new_session(host.url, alice)
    limit = int(LIMITS["WORKER_MAX_PROCESSES"])
    a = marker()
    out = execute(host.url, alice, sid,
                  "import os, time\nforks = 0\n"
                  "try:\n    while forks < 1000:\n"
                  f"        if os.fork() == 0:\n            os.execvp('sleep', ['sleep', '{a}'])\n"
                  "        forks += 1\nexcept OSError:\n    print('forks', forks)\n    raise\n")
    assert out["success"] is False
    assert "BlockingIOError" in out["errorMessage"] and "WORKER_MAX_PROCESSES" in out["errorMessage"]
    assert 0 < int(out["consoleOutput"].split()[1]) < limit
    assert gone(a)
    assert host.healthy(alice)
    assert execute(host.url, alice, sid, "x = 1")["success"] is True


def test_threads_count_against_the_same_limit(host, alice):
    out = execute(host.url, alice, new_session(host.url, alice),
                  "import threading, time\nev = threading.Event()\n"
                  "for i in range(100):\n    threading.Thread(target=ev.wait, daemon=True).start()")
    assert out["success"] is False and "can't start new thread" in out["errorMessage"]
    assert "WORKER_MAX_PROCESSES" in out["errorMessage"]


def test_a_child_cannot_be_handed_to_the_api_process(host, alice):
    # clone(CLONE_PARENT) would make the child the API's, which never reaps it
    got = values(execute(host.url, alice, new_session(host.url, alice),
                         "import ctypes, os, signal\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                         "pid = libc.syscall(56, 0x8000 | signal.SIGCHLD, 0, 0, 0, 0)\n"
                         "if pid == 0:\n    os._exit(0)\nerr = ctypes.get_errno()", outputParameters=["pid", "err"]))
    assert got == {"pid": -1, "err": 1}
    with open(f"/proc/{host.pid}/task/{host.pid}/children") as f:
        children = f.read().split()
    zombies = [c for c in children if open(f"/proc/{c}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"]
    assert zombies == []


def test_memory_that_would_outlive_its_process_cannot_be_made(host, alice):
    got = values(execute(host.url, alice, new_session(host.url, alice),
                         "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\nout = {}\n"
                         "for name, nr, args in [('memfd', 319, (b'x', 0)), ('shmget', 29, (0, 2**20, 0o1600)),\n"
                         "                       ('semget', 64, (0, 1, 0o1600)), ('msgget', 68, (0, 0o1600)),\n"
                         "                       ('mq_open', 240, (b'q', 0o100 | 2, 0o600, 0))]:\n"
                         "    out[name] = (libc.syscall(nr, *args), ctypes.get_errno())", outputParameters=["out"]))
    assert got["out"] == {k: [-1, 1] for k in ("memfd", "shmget", "semget", "msgget", "mq_open")}


def test_a_worker_that_stops_reading_holds_no_one(host, alice):
    sid = new_session(host.url, alice)
    # the worker's loop never reads its next request
    out = execute(host.url, alice, sid, "import __main__, time\n"
                  "__main__._Frames.read = lambda self, n: time.sleep(10**9)")
    assert out["success"] is True
    results = []

    def big_call():
        start = time.monotonic()
        r = requests.post(f"{host.url}/sessions/{sid}/execute", json={"code": "#" * 2 * 2**20}, headers=alice)
        results.append((r.status_code, time.monotonic() - start))

    threads = [threading.Thread(target=big_call) for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    start = time.monotonic()
    assert host.healthy(alice) and time.monotonic() - start < 2
    for t in threads:
        t.join(15)
    assert len(results) == 6 and {status for status, _ in results} <= {200, 409}
    timeout = float(LIMITS["EXECUTION_TIMEOUT_SECONDS"])
    assert max(elapsed for _, elapsed in results) >= timeout - 0.5, "one call met the stalled worker"
    assert max(elapsed for _, elapsed in results) < timeout + 3
    assert execute(host.url, alice, sid, "x = 1")["success"] is True


# A process whose first thread exits (SYS_exit) shows as a zombie while its other threads run.
HEADLESS = """
import ctypes, os, threading, time
libc = ctypes.CDLL(None)
def headless():
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        def hold():
            block = bytearray(int(mb) * 2**20)
            for i in range(0, len(block), 4096):
                block[i] = 1
            os.write(w, b"x")
            while True:
                time.sleep(0.05)
        threading.Thread(target=hold).start()
        libc.syscall(60, 0)
    os.read(r, 1)
    return pid
"""


def headless_alive(pid: int) -> bool:
    """The process still has a thread that is not a zombie."""
    try:
        return any(open(f"/proc/{pid}/task/{t}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
                   for t in os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return False


def test_a_process_whose_first_thread_exited_is_ended_with_the_call(host, alice):
    sid = new_session(host.url, alice)
    got = values(execute(host.url, alice, sid, HEADLESS + "escaped = headless()\ntime.sleep(0.3)",
                         outputParameters=["escaped"], inputParameters=[{"name": "mb", "value": 10}]))
    deadline = time.monotonic() + 2
    while headless_alive(got["escaped"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not headless_alive(got["escaped"])
    assert execute(host.url, alice, sid, "x = 1")["success"] is True


def test_such_processes_count_against_the_memory_limit_and_do_not_outlive_their_worker(host, alice):
    sid = new_session(host.url, alice)
    # 4 x 300 MB > WORKER_MEMORY_MB (1024) while the call runs
    out = execute(host.url, alice, sid, HEADLESS + "pids = [headless() for _ in range(4)]\ntime.sleep(2)",
                  inputParameters=[{"name": "mb", "value": 300}])
    assert out["success"] is False and "WORKER_MEMORY_MB" in out["errorMessage"], out
    # one left behind by a worker that exits between calls ends with it
    got = values(execute(host.url, alice, sid, HEADLESS + "escaped = headless()\n"
                         "threading.Thread(target=lambda: (time.sleep(1), os._exit(0)), daemon=True).start()",
                         outputParameters=["escaped"], inputParameters=[{"name": "mb", "value": 10}]))
    time.sleep(3)
    assert not headless_alive(got["escaped"])


def test_a_worker_that_disarms_its_own_watch_still_ends_with_a_host_that_dies(azurite):
    from tests.e2e.conftest import start_host
    from tests.security.conftest import Host

    proc, url = start_host(**{**LIMITS, "WORKER_TEMPLATES": "0"})  # fresh interpreters: the host is the parent
    try:
        host = Host(url, proc.pid)
        alice = host.login("alice")
        got = values(execute(url, alice, new_session(url, alice),
                             "import ctypes, os, threading, time\nos.killpg = lambda *a: None\n"
                             "threading.Thread(target=lambda: time.sleep(3600)).start()  # keeps it from exiting\n"
                             "undo = ctypes.CDLL(None, use_errno=True).prctl(1, 0, 0, 0, 0)\n"
                             "err = ctypes.get_errno()\npid = os.getpid()",
                             outputParameters=["pid", "undo", "err"]))
        assert (got["undo"], got["err"]) == (-1, 1)  # its parent-death signal cannot be taken away
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{got['pid']}") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{got['pid']}")


def test_a_thread_cannot_have_a_descriptor_table_of_its_own(host, alice):
    # its descriptors would be hidden from the host, which looks at each process's table
    got = values(execute(host.url, alice, new_session(host.url, alice),
                         "import ctypes, threading\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                         "r = libc.syscall(56, 0x100 | 0x800 | 0x10000, 0, 0, 0, 0)  # VM|SIGHAND|THREAD, no FILES\n"
                         "err = ctypes.get_errno()\nt = threading.Thread(target=lambda: None)\nt.start()\nt.join()\n"
                         "import subprocess\nok = subprocess.run(['true']).returncode",
                         outputParameters=["r", "err", "ok"]))
    assert got == {"r": -1, "err": 1, "ok": 0}
