"""Workers forked from templates: each is as confined as a worker started on its own, shares
nothing with its template or siblings but read-only memory, and never shares a template with
another user's workers (they would learn its address layout, stack canary and hash seed)."""
import os
import signal
import time

import pytest
import requests

from tests.e2e.conftest import start_host, stop_host
from tests.e2e.helpers import execute, new_session, publish
from tests.security.conftest import LIMITS, Host, children, template_ready

pytestmark = [pytest.mark.azurite, pytest.mark.e2e]


def values(out):
    assert out["success"] is True, out["errorMessage"]
    return {p["name"]: p["value"] for p in out["outputParameters"]}


def run(host, headers, code, *outputs, **inputs):
    return values(execute(host.url, headers, new_session(host.url, headers), code, outputParameters=list(outputs),
                          inputParameters=[{"name": k, "value": v} for k, v in inputs.items()]))


# What a worker inherits from the process it was forked from, and would share with its siblings.
INHERITED = ("import ctypes, os, sys\nparent = os.getppid()\nloaded = 'sklearn.svm' in sys.modules\n"
             "secrets = [hash('o16n'), ctypes.cast(ctypes.CDLL(None).printf, ctypes.c_void_p).value]")


def test_each_users_workers_come_from_their_own_template(host, alice, bob):
    template_ready(host.url, bob, host.pid)
    a1, a2 = (run(host, alice, INHERITED, "parent", "loaded", "secrets") for _ in range(2))
    b = run(host, bob, INHERITED, "parent", "loaded", "secrets")
    templates = children(host.pid, "--template")
    assert a1["parent"] == a2["parent"] and a1["parent"] in templates and b["parent"] in templates
    assert a1["loaded"] is True and b["loaded"] is True
    assert b["parent"] != a1["parent"]
    # hash seed and library addresses: the same within alice's template, different from bob's
    assert a1["secrets"] == a2["secrets"]
    assert all(x != y for x, y in zip(a1["secrets"], b["secrets"])), (a1, b)


def test_a_service_runs_in_its_publishers_template(host, alice, bob):
    mine = template_ready(host.url, alice, host.pid)
    theirs = template_ready(host.url, bob, host.pid)
    outputs = [{"name": "parent", "type": "integer"}]
    name = publish(host.url, alice, "import os\nparent = os.getppid()", outputs=outputs)
    for caller in (alice, bob):  # whoever calls it: it is alice's code
        r = requests.post(f"{host.url}/api/{name}/v1", json={}, headers=caller)
        assert r.json()["outputParameters"] == {"parent": mine}, r.text
    name = publish(host.url, bob, "import os\nparent = os.getppid()", outputs=outputs)
    r = requests.post(f"{host.url}/api/{name}/v1", json={}, headers=alice)
    assert r.json()["outputParameters"] == {"parent": theirs}, r.text


def test_a_forked_worker_writes_and_lists_only_its_own_folder(host, alice, bob):
    # A template may write among all workers' folders; each child narrows that to its own.
    theirs = run(host, bob, "import os\nopen('diary.txt', 'w').write('bob secret')\nhere = os.getcwd()",
                 "here")["here"]
    code = ("import os\nout = {}\nup = os.path.dirname(os.getcwd())\n"
            "for name, call in [('write_up', lambda: open(up + '/planted', 'w')),\n"
            "                   ('list_up', lambda: os.listdir(up)),\n"
            "                   ('mkdir_up', lambda: os.mkdir(up + '/w-planted')),\n"
            "                   ('read_theirs', lambda: open(theirs + '/diary.txt').read()),\n"
            "                   ('write_theirs', lambda: open(theirs + '/diary.txt', 'a')),\n"
            "                   ('rename_in', lambda: os.rename(theirs + '/diary.txt', 'stolen'))]:\n"
            "    try:\n        call()\n        out[name] = 'DONE'\n    except Exception as e:\n"
            "        out[name] = type(e).__name__\n"
            "open('mine.txt', 'w').write('mine')\nown = open('mine.txt').read()\nparent = os.getppid()")
    got = run(host, alice, code, "out", "own", "parent", theirs=theirs)
    assert got["parent"] in children(host.pid, "--template")
    assert got["out"] == dict.fromkeys(("write_up", "list_up", "mkdir_up", "read_theirs", "write_theirs",
                                        "rename_in"), "PermissionError")
    assert got["own"] == "mine"
    assert not os.path.exists(os.path.join(os.path.dirname(theirs), "planted"))


