"""Disk, file size and workspace size end in a clear success: false; the next call works."""

import pytest

from tests.e2e.helpers import execute, new_session
from tests.security.conftest import LIMITS

pytestmark = [pytest.mark.azurite, pytest.mark.e2e]


# libc's mmap through ctypes (Python's mmap.mmap keeps a descriptor the host would see)
LIBC_MMAP = ("import ctypes, os, time\nlibc = ctypes.CDLL(None)\nlibc.mmap.restype = ctypes.c_void_p\n"
             "libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,"
             " ctypes.c_long]\n")


def assert_stopped(host, alice, code, limit):
    """The call is stopped, naming `limit`, and its session goes on."""
    sid = new_session(host.url, alice)
    out = execute(host.url, alice, sid, code)
    assert out["success"] is False and limit in out["errorMessage"], out
    assert execute(host.url, alice, sid, "x = 1")["success"] is True
DISK_MB = int(LIMITS["WORKER_DISK_MB"])


def test_a_fast_disk_fill_stops_the_worker_and_the_session_keeps_its_last_state(host, alice):
    sid = new_session(host.url, alice)
    execute(host.url, alice, sid, "kept = 'before'")
    out = execute(host.url, alice, sid, "import os\nkept = 'during'\n"
                  f"for i in range({DISK_MB + 5}):\n    open(f'.tmp/f{{i}}', 'wb').write(os.urandom(2**20))")
    assert out["success"] is False and f"limit of {DISK_MB} MB" in out["errorMessage"]
    out = execute(host.url, alice, sid, "import os\nfiles = os.listdir('.tmp')", outputParameters=["kept", "files"])
    assert out["outputParameters"] == [{"name": "kept", "value": "before"}, {"name": "files", "value": []}]


def test_a_slow_disk_fill_is_stopped_while_it_runs(host, alice):
    out = execute(host.url, alice, new_session(host.url, alice),
                  "import os, time\n"
                  "for i in range(1000):\n    open(f'.tmp/f{i}', 'wb').write(os.urandom(2**20))\n    time.sleep(0.005)")
    assert out["success"] is False and "WORKER_DISK_MB" in out["errorMessage"]
    assert host.healthy(alice)


def test_many_empty_files_count_too(host, alice):
    out = execute(host.url, alice, new_session(host.url, alice),
                  "import os\nos.mkdir('many')\nfor i in range(1500):\n    open(f'many/{i}', 'w').close()")
    assert out["success"] is False and "WORKER_DISK_MB" in out["errorMessage"]


def test_one_file_cannot_grow_past_the_disk_limit(host, alice):
    out = execute(host.url, alice, new_session(host.url, alice),
                  f"with open('.tmp/big', 'wb') as f:\n    f.seek({DISK_MB + 1} * 2**20)\n    f.write(b'x')")
    assert out["success"] is False and "File too large" in out["errorMessage"]
    assert "WORKER_DISK_MB" in out["errorMessage"]


def test_a_workspace_over_its_limit_is_refused_by_name(host, alice):
    sid = new_session(host.url, alice)
    execute(host.url, alice, sid, "small = 1")
    mb = int(LIMITS["MAX_WORKSPACE_MB"]) + 1
    out = execute(host.url, alice, sid, f"import os\nbig = os.urandom({mb} * 2**20)")
    assert out["success"] is False and "MAX_WORKSPACE_MB" in out["errorMessage"]
    out = execute(host.url, alice, sid, "has_big = 'big' in globals()", outputParameters=["small", "has_big"])
    assert out["outputParameters"] == [{"name": "small", "value": 1}, {"name": "has_big", "value": False}]
    assert host.healthy(alice)


def test_files_deleted_but_held_open_count_against_the_disk_limit(host, alice):
    sid = new_session(host.url, alice)
    out = execute(host.url, alice, sid, "import os\nkept = []\n"
                  f"for i in range({DISK_MB // 8 + 2}):\n"
                  "    f = open(f'.tmp/gone{i}', 'wb')\n    os.unlink(f'.tmp/gone{i}')\n"
                  "    f.write(os.urandom(8 * 2**20))\n    f.flush()\n    kept.append(f)")
    assert out["success"] is False and "WORKER_DISK_MB" in out["errorMessage"]
    assert execute(host.url, alice, sid, "x = 1")["success"] is True


def test_memory_is_bounded_across_a_workers_processes(host, alice):
    memory_mb = int(LIMITS["WORKER_MEMORY_MB"])
    out = execute(host.url, alice, new_session(host.url, alice),
                  "import os, time\n"
                  f"for i in range({memory_mb // 300 + 2}):\n"
                  "    if os.fork() == 0:\n"
                  "        hog = bytearray(b'x') * (300 * 2**20)\n        time.sleep(30)\n        os._exit(0)\n"
                  "time.sleep(30)")
    assert out["success"] is False and "WORKER_MEMORY_MB" in out["errorMessage"]
    assert host.healthy(alice)


def test_a_reply_dribbled_out_does_not_put_off_the_measurements(host, alice):
    # User code finds its channel and keeps writing a byte of a reply every 5 ms, so the host
    # never waits long for it; its processes' memory must still be measured while it runs.
    # (They are forked before the dribble starts: a fork holds the GIL while the host answers.)
    code = ("import os, struct, sys, threading, time\nf = sys._getframe()\n"
            "while 'chan' not in f.f_locals:\n    f = f.f_back\nfd = f.f_locals['chan'].fileno()\n"
            "go = []\nfor _ in range(3):\n    r, w = os.pipe()\n    if os.fork() == 0:\n        os.read(r, 1)\n"
            "        block = bytearray(500 * 2**20)\n        for i in range(0, len(block), 4096):\n"
            "            block[i] = 1\n        time.sleep(30)\n    go.append(w)\n"
            "def drip():\n    os.write(fd, struct.pack('>II', 4096, 0))\n"
            "    for _ in range(1000):\n        os.write(fd, b' ')\n        time.sleep(0.005)\n"
            "threading.Thread(target=drip, daemon=True).start()\ntime.sleep(0.3)\n"
            "for w in go:\n    os.write(w, b'x')\ntime.sleep(30)")
    out = execute(host.url, alice, new_session(host.url, alice), code)
    assert out["success"] is False and "WORKER_MEMORY_MB" in out["errorMessage"], out


