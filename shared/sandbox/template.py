"""Host side of the templates: processes with PRELOAD_MODULES imported that fork new workers on
request (`worker.template`). A forked worker starts in milliseconds instead of the seconds
scikit-learn takes to import, and shares the imported modules' memory with its template and
siblings until it writes to it.

A template runs no user code and reads no user data: it is told what to fork and hands over a
channel end; its children confine themselves before they read either. Forked workers share
their template's address-space layout, stack canary, pointer guard, hash seed and the random
state libraries made at import, so each template forks for one group of people only: those
whose code a worker runs (a session's owner; a service version's publisher and whoever changed
its code since). A worker of one user never learns what would help attack another's.

A template reaps its children only when the host asks, in the background, after their pidfd
shows they ended. The host signals a forked worker only through its pidfd, never by pid or
process group id, which another process could have by then."""
from __future__ import annotations

import logging
import os
import queue
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .protocol import HEADER, decode, encode

log = logging.getLogger("o16n.sandbox")
WORKER = Path(__file__).with_name("worker.py")
#: how long a template may take to import PRELOAD_MODULES, and to answer a request
_START_SECONDS = 120
_ANSWER_SECONDS = 5
#: after a template failed to start, its group's workers start the cold way this long
_RETRY_SECONDS = 60


class Forked:
    """A worker forked by a template, with Popen's pid, poll, wait and returncode."""

    def __init__(self, template: "Template", pid: int) -> None:
        self.pid = pid
        self._pidfd = -1
        self._pidfd = os.pidfd_open(pid)  # kept until this object goes: its number is never reused under us
        self._template = template
        self.returncode: int | None = None
        self._lock = threading.Lock()

    def poll(self) -> int | None:
        with self._lock:
            if self.returncode is None and _readable(self._pidfd, 0):
                self.returncode = -signal.SIGKILL  # ended; the template collects its status
                _reaper.put(self)
            return self.returncode

    def wait(self) -> int:
        while self.poll() is None:
            _readable(self._pidfd, 1000)
        return self.returncode  # type: ignore[return-value]

    def kill(self) -> None:
        """The whole process (all its threads); the rest of its group is swept by member."""
        try:
            signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
        except OSError:
            pass

    def reap(self) -> bool:
        """Ask its template to collect it; False to try again later."""
        return self._template.reap(self.pid)

    def __del__(self) -> None:
        if self._pidfd >= 0:
            os.close(self._pidfd)


def _readable(fd: int, timeout_ms: int) -> bool:
    """A pidfd is readable once its process has exited. A poll object per call: they are not
    for concurrent use, and calls come from many threads."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(timeout_ms))


class _Reaper:
    """Collects ended workers through their templates, off the callers' threads (a template
    that is slow to answer must not hold a call, or the event loop)."""

    def __init__(self) -> None:
        self._queue: queue.Queue[Forked] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def put(self, worker: Forked) -> None:
        self._queue.put(worker)
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="o16n-reaper", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            worker = self._queue.get()
            if not worker.reap():
                time.sleep(0.05)
                self._queue.put(worker)


_reaper = _Reaper()


class Template:
    """One template process."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._chan: socket.socket | None = None
        self._lock = threading.Lock()  # one request at a time on its channel
        self.children: "weakref.WeakSet[Forked]" = weakref.WeakSet()

    @property
    def ready(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, rules: dict[str, Any], env: dict[str, str], folder: str) -> bool:
        """Start it and wait until it has imported its modules (seconds: from a background thread)."""
        from .policy import to_json  # policy reads this module's state for /status

        chan, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        proc: subprocess.Popen | None = None
        try:
            with theirs:
                proc = subprocess.Popen(
                    [sys.executable, "-I", str(WORKER), "--template", to_json(rules), str(theirs.fileno())],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=folder,
                    env=env, start_new_session=True, pass_fds=(theirs.fileno(),))
            chan.settimeout(_START_SECONDS)
            hello = _read(chan)
        except (OSError, ValueError) as exc:
            hello = {"ok": False, "error": str(exc)}
        if not isinstance(hello, dict) or not hello.get("ok"):
            log.warning("no worker template; workers start without one: %s",
                        hello.get("error") if isinstance(hello, dict) else "no answer")
            if proc is not None:
                proc.kill()
                proc.wait()
            chan.close()
            return False
        if hello.get("missing"):
            log.info("PRELOAD_MODULES not installed: %s", ", ".join(map(str, hello["missing"])))
        chan.settimeout(_ANSWER_SECONDS)
        with self._lock:
            self._proc, self._chan = proc, chan
        return True

    def fork(self, rules: dict[str, Any], theirs: socket.socket) -> Forked | None:
        """A worker forked with `rules` on the channel end `theirs`; None when it could not be
        (`theirs` may then have reached a child: it must not be given to another worker)."""
        with self._lock:
            if self._chan is None or not self.ready:
                return None
            try:
                data = b"".join(encode({"op": "fork", "policy": rules}))
                sent = socket.send_fds(self._chan, [data], [theirs.fileno()])
                self._chan.sendall(data[sent:])
                reply = _read(self._chan)
            except (OSError, ValueError) as exc:
                log.warning("a worker template stopped answering (%s): it is ended", exc)
                self._end()
                return None
            if not (isinstance(reply, dict) and reply.get("ok") and isinstance(reply.get("pid"), int)):
                log.warning("a worker template could not fork: %.200s", reply.get("error") if isinstance(
                    reply, dict) else reply)
                return None
            try:
                worker = Forked(self, reply["pid"])
            except OSError:  # out of descriptors here, or it is gone already
                return None
            self.children.add(worker)
            return worker

    def reap(self, pid: int) -> bool:
        """Collect its ended child `pid`; True once it is collected, or can no longer be by it."""
        with self._lock:
            if self._chan is None:
                return True  # it is gone: init collects its orphans
            try:
                self._chan.sendall(encode({"op": "reap", "pid": pid})[0])
                reply = _read(self._chan)
            except (OSError, ValueError):
                self._end()
                return True
            return not isinstance(reply, dict) or reply.get("reaped") is not False

    def stop(self) -> None:
        with self._lock:
            self._end()

    def _end(self) -> None:
        """(lock held) Its workers live on: they watch the host, not their parent, and the host
        signals them by pidfd."""
        if self._chan is not None:
            self._chan.close()
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
        self._proc, self._chan = None, None


