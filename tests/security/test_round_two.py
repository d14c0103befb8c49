"""What a second attacker found: file metadata outside the folder, descriptors passed around,
datagram socket pairs, code left running between calls, huge decoded replies, slow services."""
import os
import stat
import sys
import threading
import time

import pytest
import requests

from tests.e2e.helpers import execute, new_session, publish
from tests.security.conftest import LIMITS, gone

pytestmark = [pytest.mark.azurite, pytest.mark.e2e]


def values(out):
    assert out["success"] is True, out["errorMessage"]
    return {p["name"]: p["value"] for p in out["outputParameters"]}


@pytest.fixture
def readable_file():
    """A file of the app's user where workers may read (the interpreter's prefix)."""
    path = os.path.join(sys.prefix, f"o16n-sentinel-{os.getpid()}")
    with open(path, "w") as f:
        f.write("x")
    os.chmod(path, 0o600)
    yield path
    os.unlink(path)


def test_modes_owners_times_and_attributes_cannot_be_changed(host, alice, app_sentinel, readable_file):
    before = [os.stat(p) for p in (app_sentinel, readable_file)]
    got = values(execute(host.url, alice, new_session(host.url, alice),
                         "import os, fcntl, struct\nout = {}\n"
                         "def t(name, call):\n"
                         "    try:\n        call()\n        out[name] = 'DONE'\n"
                         "    except Exception as e:\n        out[name] = type(e).__name__\n"
                         "t('chmod', lambda: os.chmod(app, 0o644))\n"
                         "t('chown', lambda: os.chown(app, os.getuid(), os.getgid()))\n"
                         "t('utime', lambda: os.utime(app, (0, 0)))\n"
                         "t('xattr', lambda: os.setxattr(app, 'user.x', b'1'))\n"
                         "fd = os.open(readable, os.O_RDONLY)\n"
                         "t('fchmod', lambda: os.fchmod(fd, 0o4755))\n"
                         "t('futime', lambda: os.utime(fd, (0, 0)))\n"
                         "t('chattr', lambda: fcntl.ioctl(fd, 0x40086602, struct.pack('l', 0x80)))\n"
                         "open('own.txt', 'w').close()\n"
                         "t('own_chmod', lambda: os.chmod('own.txt', 0o700))",
                         outputParameters=["out"],
                         inputParameters=[{"name": "app", "value": app_sentinel},
                                          {"name": "readable", "value": readable_file}]))
    assert set(got["out"].values()) == {"PermissionError"}, got
    after = [os.stat(p) for p in (app_sentinel, readable_file)]
    for b, a in zip(before, after):
        assert (stat.S_IMODE(a.st_mode), a.st_mtime_ns, a.st_uid) == (stat.S_IMODE(b.st_mode), b.st_mtime_ns, b.st_uid)


def test_descriptors_cannot_be_passed_and_socket_pairs_reach_only_each_other(host, alice):
    got = values(execute(host.url, alice, new_session(host.url, alice),
                         "import socket, os, array, asyncio\nout = {}\n"
                         "a, b = socket.socketpair()\nfd = os.open('f', os.O_CREAT | os.O_RDWR)\n"
                         "try:\n    a.sendmsg([b'x'], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array('i', [fd]))])\n"
                         "    out['scm'] = 'SENT'\nexcept OSError as e:\n    out['scm'] = e.errno\n"
                         "for kind in (socket.SOCK_DGRAM, socket.SOCK_SEQPACKET):\n"
                         "    try:\n        socket.socketpair(socket.AF_UNIX, kind)\n        out[str(kind)] = 'MADE'\n"
                         "    except OSError as e:\n        out[str(kind)] = type(e).__name__\n"
                         "a.send(b'ping')\nout['stream'] = b.recv(4).decode()\n"
                         "out['asyncio'] = asyncio.run(asyncio.sleep(0, 'ran'))", outputParameters=["out"]))
    assert got["out"] == {"scm": 38, "2": "PermissionError", "5": "PermissionError", "stream": "ping",
                          "asyncio": "ran"}


def worker_pid(host, headers, sid, code):
    return values(execute(host.url, headers, sid, code + "\nimport os\npid = os.getpid()",
                          outputParameters=["pid"]))["pid"]


def test_a_thread_left_burning_cpu_between_calls_stops_its_worker(host, alice):
    sid = new_session(host.url, alice)
    execute(host.url, alice, sid, "kept = 1")
    pid = worker_pid(host, alice, sid, "import threading\n"
                     "threading.Thread(target=lambda: [0 for _ in iter(int, 1)], daemon=True).start()")
    deadline = time.monotonic() + 8
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not os.path.exists(f"/proc/{pid}")
    out = execute(host.url, alice, sid, "", outputParameters=["kept"])
    assert out["success"] is True and out["outputParameters"] == [{"name": "kept", "value": 1}]


def test_files_and_processes_a_thread_makes_after_its_call_are_caught(host, alice):
    mark = "731.4242"
    sid = new_session(host.url, alice)
    pid = worker_pid(host, alice, sid, "import threading, time, os, subprocess\n"
                     "def later():\n    time.sleep(0.5)\n"
                     f"    subprocess.Popen(['sleep', '{mark}'])\n"
                     f"    for i in range({int(LIMITS['WORKER_DISK_MB']) // 4 + 2}):\n"
                     "        open(f'.tmp/late{i}', 'wb').write(os.urandom(4 * 2**20))\n        time.sleep(0.05)\n"
                     "threading.Thread(target=later, daemon=True).start()")
    assert gone(mark, within=6)
    deadline = time.monotonic() + 6
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not os.path.exists(f"/proc/{pid}")