def test_the_template_cannot_be_signalled_traced_or_read(host, alice):
    code = ("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\nparent = os.getppid()\nout = {}\n"
            "for name, call in [('kill', lambda: os.kill(parent, signal_number)),\n"
            "                   ('killpg', lambda: os.killpg(parent, signal_number)),\n"
            "                   ('environ', lambda: open(f'/proc/{parent}/environ', 'rb').read()),\n"
            "                   ('maps', lambda: open(f'/proc/{parent}/maps', 'rb').read()),\n"
            "                   ('mem', lambda: open(f'/proc/{parent}/mem', 'rb').read(1))]:\n"
            "    try:\n        call()\n        out[name] = 'DONE'\n    except Exception as e:\n"
            "        out[name] = type(e).__name__\n"
            "out['ptrace'] = (libc.ptrace(16, parent, 0, 0), ctypes.get_errno())\n"
            "out['pidfd_getfd'] = (libc.syscall(438, 0, 3, 0), ctypes.get_errno())")
    got = run(host, alice, code, "out", "parent", signal_number=int(signal.SIGKILL))
    assert got["parent"] in children(host.pid, "--template")
    assert got["out"] == {"kill": "PermissionError", "killpg": "PermissionError", "environ": "PermissionError",
                          "maps": "PermissionError", "mem": "PermissionError", "ptrace": [-1, 1],
                          "pidfd_getfd": [-1, 1]}


def test_a_worker_holds_no_descriptor_but_its_channel(host, alice):
    # The template received every worker's channel end: none may leak into a later sibling.
    for _ in range(3):
        got = run(host, alice, "import os, stat\nkinds = {}\nfor fd in range(3, 4096):\n"
                  "    try:\n        mode = os.fstat(fd).st_mode\n    except OSError:\n        continue\n"
                  "    kinds[str(fd)] = 'socket' if stat.S_ISSOCK(mode) else stat.filemode(mode)", "kinds")
        assert list(got["kinds"].values()) == ["socket"], got


def test_workers_forked_from_one_template_do_not_share_random_state(host, alice):
    code = "import os, random, numpy\nr = [random.random(), float(numpy.random.rand()), os.urandom(8).hex()]"
    first, second = (run(host, alice, code, "r")["r"] for _ in range(2))
    assert all(a != b for a, b in zip(first, second)), (first, second)


def test_a_service_in_a_forked_worker_keeps_the_process_limit(host, alice):
    name = publish(host.url, alice, "import os, subprocess\nn = 0\nparent = os.getppid()\ntry:\n"
                   "    procs = [subprocess.Popen(['sleep', '5']) for _ in range(40)]\nexcept OSError:\n    n = 1\n"
                   "y = n", outputs=[{"name": "y", "type": "integer"}, {"name": "parent", "type": "integer"}])
    out = requests.post(f"{host.url}/api/{name}/v1", json={}, headers=alice).json()["outputParameters"]
    assert out["y"] == 1  # WORKER_MAX_PROCESSES is 12 here
    assert out["parent"] in children(host.pid, "--template")