class Templates:
    """A template per group of people whose code workers run, at most WORKER_TEMPLATES; a
    template none of whose workers is alive makes way for another group, least recently used
    first. Started in the background: until a group's template is ready, its workers start cold."""

    def __init__(self) -> None:
        self._ready: OrderedDict[str, Template] = OrderedDict()
        self._starting: set[str] = set()
        self._failed: dict[str, float] = {}
        self._lock = threading.Lock()

    def get(self, group: str | None, start: Callable[[], tuple[dict[str, Any], dict[str, str], str]]
            ) -> Template | None:
        """`group`'s template when it is ready; otherwise None, and it is started in the
        background if there is room (`start` gives its rules, environment and folder)."""
        from ..config import get_settings

        limit = get_settings().worker_templates
        if group is None or limit < 1:
            return None
        with self._lock:
            template = self._ready.get(group)
            if template is not None and template.ready:
                self._ready.move_to_end(group)
                return template
            self._want(group, limit, start)
            return None

    def _want(self, group: str, limit: int, start: Callable) -> None:
        """(lock held) Start `group`'s template in the background if there is room."""
        if group in self._starting or time.monotonic() - self._failed.get(group, -_RETRY_SECONDS) < _RETRY_SECONDS:
            return
        for name in [n for n, t in self._ready.items() if not t.ready]:
            del self._ready[name]
        while len(self._ready) + len(self._starting) >= limit:
            idle = next((n for n, t in self._ready.items() if not any(w.poll() is None for w in list(t.children))),
                        None)
            if idle is None:
                return  # every template has live workers: this group's start cold
            self._ready.pop(idle).stop()
        self._starting.add(group)
        threading.Thread(target=self._start, args=(group, start), name="o16n-template", daemon=True).start()

    def _start(self, group: str, start: Callable) -> None:
        template = Template()
        ok = False
        try:
            ok = template.start(*start())
        finally:
            with self._lock:
                self._starting.discard(group)
                if ok:
                    self._ready[group] = template
                    self._failed.pop(group, None)
                else:
                    self._failed[group] = time.monotonic()

    def state(self) -> dict[str, int]:
        """For /status."""
        with self._lock:
            return {"ready": sum(t.ready for t in self._ready.values()), "starting": len(self._starting)}

    def stop_all(self) -> None:
        with self._lock:
            templates = list(self._ready.values())
            self._ready.clear()
        for t in templates:
            t.stop()


def _read(chan: socket.socket) -> Any:
    head = _exactly(chan, HEADER.size)
    size, blob = HEADER.unpack(head)
    if size > 2**16 or blob:
        raise ValueError("an oversized answer")
    return decode(_exactly(chan, size), reply=True)


def _exactly(chan: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = chan.recv(n - len(buf))
        if not chunk:
            raise OSError("the template closed its channel")
        buf += chunk
    return buf


templates = Templates()
