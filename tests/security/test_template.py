"""Workers forked from the template: each is as confined as a worker started on its own, and
shares nothing with its siblings or the template but read-only memory."""
import os
import signal
import time

import pytest
import requests

from tests.e2e.conftest import start_host, stop_host
from tests.e2e.helpers import execute, new_session, publish
from tests.security.conftest import LIMITS, children, template_ready

pytestmark = [pytest.mark.azurite, pytest.mark.e2e]


def values(out):
    assert out["success"] is True, out["errorMessage"]
    return {p["name"]: p["value"] for p in out["outputParameters"]}


def run(host, headers, code, *outputs, **inputs):
    return values(execute(host.url, headers, new_session(host.url, headers), code, outputParameters=list(outputs),
                          inputParameters=[{"name": k, "value": v} for k, v in inputs.items()]))


def test_workers_are_forked_from_the_template(host, alice):
    got = run(host, alice, "import os, sys\nparent = os.getppid()\nloaded = 'sklearn.svm' in sys.modules",
              "parent", "loaded")
    assert got["parent"] in children(host.pid, "--template")
    assert got["loaded"] is True


def test_a_forked_worker_writes_and_lists_only_its_own_folder(host, alice, bob):
    # The template may write among all workers' folders; each child narrows that to its own.
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
            "open('mine.txt', 'w').write('mine')\nown = open('mine.txt').read()")
    got = run(host, alice, code, "out", "own", theirs=theirs)
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
    got = run(host, alice, code, "out", "parent", signal_number=int(signal.SIGKILL))["out"]
    assert got == {"kill": "PermissionError", "killpg": "PermissionError", "environ": "PermissionError",
                   "maps": "PermissionError", "mem": "PermissionError", "ptrace": [-1, 1], "pidfd_getfd": [-1, 1]}
    assert children(host.pid, "--template"), "the template is still there"


def test_a_worker_holds_no_descriptor_but_its_channel(host, alice):
    # The template received every worker's channel end: none may leak into a later sibling.
    for _ in range(3):
        got = run(host, alice, "import os, stat\nkinds = {}\nfor fd in range(3, 4096):\n"
                  "    try:\n        mode = os.fstat(fd).st_mode\n    except OSError:\n        continue\n"
                  "    kinds[str(fd)] = 'socket' if stat.S_ISSOCK(mode) else stat.filemode(mode)", "kinds")
        assert list(got["kinds"].values()) == ["socket"], got


def test_forked_workers_do_not_share_random_state(host, alice, bob):
    code = "import os, random, numpy\nr = [random.random(), float(numpy.random.rand()), os.urandom(8).hex()]"
    first = run(host, alice, code, "r")["r"]
    second = run(host, bob, code, "r")["r"]
    assert all(a != b for a, b in zip(first, second)), (first, second)


def test_a_service_in_a_forked_worker_keeps_the_process_limit(host, alice):
    name = publish(host.url, alice, "import subprocess\nn = 0\ntry:\n"
                   "    procs = [subprocess.Popen(['sleep', '5']) for _ in range(40)]\nexcept OSError:\n    n = 1\n"
                   "y = n", inputs=[], outputs=[{"name": "y", "type": "integer"}])
    r = requests.post(f"{host.url}/api/{name}/v1", json={}, headers=alice)
    assert r.json()["outputParameters"] == {"y": 1}, r.text  # WORKER_MAX_PROCESSES is 12 here


def test_workers_end_with_a_template_that_dies_and_new_ones_still_start(azurite):
    proc, url = start_host(**LIMITS)
    try:
        from tests.security.conftest import Host

        host = Host(url, proc.pid)
        alice = host.login("alice")
        template_ready(url, alice)
        sid = new_session(url, alice)
        pid = values(execute(url, alice, sid, "import os\npid = os.getpid()", outputParameters=["pid"]))["pid"]
        (template,) = children(proc.pid, "--template")
        os.kill(template, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not os.path.exists(f"/proc/{pid}"), "its forked worker outlived the template"
        out = execute(url, alice, sid, "y = 2")
        assert out["success"] is True, out
        template_ready(url, alice)  # started again
        assert values(execute(url, alice, new_session(url, alice), "import os\np = os.getppid()",
                              outputParameters=["p"]))["p"] in children(proc.pid, "--template")
    finally:
        stop_host(proc)


def test_with_the_template_off_workers_start_on_their_own_as_confined(azurite, app_sentinel):
    proc, url = start_host(**{**LIMITS, "WORKER_TEMPLATE": "off", "SPARE_WORKERS": "1"})
    try:
        from tests.security.conftest import Host

        host = Host(url, proc.pid)
        alice = host.login("alice")
        status = requests.get(f"{url}/status", headers=alice).json()["components"]["sandbox"]["details"]
        assert status["template"] == "off"
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