def test_ended_workers_leave_no_zombie_in_their_template(host, alice):
    parent = template_ready(host.url, alice, host.pid)
    for _ in range(4):
        sid = new_session(host.url, alice)
        execute(host.url, alice, sid, "x = 1")
        assert requests.delete(f"{host.url}/sessions/{sid}", headers=alice).status_code == 200

    def zombies() -> list[str]:
        with open(f"/proc/{parent}/task/{parent}/children") as f:
            kids = f.read().split()
        return [k for k in kids if open(f"/proc/{k}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"]

    deadline = time.monotonic() + 3
    while zombies() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert zombies() == []


@pytest.fixture
def own_host(azurite):
    proc, url = start_host(**LIMITS)
    host = Host(url, proc.pid)
    yield host
    stop_host(proc)


def test_workers_outlive_a_template_that_dies_and_a_new_one_starts(own_host):
    host = own_host
    alice = host.login("alice")
    template = template_ready(host.url, alice, host.pid)
    sid = new_session(host.url, alice)
    before = values(execute(host.url, alice, sid, "import os\npid = os.getpid()", outputParameters=["pid"]))["pid"]
    os.kill(template, signal.SIGKILL)
    time.sleep(1.5)  # a worker that watched its parent would have ended by now
    after = values(execute(host.url, alice, sid, "import os\npid = os.getpid()", outputParameters=["pid"]))["pid"]
    assert after == before
    assert template_ready(host.url, alice, host.pid) != template


def test_a_stalled_template_holds_no_one_else(own_host):
    host = own_host
    alice, bob = host.login("alice"), host.login("bob")
    template = template_ready(host.url, alice, host.pid)
    template_ready(host.url, bob, host.pid)
    outputs = [{"name": "pid", "type": "integer"}]
    hers = publish(host.url, alice, "import os\npid = os.getpid()", outputs=outputs)
    his = publish(host.url, bob, "import os\npid = os.getpid()", outputs=outputs)
    pid = requests.post(f"{host.url}/api/{hers}/v1", json={}, headers=alice).json()["outputParameters"]["pid"]
    assert requests.post(f"{host.url}/api/{his}/v1", json={}, headers=bob).json()["success"] is True
    os.kill(template, signal.SIGSTOP)
    try:
        os.kill(pid, signal.SIGKILL)  # her worker ends; its template will not answer the reap
        time.sleep(0.2)
        r = requests.post(f"{host.url}/api/{hers}/v1", json={}, headers=alice, timeout=30)
        assert r.status_code in (200, 503), r.text
        start = time.monotonic()
        r = requests.post(f"{host.url}/api/{his}/v1", json={}, headers=bob, timeout=30)
        assert r.json()["success"] is True and time.monotonic() - start < 1
    finally:
        try:
            os.kill(template, signal.SIGCONT)
        except ProcessLookupError:
            pass  # the host gave up on it (a fork it asked for went unanswered) and ended it
    deadline = time.monotonic() + 20
    while True:  # and her service recovers
        r = requests.post(f"{host.url}/api/{hers}/v1", json={}, headers=alice, timeout=30)
        if r.status_code == 200 and r.json()["success"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert r.json()["success"] is True, r.text


def test_with_templates_off_workers_start_on_their_own_as_confined(azurite, app_sentinel):
    proc, url = start_host(**{**LIMITS, "WORKER_TEMPLATES": "0", "SPARE_WORKERS": "1"})
    try:
        host = Host(url, proc.pid)
        alice = host.login("alice")
        status = requests.get(f"{url}/status", headers=alice).json()["components"]["sandbox"]["details"]
        assert status["templates"]["max"] == 0
        got = run(host, alice, "import os\nparent = os.getppid()\nout = {}\n"
                  "for name, call in [('settings', lambda: open(path).read()), ('setsid', os.setsid),\n"
                  "                   ('api', lambda: os.kill(parent, 0))]:\n"
                  "    try:\n        call()\n        out[name] = 'DONE'\n    except Exception as e:\n"
                  "        out[name] = type(e).__name__", "parent", "out", path=app_sentinel)
        assert got["parent"] == proc.pid
        assert got["out"] == dict.fromkeys(("settings", "setsid", "api"), "PermissionError")
        assert not children(proc.pid, "--template")
    finally:
        stop_host(proc)