def test_socket_and_pipe_buffers_cannot_be_raised(host, alice):
    got = execute(host.url, alice, new_session(host.url, alice),
                  "import fcntl, os, socket\nout = {}\na, b = socket.socketpair()\n"
                  "for name, opt in [('sndbuf', socket.SO_SNDBUF), ('rcvbuf', socket.SO_RCVBUF), ('force', 32)]:\n"
                  "    try:\n        a.setsockopt(socket.SOL_SOCKET, opt, 8 * 2**20)\n        out[name] = 'DONE'\n"
                  "    except OSError as e:\n        out[name] = e.errno\nr, w = os.pipe()\n"
                  "try:\n    fcntl.fcntl(w, 1031, 2**20)\n    out['pipe'] = 'DONE'\nexcept OSError as e:\n"
                  "    out['pipe'] = e.errno", outputParameters=["out"])
    assert got["outputParameters"] == [{"name": "out", "value": {"sndbuf": 1, "rcvbuf": 1, "force": 1, "pipe": 1}}]


def test_kernel_buffers_of_many_socket_pairs_count_against_the_memory_limit(host, alice):
    # Each full socket pair holds ~460 KB of kernel memory that no address space shows.
    assert_stopped(host, alice,
                   "import socket, time\nkept = []\nfor _ in range(2000):\n    a, b = socket.socketpair()\n"
                   "    a.setblocking(False)\n    try:\n        while True:\n            a.send(b'x' * 65536)\n"
                   "    except BlockingIOError:\n        pass\n    kept.append((a, b))\ntime.sleep(2)", "WORKER_MEMORY_MB")


def test_byte_range_locks_are_refused_and_flock_works(host, alice):
    # nothing bounds how many POSIX locks a process holds: each is kernel memory
    got = execute(host.url, alice, new_session(host.url, alice),
                  "import fcntl\nf = open('lockme', 'w')\ntry:\n    fcntl.lockf(f, fcntl.LOCK_EX, 1, 0)\n"
                  "    lockf = 'DONE'\nexcept OSError as e:\n    lockf = e.errno\nfcntl.flock(f, fcntl.LOCK_EX)\nflock = 'DONE'",
                  outputParameters=["lockf", "flock"])
    assert got["outputParameters"] == [{"name": "lockf", "value": 1}, {"name": "flock", "value": "DONE"}], got


def test_epoll_watches_are_bounded(host, alice):
    # the kernel's quota of watches is per user: the API process draws on it too
    assert_stopped(host, alice,
                   "import os, select, time\nfds = [os.eventfd(0) for _ in range(1000)]\neps = []\n"
                   "for _ in range(100):\n    e = select.epoll()\n    for fd in fds:\n        e.register(fd)\n"
                   "    eps.append(e)\ntime.sleep(2)", "epoll watches")


def test_a_deleted_file_kept_mapped_counts_against_the_disk_limit(host, alice):
    # its space stays taken, outside the folder and the open descriptors
    assert_stopped(host, alice, LIBC_MMAP + "with open('big', 'wb') as f:\n    f.write(b'x' * 2**20)\n"
                   "fd = os.open('big', os.O_RDONLY)\nlibc.mmap(None, 4096, 1, 1, fd, 0)\nos.close(fd)\n"
                   "os.remove('big')\ntime.sleep(2)", "WORKER_DISK_MB")


def test_kernel_aio_contexts_are_refused(host, alice):
    # they draw on one quota for the whole machine (aio-max-nr)
    got = execute(host.url, alice, new_session(host.url, alice),
                  "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nctx = ctypes.c_ulong(0)\n"
                  "r = libc.syscall(206, 128, ctypes.byref(ctx))\nerr = ctypes.get_errno()",
                  outputParameters=["r", "err"])
    assert got["outputParameters"] == [{"name": "r", "value": -1}, {"name": "err", "value": 1}], got


def test_page_tables_count_against_the_memory_limit(host, alice):
    # a read-only page mapped every GB costs 8 KB of page tables and nothing of PSS
    assert_stopped(host, alice, LIBC_MMAP + "def build():\n    for i in range(60000):\n"
                   "        libc.mmap((1 << 40) + i * (1 << 30), 4096, 1, 0x2 | 0x20 | 0x8000 | 0x100000, -1, 0)\n"
                   "for _ in range(2):\n    if os.fork() == 0:\n        build()\n        time.sleep(30)\n"
                   "build()\ntime.sleep(30)", "WORKER_MEMORY_MB")


def test_workers_may_take_only_a_small_part_of_the_users_queued_signals(host, alice):
    # POSIX timers and queued signals draw on one quota for the app's user: the API's too
    got = execute(host.url, alice, new_session(host.url, alice),
                  "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nmade = 0\ntimer = ctypes.c_void_p()\n"
                  "while made < 100000 and libc.timer_create(1, None, ctypes.byref(timer)) == 0:\n    made += 1\n"
                  "err = ctypes.get_errno()", outputParameters=["made", "err"])
    out = {p["name"]: p["value"] for p in got["outputParameters"]}
    assert out["err"] == 11 and out["made"] <= 1024, out  # EAGAIN