def test_processes_left_by_a_worker_that_exited_are_ended(host, alice):
    mark = "733.4242"
    sid = new_session(host.url, alice)
    execute(host.url, alice, sid, "import threading, os, time, subprocess\n"
            "def later():\n    time.sleep(0.5)\n"
            f"    subprocess.Popen(['sh', '-c', 'sleep {mark} & sleep {mark}'])\n"
            "    time.sleep(0.3)\n    os._exit(0)\n"
            "threading.Thread(target=later, daemon=True).start()")
    time.sleep(1)
    assert gone(mark, within=5)
    assert execute(host.url, alice, sid, "x = 1")["success"] is True


def test_a_reply_that_would_decode_into_too_many_objects_is_refused(host, alice):
    before = host.rss_mb()
    out = execute(host.url, alice, new_session(host.url, alice),
                  # pickles to a few bytes (the workspace stays small), decodes to 5 million values
                  "class Zeros(list):\n    def __reduce__(self):\n        return (Zeros, ())\n"
                  "x = Zeros([0] * 5_000_000)", outputParameters=["x"])
    assert out["success"] is False and "more than the host decodes" in out["errorMessage"]
    assert host.rss_mb() - before < 100


def test_a_slow_service_cannot_hold_the_api(host, alice, bob):
    name = publish(host.url, alice, "import time\ntime.sleep(2.5)\ny = 1", outputs=[{"name": "y", "type": "numeric"}])
    answers = []

    def call():
        r = requests.post(f"{host.url}/api/{name}/v1", json={}, headers=alice, timeout=30)
        answers.append(r.status_code)

    threads = [threading.Thread(target=call) for _ in range(24)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    start = time.monotonic()
    assert requests.get(f"{host.url}/services", headers=bob, timeout=30).status_code == 200
    assert time.monotonic() - start < 5  # not the 24 x 2.5 s a queue would make it
    for t in threads:
        t.join(30)
    assert set(answers) <= {200, 503} and answers.count(503) > 0


def test_leases_notifications_attributes_and_sync_are_refused(host, alice, app_sentinel, readable_file):
    got = values(execute(host.url, alice, new_session(host.url, alice),
                         "import os, fcntl, ctypes, signal\nout = {}\n"
                         "libc = ctypes.CDLL(None, use_errno=True)\n"
                         "def t(name, call):\n"
                         "    try:\n        call()\n        out[name] = 'DONE'\n"
                         "    except Exception as e:\n        out[name] = type(e).__name__\n"
                         "signal.signal(signal.SIGIO, signal.SIG_IGN)\n"
                         "fd = os.open(readable, os.O_RDONLY)\n"
                         "t('lease', lambda: fcntl.fcntl(fd, 1024, fcntl.F_RDLCK))\n"
                         "t('dnotify', lambda: fcntl.fcntl(os.open('.', os.O_RDONLY), 1026, 0x2))\n"
                         "t('getxattr', lambda: os.getxattr(app, 'user.x'))\n"
                         "t('listxattr', lambda: os.listxattr(app))\n"
                         "n = libc.inotify_init1(0)\nout['inotify'] = (n, ctypes.get_errno())\n"
                         "libc.sync()\nout['sync'] = ctypes.get_errno()\n"
                         "out['file_setattr'] = (libc.syscall(469, -100, app.encode(), 0, 0, 0),"
                         " ctypes.get_errno())\n"
                         "out['newer'] = (libc.syscall(470), ctypes.get_errno())",
                         outputParameters=["out"], inputParameters=[{"name": "app", "value": app_sentinel},
                                                                    {"name": "readable", "value": readable_file}]))
    assert got["out"] == {"lease": "PermissionError", "dnotify": "PermissionError", "getxattr": "PermissionError",
                          "listxattr": "PermissionError", "inotify": [-1, 1], "sync": 1, "file_setattr": [-1, 1],
                          "newer": [-1, 38]}


def test_making_many_sessions_never_stops_another_users_running_call(azurite):
    from tests.e2e.conftest import start_host, stop_host
    from tests.security.conftest import Host

    proc, url = start_host(MAX_WARM_SESSIONS="2", SPARE_WORKERS="0", EXECUTION_TIMEOUT_SECONDS="20")
    host = Host(url, proc.pid)
    try:
        alice, bob = host.login("alice"), host.login("bob")
        sid = new_session(url, bob)
        answer = {}
        t = threading.Thread(target=lambda: answer.update(
            execute(url, bob, sid, "import time\ntime.sleep(3)\nx = 42", outputParameters=["x"])))
        t.start()
        time.sleep(1)
        for _ in range(4):  # more warm sessions than MAX_WARM_SESSIONS, while bob's call runs
            assert execute(url, alice, new_session(url, alice), "y = 1")["success"] is True
        t.join(30)
        assert answer["success"] is True and answer["outputParameters"] == [{"name": "x", "value": 42}]
    finally:
        stop_host(proc)
